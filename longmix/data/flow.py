"""`longmix build`: the data flow, declared once, run by the engine (pipeline/runner.py).

Adding a stage: one Stage class in its capability's folder, one settings field in `StagesConfig`
(data/recipe.py) and one entry here."""

from __future__ import annotations

from typing import Any

from longmix.core.errors import UserError
from longmix.core.folder_lock import folder_lock
from longmix.data.dedup.stage import ExactDedup, NearDedup
from longmix.data.filters.stage import Filter
from longmix.data.ingest.stage import Ingest
from longmix.data.longdep.stage import Longdep
from longmix.data.mix.stage import Mix
from longmix.data.pack.stage import Pack
from longmix.data.recipe import Recipe
from longmix.data.sample.stage import Sample
from longmix.data.tokenize.stage import Tokenize
from longmix.pipeline.executors import Executor, RayExecutor, open_executor
from longmix.pipeline.runner import StageContext, check_flow, run_flow
from longmix.pipeline.stage import Stage

FLOW: tuple[Stage, ...] = (Ingest(), Sample(), ExactDedup(), NearDedup(), Filter(), Tokenize(), Longdep(), Mix(),
                           Pack())
STAGES = [s.name for s in FLOW]


def build(recipe: Recipe, until: str | None = None, executor: str | None = None, workers: int | None = None,
          progress: bool | None = None, report_only: bool = False,
          ray_address: str | None = None, started: Executor | None = None) -> dict[str, dict[str, Any]]:
    """Returns the report of every stage that ran (or had finished before), in flow order.

    report_only: run up to the filter stage, then only report what the filters would drop.
    started: an executor the caller opened already (the CLI starts the workers before it imports this
    module, so they load their libraries meanwhile) and closes; otherwise build opens and closes its own."""
    if report_only and (until != "filter" or not recipe.stages.filter.enabled):
        raise UserError("--report-only needs --until filter and 'stages.filter.enabled: true' in the recipe")
    # Every stage prepared (once for the run) and checked before an executor (or Ray) starts.
    active = check_flow(FLOW, recipe, until, recipe.recipe_file)
    folder = recipe.output_folder
    if not report_only:
        folder.check_writable()  # a store's missing bucket or a denied write: one line now, not after a stage

    def run(ex: Executor) -> dict[str, dict[str, Any]]:
        for p in active if isinstance(ex, RayExecutor) else []:  # every stage's tasks fit some node
            ex.check_fits(p.stage.resources(recipe))
        with folder_lock(recipe.output_dir, "build"):
            return run_flow(FLOW, recipe, StageContext(folder, ex, progress), until,
                            preview=report_only, where=recipe.recipe_file, prepared=active)

    if started is not None:
        return run(started)
    with open_executor(executor or recipe.executor.kind, workers or recipe.executor.workers,
                       ray_address or recipe.executor.ray_address) as ex:
        return run(ex)
