"""Runs a flow of stages: checks them all first, then per stage the prologue (reuse a finished stage with the
same settings, else claim its folder), its tasks through an executor (skipping finished ones), and its report.

Stage folder layout: `<output>/<stage>/stage.json` (settings hash, written first),
`_tasks/<task>.json` (completion markers), outputs, and `report.json` (written last = stage done).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from longmix.core.atomic import remove_stale_temps, write_json
from longmix.core.errors import BuildFailed, UserError
from longmix.core.recipe_io import settings_hash
from longmix.pipeline.executors import Executor
from longmix.pipeline.folder import OutputFolder
from longmix.pipeline.progress import task_progress
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob, StageOutput
from longmix.pipeline.stats import check_reconciles, merge
from longmix.pipeline.tasks import Task, read_marker

log = logging.getLogger("longmix")


def damaged_outputs(folder: Path, report: dict[str, Any]) -> list[str]:
    """Outputs of a finished stage that are gone or no longer have their recorded size."""
    bad = []
    for o in report.get("outputs", []):
        path = folder / o["path"]
        if not path.is_file() or ("bytes" in o and path.stat().st_size != o["bytes"]):
            bad.append(o["path"])
    bad += [q for q in report.get("quarantine_files", []) if not (folder / q).is_file()]
    if "manifest" in report and not Path(report["manifest"]).is_file():
        bad.append(report["manifest"])
    return bad


def forget_tasks_of(folder: Path, damaged: list[str]) -> None:
    """Remove the completion markers of the tasks that wrote `damaged`, so a rerun redoes just those."""
    lost = set(damaged)
    for marker in sorted((folder / "_tasks").glob("*.json")):
        stats = json.loads(marker.read_text()).get("stats") or {}
        wrote = {o["path"] for o in stats.get("outputs", [])} | set(stats.get("quarantine_files", []))
        if wrote & lost:
            marker.unlink()


class StageContext:
    """folder: the build's output folder (pipeline/folder.py); `output` is its root on this node (a store's
    local cache when the output is a store URI). The folder's hooks run at fixed points: before a stage's
    folder is reused or resumed, after it is claimed, around its tasks, and after its report is written."""

    def __init__(self, folder: OutputFolder, executor: Executor, progress: bool | None = None) -> None:
        self.folder = folder
        self.output = folder.root
        self.executor = executor
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._outputs: dict[str, StageOutput] = {}

    def stage_dir(self, stage: str) -> Path:
        return self.output / stage

    def output_of(self, stage: str) -> StageOutput:
        if stage not in self._outputs:
            raise RuntimeError(f"stage {stage} has not run in this flow")
        return self._outputs[stage]

    def finished_report(self, stage: str, settings_hash: str) -> dict[str, Any] | None:
        """The report of a finished stage with these settings; claims the folder for a new run otherwise."""
        folder = self.stage_dir(stage)
        meta_path, report_path = folder / "stage.json", folder / "report.json"
        self.folder.sync_stage_before_reuse(stage)
        if meta_path.is_file():
            old = json.loads(meta_path.read_text()).get("settings_hash")
            if old != settings_hash:
                raise UserError(
                    f"'{folder}' holds stage '{stage}' built with other settings or inputs; "
                    f"remove that folder (or everything after it) or choose a new output")
            if report_path.is_file():
                report = json.loads(report_path.read_text())
                damaged = damaged_outputs(folder, report)
                if not damaged:
                    return report
                log.warning("%s: %d output file(s) missing or changed since the stage finished (%s); redoing "
                            "the tasks that wrote them", stage, len(damaged), ", ".join(damaged[:3]))
                forget_tasks_of(folder, damaged)
                report_path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        write_json(meta_path, {"stage": stage, "settings_hash": settings_hash})
        self.folder.publish_claim(stage)
        return None

    def run_tasks(self, stage: str, tasks: list[Task], label: str | None = None,
                  resources: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Run tasks not yet marked done; return every task's stats in task order. resources: what each task
        needs (the stage's declaration), for tasks that declare nothing themselves."""
        if resources:
            tasks = [t if t.resources else replace(t, resources=resources) for t in tasks]
        tasks = [replace(t, folder=self.folder) for t in tasks]
        self.folder.share_driver_files(stage)  # what the driver wrote so far, for the tasks to read
        results: list[dict[str, Any] | None] = [read_marker(t) for t in tasks]
        todo = [i for i, r in enumerate(results) if r is None]
        if len(todo) < len(tasks):
            log.info("%s: %d of %d tasks already done, resuming", stage, len(tasks) - len(todo), len(tasks))
        with task_progress(label or stage, len(tasks), len(tasks) - len(todo), self.progress) as advance:
            for j, stats in self.executor.run([tasks[i] for i in todo]):
                results[todo[j]] = stats
                advance()
        if todo:  # what tasks on other nodes wrote, for the stage's global steps
            self.folder.collect_task_files(stage)
        return [r for r in results if r is not None]

    def run_stage(self, stage: Stage, recipe: Any, settings: str, upstream: StageOutput | None,
                  plan: Any = None) -> StageReport:
        """The stage's finished report if it ran before with these settings; otherwise run it and write one."""
        found = self.finished_report(stage.name, settings)
        if found is not None:
            report = StageReport.from_json(found)
        else:
            started = time.time()
            job = StageJob(self, stage, recipe, settings, upstream, plan)
            extras = stage.run(job)
            # The counted tasks' stats make the counts; a stage without tasks reports counts of its own.
            merged = merge(job.task_stats if job.own_counts is None else [job.own_counts])
            nodes = None
            if job.task_stats:  # where the tasks ran (one node, or several on a Ray cluster)
                nodes = dict(sorted(Counter(s.get("node", "?") for s in job.task_stats).items()))
            report = self.write_stage_report(StageReport.from_merged(stage.name, merged, extras, settings, nodes),
                                             started)
        self._outputs[stage.name] = StageOutput(stage.name, report, self.stage_dir(stage.name), plan, stage.exports)
        return report

    def write_stage_report(self, report: StageReport, started: float) -> StageReport:
        """Check that the counts reconcile, add the time taken, write report.json (= stage done)."""
        stage = report.stage
        report = replace(report, seconds=round(time.time() - started, 3))
        check_reconciles(stage, report.counts)
        write_json(self.stage_dir(stage) / "report.json", report.to_json())
        self.folder.publish_stage(stage)  # everything the stage wrote (and the manifest at the top), its report last
        return report



@dataclass(frozen=True)
class PreparedStage:
    """An enabled stage of this run with its plan (Stage.prepare), computed once."""

    stage: Stage
    plan: Any

    @property
    def name(self) -> str:
        return self.stage.name


def run_flow(flow: Sequence[Stage], recipe: Any, ctx: StageContext, until: str | None = None,
             preview: bool = False, where: str = "",
             prepared: list[PreparedStage] | None = None) -> dict[str, dict[str, Any]]:
    """Run the enabled stages of `flow` in order, up to and including `until`; returns their reports (as
    report.json holds them).

    Every enabled stage is prepared and checked before the first one runs. Each stage's settings hash chains
    its upstream's, so changing a stage reruns it and everything after it. preview: the last stage only
    reports what it would do (Stage.preview) and writes nothing. where: the recipe file, named in check errors;
    prepared: check_flow's result, where the caller ran it already (before starting an executor)."""
    active = prepared if prepared is not None else check_flow(flow, recipe, until, where)
    reports: dict[str, dict[str, Any]] = {}
    upstream: StageOutput | None = None
    try:
        for k, (p, settings) in enumerate(zip(active, settings_chain(active, recipe), strict=True)):
            stage = p.stage
            if preview and k == len(active) - 1:
                reports[stage.name] = stage.preview(StageJob(ctx, stage, recipe, settings, upstream, p.plan))
                break
            report = ctx.run_stage(stage, recipe, settings, upstream, p.plan)
            reports[stage.name] = report.to_json()
            stage.check_output(recipe, report)
            if report["in"] and not report["kept"]:
                raise UserError(f"no documents left after stage {stage.name} ({_reasons(report.counts)}); "
                                f"see {ctx.stage_dir(stage.name) / 'report.json'}")
            upstream = ctx.output_of(stage.name)
    except BuildFailed:
        raise
    except UserError as exc:
        raise BuildFailed(exc, reports) from None
    return reports


def settings_chain(active: Sequence[PreparedStage], recipe: Any) -> Iterator[str]:
    """Each active stage's settings hash, chained after its upstream's (a disabled stage is not in the chain).
    A generator: a stage's settings are computed when it is reached."""
    chain: str | None = None
    for p in active:
        parts = p.stage.settings(recipe, p.plan)
        chain = settings_hash(*parts) if chain is None else settings_hash(chain, *parts)
        yield chain


def check_flow(flow: Sequence[Stage], recipe: Any, until: str | None = None, where: str = "",
               run_checks: bool = True) -> list[PreparedStage]:
    """The stages that would run, each prepared and checked in flow order (a UserError for the first problem
    found, prefixed with `where`, the recipe file). run_checks=False prepares without checking."""
    names = [s.name for s in flow]
    if until is not None and until not in names:
        raise UserError(f"unknown stage '{until}' for --until: choose from {', '.join(names)}")
    for i, s in enumerate(flow):  # a stage reads only stages before it (a bug in the flow otherwise)
        unknown = [r for r in s.requires if r not in names[:i]]
        if unknown:
            raise RuntimeError(f"stage {s.name} requires {', '.join(unknown)}, not an earlier stage of the flow")
    chosen = list(flow[: names.index(until) + 1] if until else flow)
    active = []
    try:
        for stage in chosen:
            if stage.enabled(recipe):
                plan = stage.prepare(recipe)
                if run_checks:
                    stage.check(recipe, plan)
                active.append(PreparedStage(stage, plan))
    except UserError as exc:
        if where:
            raise UserError(f"{where}: {exc}") from None
        raise
    return active


def _reasons(report: dict[str, Any]) -> str:
    gone = {**report["dropped"], **{f"quarantined {k}": v for k, v in report["quarantined"].items()}}
    return ", ".join(f"{k} {v:,}" for k, v in sorted(gone.items(), key=lambda kv: -kv[1])) or "none kept"


def common_stages(flow: Sequence[Stage], a: Any, b: Any) -> list[str]:
    """The leading stages that recipes `a` and `b` run alike: enabled in both, in the same order, with the same
    chained settings hash, so a finished folder of one is the other's too (the hash covers the whole upstream).
    A stage that either recipe cannot prepare (a UserError) ends them."""
    out: list[str] = []
    chain_a = chain_b = None
    for stage in flow:
        on_a, on_b = stage.enabled(a), stage.enabled(b)
        if not on_a and not on_b:
            continue
        if on_a != on_b:
            break
        try:
            parts_a, parts_b = stage.settings(a, stage.prepare(a)), stage.settings(b, stage.prepare(b))
        except UserError:
            break
        chain_a = settings_hash(*parts_a) if chain_a is None else settings_hash(chain_a, *parts_a)
        chain_b = settings_hash(*parts_b) if chain_b is None else settings_hash(chain_b, *parts_b)
        if chain_a != chain_b:
            break
        out.append(stage.name)
    return out
