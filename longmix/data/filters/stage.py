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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.config import Recipe
from longmix.data.documents import write_table
from longmix.data.filters.evaluate import Models, evaluate, with_columns
from longmix.data.filters.fasttext_models import check_model
from longmix.data.filters.settings import FilterConfig
from longmix.errors import UserError
from longmix.pipeline.runner import StageContext
from longmix.pipeline.stats import Counts
from longmix.pipeline.tasks import Task

STAGE = "filter"
DROPPED_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("n_chars", pa.int32()),
                            ("reason", pa.string()), ("value", pa.float64())])


def resolved_config(recipe: Recipe) -> FilterConfig:
    """The recipe's filter settings with model paths made absolute (workers may run elsewhere)."""
    cfg = recipe.stages.filter
    q, lid = cfg.quality, cfg.langid
    return cfg.model_copy(update={
        "quality": q.model_copy(update={"model": str(recipe.resolve(q.model)) if q.model else None}),
        "langid": lid.model_copy(update={"model": str(recipe.resolve(lid.model)) if lid.model else None}),
    })


def check_recipe(recipe: Recipe) -> None:
    """Fail fast, before any stage runs: unknown source names, missing or non-fastText model files."""
    cfg = resolved_config(recipe)
    names = {s.name for s in recipe.sources}
    for where, listed in (("per_source", list(cfg.per_source)), ("quality.sources", cfg.quality.sources or []),
                          ("langid.sources", cfg.langid.sources or [])):
        unknown = sorted(set(listed) - names)
        if unknown:
            raise UserError(f"stages.filter.{where}: unknown source {', '.join(unknown)}; "
                            f"the recipe's sources are {', '.join(sorted(names))}")
    if cfg.quality.model:
        check_model(Path(cfg.quality.model), "quality")
    if cfg.langid.model:
        check_model(Path(cfg.langid.model), "language-ID")


def model_fingerprints(recipe: Recipe) -> list[dict[str, Any]]:
    """Identity of the model files (path, size, mtime) for the settings hash: a new model reruns the stage."""
    check_recipe(recipe)
    cfg = resolved_config(recipe)
    out = []
    for path in (cfg.quality.model, cfg.langid.model):
        if path:
            st = Path(path).stat()
            out.append({"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def source_params(recipe: Recipe) -> dict[str, dict[str, Any]]:
    cfg = recipe.stages.filter
    return {s.name: cfg.heuristics_for(s.name).model_dump() for s in recipe.sources}


def _text_bytes(batch: pa.RecordBatch) -> np.ndarray:
    return pc.binary_length(batch.column("text").cast(pa.large_binary())).to_numpy()


def filter_task(*, in_path: str, out_dir: str, rel_path: str, dropped_path: str, cfg: dict[str, Any],
                params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Input shard -> kept documents at `rel_path` under out_dir (not written when none survive)."""
    config = FilterConfig.model_validate(cfg)
    models = Models.load(config)
    counts = Counts()
    kept: list[pa.RecordBatch] = []
    dropped: list[pa.Table] = []
    started = time.perf_counter()
    for batch in pq.ParquetFile(in_path).iter_batches(batch_size=config.batch_docs):
        v = evaluate(batch, config, params, models)
        sources = batch.column("source").to_pylist()
        for src, nbytes, reason in zip(sources, _text_bytes(batch).tolist(), v.reason.tolist(), strict=True):
            counts.saw(src, nbytes)
            if reason is None:
                counts.keep(src, nbytes)
            else:
                counts.drop(src, reason)
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
        size = write_table(Path(out_dir) / rel_path, table)
        outputs.append({"path": rel_path, "rows": table.num_rows, "bytes": size})
    if dropped:
        write_table(Path(dropped_path), pa.concat_tables(dropped))
        dropped_files.append(str(Path(dropped_path).relative_to(out_dir)))
    return counts.to_dict(outputs=outputs, quarantine_files=[], dropped_files=dropped_files,
                          filter_seconds=round(time.perf_counter() - started, 3))


def _tasks(stage_dir: Path, upstream: dict[str, Any], upstream_dir: Path, recipe: Recipe, fn: str,
           prefix: str, markers: bool) -> list[Task]:
    cfg = resolved_config(recipe).model_dump()
    params = source_params(recipe)
    tasks = []
    for i, out in enumerate(upstream["outputs"]):
        kwargs: dict[str, Any] = {"in_path": str(upstream_dir / out["path"]), "cfg": cfg, "params": params}
        if markers:
            kwargs.update(out_dir=str(stage_dir), rel_path=out["path"],
                          dropped_path=str(stage_dir / "dropped" / f"{i:05d}.parquet"))
        tasks.append(Task(f"{prefix}-{i:05d}", fn, kwargs,
                          marker=str(stage_dir / "_tasks" / f"{prefix}-{i:05d}.json") if markers else ""))
    return tasks


def run(ctx: StageContext, upstream: dict[str, Any], upstream_dir: Path, settings: str,
        recipe: Recipe) -> dict[str, Any]:
    done = ctx.finished_report(STAGE, settings)
    if done is not None:
        return done
    started = time.time()
    stage_dir = ctx.stage_dir(STAGE)
    tasks = _tasks(stage_dir, upstream, upstream_dir, recipe, "longmix.data.filters.stage:filter_task",
                   "filter", markers=True)
    stats = ctx.run_tasks(STAGE, tasks, "filters")
    cfg = recipe.stages.filter
    return ctx.write_report(
        STAGE, stats, started, settings_hash=settings,
        dropped_files=[f for s in stats for f in s.get("dropped_files", [])],
        task_seconds=round(sum(s.get("filter_seconds", 0.0) for s in stats), 3),
        models={"quality": cfg.quality.model, "quality_threshold": cfg.quality.threshold,
                "langid": cfg.langid.model, "allowed": cfg.langid.allowed, "min_score": cfg.langid.min_score},
        scoring={"chunk_chars": cfg.chunk_chars, "max_chunks": cfg.max_chunks})
