"""The `filter` stage: per shard, measure every document, drop the ones a filter trips (with that
filter's name as the reason), and write the survivors with added columns at the same relative path.

Outputs: `<output>/filter/<same path as the input shard>` (input columns + `quality`, and `lang`,
`lang_score` with a language-ID model), `dropped/<shard>.parquet` (id, source, n_chars, reason, value:
what the filter measured), and `report.json` (counts by reason, per source, reconciled).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longmix.data.filters import dry_run
from longmix.data.filters.evaluate import Models, evaluate, with_columns
from longmix.data.filters.fasttext_models import check_loads
from longmix.data.filters.recipe_view import (
    check_recipe,
    model_fingerprints,
    resolved_config,
    source_params,
    text_bytes,
)
from longmix.data.filters.settings import FilterConfig
from longmix.data.recipe import Recipe
from longmix.formats.documents import write_table
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts

DROPPED_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("n_chars", pa.int32()),
                            ("reason", pa.string()), ("value", pa.float64())])


def filter_task(*, in_path: str, out_dir: str, rel_path: str, dropped_path: str, cfg: dict[str, Any],
                params: dict[str, dict[str, Any]], compression: str = "zstd") -> dict[str, Any]:
    """Input shard -> kept documents at `rel_path` under out_dir (not written when none survive)."""
    config = FilterConfig.model_validate(cfg)
    models = Models.load(config)
    counts = Counts()
    kept: list[pa.RecordBatch] = []
    dropped: list[pa.Table] = []
    started = time.perf_counter()
    for batch in pq.ParquetFile(in_path).iter_batches(batch_size=config.batch_docs):
        v = evaluate(batch, config, params, models)
        counts.add(batch.column("source").to_pylist(), text_bytes(batch), v.reason)
        keep = v.kept
        kept.append(with_columns(batch, v).filter(pa.array(keep)))
        gone = ~keep
        if gone.any():
            mask = pa.array(gone)
            dropped.append(pa.table({
                "id": batch.column("id").filter(mask), "source": batch.column("source").filter(mask),
                "n_chars": batch.column("n_chars").filter(mask),
                "reason": pa.array(v.reason[gone].tolist(), pa.string()),
                "value": pa.array(v.value[gone], pa.float64()),
            }, schema=DROPPED_SCHEMA))
    outputs, dropped_files = [], []
    table = pa.Table.from_batches(kept) if kept else None
    if table is not None and table.num_rows:
        size = write_table(Path(out_dir) / rel_path, table, compression)
        outputs.append({"path": rel_path, "rows": table.num_rows, "bytes": size})
    if dropped:
        write_table(Path(dropped_path), pa.concat_tables(dropped))
        dropped_files.append(str(Path(dropped_path).relative_to(out_dir)))
    return counts.to_dict(outputs=outputs, quarantine_files=[], dropped_files=dropped_files,
                          filter_seconds=round(time.perf_counter() - started, 3))


class Filter(Stage):
    """Heuristics, fastText quality and language ID, per shard; survivors keep their relative path."""

    name = "filter"
    label = "filters"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.filter.enabled

    def check(self, recipe: Recipe, plan: None) -> None:
        check_recipe(recipe)  # a bad model path fails now, not after dedup
        cfg = resolved_config(recipe)
        for model, what in ((cfg.quality.model, "quality"), (cfg.langid.model, "language-ID")):
            if model:
                check_loads(Path(model), what)  # so does a truncated one

    def settings(self, recipe: Recipe, plan: None) -> list[Any]:
        return [recipe.stages.filter, model_fingerprints(recipe)]

    def run(self, job: StageJob) -> dict[str, Any]:
        recipe = job.recipe
        cfg_dump, params = resolved_config(recipe).model_dump(), source_params(recipe)
        stats = job.map_shards("filter", filter_task,
                               per_shard=lambda i, _: {"dropped_path": job.path("dropped", f"{i:05d}.parquet")},
                               cfg=cfg_dump, params=params, compression=recipe.documents.compression)
        cfg = recipe.stages.filter
        return {
            "dropped_files": [f for s in stats for f in s.get("dropped_files", [])],
            "task_seconds": round(sum(s.get("filter_seconds", 0.0) for s in stats), 3),
            "models": {"quality": cfg.quality.model, "quality_threshold": cfg.quality.threshold,
                       "langid": cfg.langid.model, "allowed": cfg.langid.allowed, "min_score": cfg.langid.min_score},
            "scoring": {"chunk_chars": cfg.chunk_chars, "max_chunks": cfg.max_chunks}}

    def preview(self, job: StageJob) -> dict[str, Any]:
        return dry_run.report_only(job)
