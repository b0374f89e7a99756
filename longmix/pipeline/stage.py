"""The Stage interface: what every step of a flow provides, and the job the runner hands it.

A stage says whether the recipe enables it, prepares once per run what it derives from the recipe (`prepare`:
its plan, shared by `check`, `settings` and `run`), checks the recipe before any stage runs (fail fast), names
the settings that enter its hash, and does its work in `run`: it maps a function over its upstream's shards
(`job.map_shards`) or builds tasks with `job.task(...)` and runs them with `job.run_tasks(...)` (as often as its
steps need, with global work in between), and returns the extras its report adds to the merged task counts.
It reads other stages' outputs only through the job: its upstream, and the stages it names in `requires`.
The runner owns everything else: the prologue (reuse a finished stage, claim its folder), the settings-hash
chain, timing, reconciliation and the report (see runner.py, report.py).
The engine knows no stage; a flow is a list of stages (longmix/data/flow.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from longmix.pipeline.folder import FolderPath
from longmix.pipeline.report import StageReport
from longmix.pipeline.tasks import Task, TaskFn

if TYPE_CHECKING:
    from longmix.pipeline.runner import StageContext


@dataclass(frozen=True)
class StageOutput:
    """A finished stage as later stages see it: its report, its folder, the plan it was prepared with in this
    run, and the report extras it declares for later stages (`Stage.exports`)."""

    name: str
    report: StageReport
    dir: Path
    plan: Any = None
    exports: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        """Its output files (the report's `outputs`), in order."""
        return [self.dir / o["path"] for o in self.report.outputs]

    def inputs(self) -> list[tuple[Path, str]]:
        """Its outputs as (absolute path, path relative to its folder), for stages that keep the layout."""
        return [(self.dir / o["path"], o["path"]) for o in self.report.outputs]

    def sizes(self) -> list[int]:
        """Bytes of each output, as recorded (0 where not): the cost hint of the tasks that read them."""
        return [int(o.get("bytes", 0)) for o in self.report.outputs]

    def export(self, key: str) -> Any:
        """A report extra the stage declares for later stages; one it does not declare is refused (a bug)."""
        if key not in self.exports:
            raise RuntimeError(f"stage {self.name} does not export {key!r} (it exports: "
                               f"{', '.join(self.exports) or 'nothing'})")
        return self.report.extra(key)


class StageJob:
    """One run of one stage: its folder, its settings hash, the outputs it may read, and task helpers."""

    def __init__(self, ctx: StageContext, stage: Stage, recipe: Any, settings_hash: str,
                 upstream: StageOutput | None, plan: Any = None) -> None:
        self.ctx, self.stage, self.recipe, self.settings_hash = ctx, stage, recipe, settings_hash
        self.plan = plan  # what stage.prepare(recipe) returned for this run
        self._upstream = upstream
        self.dir = ctx.stage_dir(stage.name)
        self.task_stats: list[dict[str, Any]] = []
        self.own_counts: dict[str, Any] | None = None

    @property
    def upstream(self) -> StageOutput:
        """The output of the enabled stage just before this one."""
        if self._upstream is None:
            raise RuntimeError(f"stage {self.stage.name} has no upstream stage")
        return self._upstream

    def output_of(self, name: str) -> StageOutput:
        """The output of a named earlier stage of this run; only a stage the stage `requires` (a bug otherwise)."""
        if name not in self.stage.requires:
            raise RuntimeError(f"stage {self.stage.name} reads stage {name} without declaring it: add it to "
                               f"{type(self.stage).__name__}.requires")
        return self.ctx.output_of(name)

    def set_counts(self, counts: dict[str, Any]) -> None:
        """The counts (and `outputs`) of a stage without counted tasks, in the shape a task's stats have."""
        if self.task_stats:
            raise RuntimeError(f"stage {self.stage.name}: counts come from its tasks or from set_counts, not both")
        self.own_counts = counts

    def path(self, *parts: str) -> FolderPath:
        """A file (or folder) of this stage's folder that a task writes, as a task argument: resolved on the
        node that runs the task (a store's cache lies elsewhere on each node). No parts: the folder itself."""
        return FolderPath("/".join((self.stage.name, *parts)))

    def reads(self, path: Path | str) -> FolderPath:
        """A file of the output folder (an earlier stage's output, or a file this stage's driver wrote) that a
        task reads, as a task argument: the node that runs the task pulls it from a store when it lacks it."""
        return FolderPath.of(path, self.ctx.output, read=True)

    def task(self, task_id: str, fn: TaskFn, cost: int = 0, **kwargs: Any) -> Task:
        """A resumable task of this stage: its completion marker is `_tasks/<task_id>.json`; `cost` (e.g. its
        input bytes) lets executors start the biggest tasks first. Paths of the output folder in kwargs are
        FolderPaths (`job.path`, `job.reads`), never strings, so they resolve and pull on any node."""
        return Task(task_id, fn, kwargs, marker=self.path("_tasks", f"{task_id}.json"), cost=cost)

    def run_tasks(self, tasks: list[Task], label: str | None = None, counted: bool = True) -> list[dict[str, Any]]:
        """Run tasks (resuming); counted tasks' stats (in/kept/dropped/quarantined, outputs) make the stage
        report's counts, so a stage's auxiliary steps (near dedup's signatures) pass counted=False."""
        stats = self.ctx.run_tasks(self.stage.name, tasks, label or self.stage.label,
                                   self.stage.resources(self.recipe))
        if counted:
            if self.own_counts is not None:
                raise RuntimeError(f"stage {self.stage.name}: counts come from its tasks or from set_counts, "
                                   "not both")
            self.task_stats = stats
        return stats

    def map_shards(self, prefix: str, fn: TaskFn, *, rel_path: Callable[[str], str] | None = None,
                   per_shard: Callable[[int, str], dict[str, Any]] | None = None, label: str | None = None,
                   counted: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
        """One task per upstream output shard, run (resuming), their stats returned in shard order.

        Task `<prefix>-<index:05d>` calls fn(in_path=<the shard>, out_dir=<this stage's folder>,
        rel_path=<the shard's path in its folder, through `rel_path`>, **per_shard(index, rel), **kwargs);
        its cost hint is the shard's bytes. The shard is a declared input (`job.reads`), so is any input
        per_shard names; the function receives plain str paths."""
        up = self.upstream
        tasks = []
        for i, ((path, rel), size) in enumerate(zip(up.inputs(), up.sizes(), strict=True)):
            args = {"in_path": self.reads(path), "out_dir": self.path(), "rel_path": rel_path(rel) if rel_path else rel,
                    **(per_shard(i, rel) if per_shard else {}), **kwargs}
            tasks.append(self.task(f"{prefix}-{i:05d}", fn, cost=size, **args))
        return self.run_tasks(tasks, label, counted)


class Stage:
    """Base of every stage; subclasses set `name` and implement `settings` and `run`."""

    name: ClassVar[str]
    label: ClassVar[str] = ""  # progress-bar label; default: the name
    # Earlier stages whose outputs this one reads by name (job.output_of); its upstream needs no entry.
    requires: ClassVar[tuple[str, ...]] = ()
    # The extras of its report that later stages may read (StageOutput.export); the rest are for people.
    exports: ClassVar[tuple[str, ...]] = ()
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

    def prepare(self, recipe: Any) -> Any:
        """What the stage derives from the recipe (resolved files, parameters), computed once per run by the
        runner and passed to `check`, `settings` and `run` (`job.plan`); may raise a UserError. Default: None."""
        return None

    def check(self, recipe: Any, plan: Any) -> None:
        """Raise a UserError for a recipe this stage cannot run; called for every stage before any runs."""

    def settings(self, recipe: Any, plan: Any) -> list[Any]:
        """What enters this stage's settings hash (chained after its upstream's): change any, rerun it."""
        raise NotImplementedError

    def run(self, job: StageJob) -> dict[str, Any]:
        """Do the work; return the report's extras (keys the engine does not own). A stage without counted
        tasks gives its counts with `job.set_counts`."""
        raise NotImplementedError

    def check_output(self, recipe: Any, report: StageReport) -> None:
        """Raise a UserError when a finished stage's report shows the recipe cannot go on (its report is
        written first, so the reason is on disk and printed)."""

    def summary(self, report: StageReport) -> list[str]:
        """Lines `longmix build` prints under the stage table: plain text (the CLI adds any styling)."""
        return []

    def warnings(self, report: StageReport) -> list[str]:
        """Lines of `summary` that are warnings, which the CLI shows as such (plain text)."""
        return []

    def preview(self, job: StageJob) -> dict[str, Any]:
        """Report what the stage would do without writing anything (only some stages offer it)."""
        raise NotImplementedError(f"stage {self.name} has no preview")
