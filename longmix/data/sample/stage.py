"""Sample stage: keep a seeded share of each source's documents, for quick runs of a recipe on a subset.

A document is kept when a hash of (seed, its content hash) falls below its source's fraction, so the choice
depends on the document alone: not on shards, workers or order, and a larger fraction keeps a superset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.core.errors import UserError
from longmix.data.recipe import Recipe
from longmix.formats.documents import write_table
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts


def uniform(content_hashes: list[str], seed: int) -> np.ndarray:
    """One number in [0, 1) per document, from its content hash and the seed (splitmix64)."""
    x = np.array([int(h[:16], 16) for h in content_hashes], dtype=np.uint64) ^ np.uint64(seed & (2**64 - 1))
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_task(*, in_path: str, out_dir: str, rel_path: str, fractions: dict[str, float],
                seed: int, compression: str = "zstd") -> dict[str, Any]:
    """Input shard -> the kept documents at `rel_path` under out_dir (not written when none are kept)."""
    table = pq.read_table(in_path)
    sources = table.column("source").to_pylist()
    keep = uniform(table.column("content_hash").to_pylist(), seed) < np.array([fractions[s] for s in sources])
    nbytes = pc.binary_length(table.column("text").cast(pa.large_binary())).to_numpy()
    counts = Counts()
    counts.add(sources, nbytes, np.where(keep, None, "sampled_out"))
    outputs = []
    if keep.any():
        kept_rows = table.filter(pa.array(keep))
        size = write_table(Path(out_dir) / rel_path, kept_rows, compression)
        outputs.append({"path": rel_path, "rows": kept_rows.num_rows, "bytes": size})
    return counts.to_dict(outputs=outputs, quarantine_files=[])


class Sample(Stage):
    name = "sample"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.sample.enabled

    def check(self, recipe: Recipe, plan: None) -> None:
        unknown = sorted(set(recipe.stages.sample.per_source) - set(recipe.source_names))
        if unknown:
            raise UserError(f"stages.sample.per_source: unknown source {', '.join(unknown)}; "
                            f"the recipe's sources are {', '.join(recipe.source_names)}")
        bad = {k: v for k, v in recipe.stages.sample.per_source.items() if not 0 < v <= 1}
        if bad:
            raise UserError(f"stages.sample.per_source: fractions must be in (0, 1], got {bad}")

    def settings(self, recipe: Recipe, plan: None) -> list[Any]:
        return [recipe.stages.sample, recipe.seed]

    def run(self, job: StageJob) -> dict[str, Any]:
        cfg = job.recipe.stages.sample
        fractions = {s: cfg.per_source.get(s, cfg.fraction) for s in job.recipe.source_names}
        job.map_shards("sample", sample_task, fractions=fractions, seed=job.recipe.seed,
                       compression=job.recipe.documents.compression)
        return {"fractions": fractions}
