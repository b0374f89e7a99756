"""`longmix build`: run a data recipe's stages in flow order, resuming whatever finished before."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from longmix.config import Recipe
from longmix.data import exact_dedup, ingest, mix_stage, near_dedup, pack_stage, tokenize_stage
from longmix.data.filters import dry_run as filter_dry_run
from longmix.data.filters import stage as filter_stage
from longmix.data.packed_shards import sha256_file
from longmix.errors import UserError
from longmix.pipeline.executors import make_executor
from longmix.pipeline.runner import StageContext

log = logging.getLogger("longmix")

STAGES = ["ingest", "exact_dedup", "near_dedup", "filter", "tokenize", "mix", "pack"]


def build(recipe: Recipe, until: str | None = None, executor: str | None = None, workers: int | None = None,
          progress: bool | None = None, report_only: bool = False) -> dict[str, dict[str, Any]]:
    """Returns the report of every stage that ran (or had finished before), in flow order.

    report_only: run up to the filter stage, then only report what the filters would drop."""
    if until is not None and until not in STAGES:
        raise UserError(f"unknown stage '{until}' for --until: choose from {', '.join(STAGES)}")
    if report_only and (until != "filter" or not recipe.stages.filter.enabled):
        raise UserError("--report-only needs --until filter and 'stages.filter.enabled: true' in the recipe")
    if recipe.stages.filter.enabled and until not in ("ingest", "exact_dedup", "near_dedup"):
        filter_stage.check_recipe(recipe)  # a bad model path fails now, not after dedup
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
            reports["near_dedup"], up_dir = report, ctx.stage_dir("near_dedup")
        if until == "near_dedup":
            return reports
        if recipe.stages.filter.enabled:
            settings = recipe.stage_hash(settings, recipe.stages.filter, filter_stage.model_fingerprints(recipe))
            if report_only:
                reports["filter"] = filter_dry_run.report_only(ctx, report, up_dir, recipe)
                return reports
            report = filter_stage.run(ctx, report, up_dir, settings, recipe)
            reports["filter"], up_dir = report, ctx.stage_dir("filter")
        if until == "filter" or recipe.tokenizer is None:
            return reports
        _mix_stages(ctx, recipe, reports, report, up_dir, settings, until)
        return reports
    finally:
        ex.close()


def _mix_stages(ctx: StageContext, recipe: Recipe, reports: dict[str, dict[str, Any]], report: dict[str, Any],
                up_dir: Path, settings: str, until: str | None) -> None:
    """tokenize -> mix -> pack, after the document stages."""
    tok = tokenize_stage.tokenizer_ids(recipe)  # resolved ids: a changed tokenizer_config.json reruns tokenize
    settings = recipe.stage_hash(settings, recipe.tokenizer, sha256_file(tok.path), tok.bos_id, tok.eos_id,
                                 tok.pad_id, recipe.stages.tokenize)
    tok_report = tokenize_stage.run(ctx, report, up_dir, settings, recipe)
    reports["tokenize"] = tok_report
    if until == "tokenize":
        return
    mix_stage.mix_params(recipe)  # a bad mix fails before anything is written
    settings = recipe.stage_hash(settings, recipe.stages.mix, recipe.seq_len, recipe.seed)
    reports["mix"] = mix_stage.run(ctx, tok_report, ctx.stage_dir("tokenize"), settings, recipe)
    if until == "mix":
        return
    settings = recipe.stage_hash(settings, recipe.stages.pack)
    reports["pack"] = pack_stage.run(ctx, reports["mix"], tok_report, ctx.stage_dir("tokenize"), settings, recipe,
                                     reports["ingest"]["inputs"])
