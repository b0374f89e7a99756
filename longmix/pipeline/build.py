"""`longmix build`: run a data recipe's stages in flow order, resuming whatever finished before."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from longmix.config import Recipe
from longmix.data import exact_dedup, ingest, near_dedup
from longmix.errors import UserError
from longmix.pipeline.executors import make_executor
from longmix.pipeline.runner import StageContext

log = logging.getLogger("longmix")

STAGES = ["ingest", "exact_dedup", "near_dedup"]


def build(recipe: Recipe, until: str | None = None, executor: str | None = None, workers: int | None = None,
          progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Returns the report of every stage that ran (or had finished before), in flow order."""
    if until is not None and until not in STAGES:
        raise UserError(f"unknown stage '{until}' for --until: choose from {', '.join(STAGES)}")
    kind = executor or recipe.executor.kind
    n_workers = workers or recipe.executor.workers
    ex = make_executor(kind, n_workers, recipe.executor.ray_address)
    ctx = StageContext(recipe.output_dir, ex, recipe.seed, progress)
    reports: dict[str, dict[str, Any]] = {}
    try:
        report = ingest.run(ctx, recipe)
        reports["ingest"] = report
        settings, up_dir = report["settings_hash"], ctx.stage_dir("ingest")
        if until == "ingest":
            return reports
        if recipe.stages.exact_dedup.enabled:
            settings = recipe.stage_hash(settings, recipe.stages.exact_dedup)
            report = exact_dedup.run(ctx, report, up_dir, settings)
            reports["exact_dedup"], up_dir = report, ctx.stage_dir("exact_dedup")
        if until == "exact_dedup":
            return reports
        if recipe.stages.near_dedup.enabled:
            settings = recipe.stage_hash(settings, recipe.stages.near_dedup, recipe.seed,
                                         [s.name for s in recipe.sources])
            report = near_dedup.run(ctx, report, up_dir, settings, recipe.stages.near_dedup,
                                    [s.name for s in recipe.sources])
            reports["near_dedup"] = report
        return reports
    finally:
        ex.close()


def final_documents(output: Path, reports: dict[str, dict[str, Any]]) -> list[Path]:
    """The document shards the last stage that ran left, in order."""
    stage = list(reports)[-1]
    return [output / stage / o["path"] for o in reports[stage]["outputs"]]
