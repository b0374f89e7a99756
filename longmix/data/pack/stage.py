"""Pack stage: the mix plan's documents, in a seeded order, packed into rows of exactly seq_len tokens,
globally shuffled into Arrow shards, plus `manifest.json` at the top of the output folder.

Tokenized shards are memory-mapped; only the documents of one batch are gathered at a time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from longmix.data.mix.plan import sample_order
from longmix.data.pack.packing import PackStats, TokenBatch, pack
from longmix.data.recipe import Recipe
from longmix.formats.ipc import read_ipc
from longmix.formats.manifest import Manifest, make_lineage, shard_entries, tokenizer_entry, totals_from, write_manifest
from longmix.formats.packed_shards import shuffle_shards, write_shards
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob

MANIFEST = "manifest.json"


def _doc_batches(files: list[Path], sources: np.ndarray, order: np.ndarray, batch_docs: int) -> Iterator[TokenBatch]:
    per_file = [read_ipc(f, ["input_ids"]).column(0).combine_chunks() for f in files]
    offsets = [a.offsets.to_numpy().astype(np.int64) for a in per_file]
    values = [a.values.to_numpy() for a in per_file]
    starts = np.concatenate([[0], np.cumsum([len(o) - 1 for o in offsets])])
    for lo in range(0, len(order), batch_docs):
        idx = order[lo: lo + batch_docs]
        fidx = np.searchsorted(starts, idx, side="right") - 1
        local = idx - starts[fidx]
        views = [values[f][offsets[f][r]: offsets[f][r + 1]] for f, r in zip(fidx.tolist(), local.tolist(),
                                                                               strict=True)]
        yield TokenBatch.from_arrays(views, sources[idx])


class Pack(Stage):
    """The plan's documents packed into rows of exactly seq_len tokens, shuffled into shards, + the manifest."""

    name = "pack"
    # ingest: the inputs' fingerprints (lineage); tokenize: the token ids and the resolved tokenizer; mix: the plan
    requires = ("ingest", "tokenize", "mix")

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.tokenizer is not None and recipe.stages.mix.enabled  # pack follows the mix's plan

    def settings(self, recipe: Recipe, plan: None) -> list[Any]:
        return [recipe.stages.pack]

    def run(self, job: StageJob) -> dict[str, Any]:
        recipe, stage_dir = job.recipe, job.dir
        cfg, seq_len, names = recipe.stages.pack, int(recipe.seq_len or 0), recipe.source_names
        mix, tokenized = job.output_of("mix"), job.output_of("tokenize")
        (plan_path,) = mix.files()  # the mix's one output: its plan
        plan = read_ipc(plan_path)
        counts = plan.column("count").to_numpy()
        sources = plan.column("source").to_numpy()
        order = sample_order(counts, recipe.seed)
        tok = tokenized.plan.ids  # resolved once for the run (Tokenize.prepare)
        files = tokenized.files()

        stats = PackStats(strategy=cfg.strategy, seq_len=seq_len)
        # Tokenize already ended every document with EOS when the recipe asks for it; pack adds none.
        rows = pack(_doc_batches(files, sources, order, cfg.batch_docs), seq_len, cfg.strategy, pad_id=tok.pad_id,
                    window=cfg.window, stats=stats)
        staging = stage_dir / "unshuffled"
        shutil.rmtree(staging, ignore_errors=True)
        written = write_shards(rows, staging, seq_len, cfg.rows_per_shard, prefix="part")
        shutil.rmtree(stage_dir / "shards", ignore_errors=True)
        shards = shuffle_shards([i.path for i in written], stage_dir / "shards", seq_len, cfg.rows_per_shard,
                                recipe.seed)
        shutil.rmtree(staging)

        manifest_path = recipe.output_dir / MANIFEST
        ingest_inputs = job.output_of("ingest").export("inputs")
        manifest = Manifest(
            seq_len=seq_len,
            tokenizer=tokenizer_entry(tok.path, manifest_path.parent, tok.bos_token, tok.eos_token, tok.pad_token),
            sources=names,
            shards=shard_entries(shards, manifest_path.parent),
            totals=totals_from(shards, stats.docs_truncated),
            packing=stats.to_dict(),
            mix=mix.export("mix"),
            lineage=make_lineage(recipe.model_dump(mode="json"),
                                 {i["path"]: f"{i['files']} files, {i['bytes']} bytes, mtime_ns {i['mtime_ns']}"
                                  for i in ingest_inputs}, recipe.seed),
        )
        write_manifest(manifest, manifest_path)
        per_source = np.bincount(sources[order].astype(np.int64), minlength=len(names)) if len(order) else \
            np.zeros(len(names), np.int64)
        job.set_counts({
            "in": int(len(order)), "kept": int(len(order)),
            "bytes_out": int(sum(Path(s.path).stat().st_size for s in shards)),
            "sources": {n: {"in": int(c), "kept": int(c), "dropped": 0, "quarantined": 0}
                        for n, c in zip(names, per_source, strict=True)},
            "outputs": [{"path": str(Path(s.path).relative_to(stage_dir)), "rows": s.rows, "tokens": s.tokens}
                        for s in shards]})
        return {"packing": stats.to_dict(), "manifest": str(manifest_path)}

    def summary(self, report: StageReport) -> list[str]:
        p = report.extra("packing")
        return [f"packed {p['rows']:,} sequences of {p['seq_len']:,} tokens ({p['strategy']}, padding "
                f"{p['padding_share']:.2%}); manifest: {report.extra('manifest')}"]
