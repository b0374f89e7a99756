"""The Stage interface: what every step of a flow provides, and the job the runner hands it.

A stage says whether the recipe enables it, checks the recipe before any stage runs (fail fast), names the
settings that enter its hash, and does its work in `run`: it builds tasks with `job.task(...)`, runs them
with `job.run_tasks(...)` (as often as its steps need, with global work in between) and returns what its
report adds to the merged task counts. The runner owns everything else: the prologue (reuse a finished
stage, claim its folder), the settings-hash chain, timing, reconciliation and the report (see runner.py).
The engine knows no stage; a flow is a list of stages (longmix/data/flow.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from longmix.pipeline.tasks import Task, TaskFn

if TYPE_CHECKING:
    from longmix.pipeline.runner import StageContext


@dataclass(frozen=True)
class StageOutput:
    """A finished stage as later stages see it: its report and its folder."""

    name: str
    report: dict[str, Any]
    dir: Path

    def files(self) -> list[Path]:
        """Its output files (the report's `outputs`), in order."""
        return [self.dir / o["path"] for o in self.report["outputs"]]

    def inputs(self) -> list[tuple[Path, str]]:
        """Its outputs as (absolute path, path relative to its folder), for stages that keep the layout."""
        return [(self.dir / o["path"], o["path"]) for o in self.report["outputs"]]

    def sizes(self) -> list[int]:
        """Bytes of each output, as recorded (0 where not): the cost hint of the tasks that read them."""
        return [int(o.get("bytes", 0)) for o in self.report["outputs"]]


class StageJob:
    """One run of one stage: its folder, its settings hash, the outputs it may read, and task helpers."""

    def __init__(self, ctx: StageContext, stage: Stage, recipe: Any, settings_hash: str,
                 upstream: StageOutput | None) -> None:
        self.ctx, self.stage, self.recipe, self.settings_hash = ctx, stage, recipe, settings_hash
        self._upstream = upstream
        self.dir = ctx.stage_dir(stage.name)
        self.task_stats: list[dict[str, Any]] = []

    @property
    def upstream(self) -> StageOutput:
        """The output of the enabled stage just before this one."""
        if self._upstream is None:
            raise RuntimeError(f"stage {self.stage.name} has no upstream stage")
        return self._upstream

    def output_of(self, name: str) -> StageOutput:
        """The output of a named earlier stage of this run."""
        return self.ctx.output_of(name)

    def task(self, task_id: str, fn: TaskFn, cost: int = 0, **kwargs: Any) -> Task:
        """A resumable task of this stage: its completion marker is `_tasks/<task_id>.json`; `cost` (e.g. its
        input bytes) lets executors start the biggest tasks first."""
        return Task(task_id, fn, kwargs, marker=str(self.dir / "_tasks" / f"{task_id}.json"), cost=cost)

    def run_tasks(self, tasks: list[Task], label: str | None = None, counted: bool = True) -> list[dict[str, Any]]:
        """Run tasks (resuming); counted tasks' stats (in/kept/dropped/quarantined, outputs) make the stage
        report's counts, so a stage's auxiliary steps (near dedup's signatures) pass counted=False."""
        stats = self.ctx.run_tasks(self.stage.name, tasks, label or self.stage.label,
                                   self.stage.resources(self.recipe))
        if counted:
            self.task_stats = stats
        return stats


class Stage:
    """Base of every stage; subclasses set `name` and implement `settings` and `run`."""

    name: ClassVar[str]
    label: ClassVar[str] = ""  # progress-bar label; default: the name
    # What one task of this stage needs; the Ray executor schedules with it (recipe: executor.resources).
    task_cpus: ClassVar[float] = 1
    task_memory_gb: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("label"):
            cls.label = getattr(cls, "name", cls.__name__)

    def enabled(self, recipe: Any) -> bool:
        return True

    def resources(self, recipe: Any) -> dict[str, float]:
        """Ray resources of one task: the stage's declaration, or the recipe's `executor.resources.<stage>`."""
        override = getattr(getattr(recipe, "executor", None), "resources", {}).get(self.name)
        cpus = override.cpus if override else self.task_cpus
        memory_gb = override.memory_gb if override else self.task_memory_gb
        return {"num_cpus": cpus, "memory": int(memory_gb * 2**30)}

    def check(self, recipe: Any) -> None:
        """Raise a UserError for a recipe this stage cannot run; called for every stage before any runs."""

    def settings(self, recipe: Any) -> list[Any]:
        """What enters this stage's settings hash (chained after its upstream's): change any, rerun it."""
        raise NotImplementedError

    def run(self, job: StageJob) -> dict[str, Any]:
        """Do the work; return the report's additions to the merged task counts (counts of their own for a
        stage without tasks)."""
        raise NotImplementedError

    def check_output(self, recipe: Any, report: dict[str, Any]) -> None:
        """Raise a UserError when a finished stage's report shows the recipe cannot go on (its report is
        written first, so the reason is on disk and printed)."""

    def summary(self, report: dict[str, Any]) -> list[str]:
        """Lines `longmix build` prints under the stage table (rich markup allowed)."""
        return []

    def preview(self, job: StageJob) -> dict[str, Any]:
        """Report what the stage would do without writing anything (only some stages offer it)."""
        raise NotImplementedError(f"stage {self.name} has no preview")
