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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from longmix.core.atomic import remove_stale_temps, write_json
from longmix.core.errors import BuildFailed, UserError
from longmix.core.recipe_io import settings_hash
from longmix.core.storage import Mirror
from longmix.pipeline.executors import Executor
from longmix.pipeline.progress import task_progress
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
    """store: the object-store prefix the output lives in (None: a local folder). `output` is then its local
    cache: each stage's folder is brought in line with the store before it is reused or resumed, every task
    puts its files and then its marker there, and the stage's report goes up last (core/storage.py)."""

    def __init__(self, output: Path, executor: Executor, progress: bool | None = None,
                 store: Mirror | None = None) -> None:
        self.output = output
        self.store = store
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
        if self.store is not None:  # the store is the truth: the cache holds what it holds, no more
            self.store.pull_missing(stage, exact=True)
            self.store.pull_missing("", self.store.listing("", recursive=False))  # the manifest at the top
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
        if self.store is not None:
            self.store.push(f"{stage}/stage.json")
        return None

    def run_tasks(self, stage: str, tasks: list[Task], label: str | None = None,
                  resources: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Run tasks not yet marked done; return every task's stats in task order. resources: what each task
        needs (the stage's declaration), for tasks that declare nothing themselves."""
        if resources:
            tasks = [t if t.resources else replace(t, resources=resources) for t in tasks]
        if self.store is not None:
            tasks = [replace(t, store=self.store.uri, store_cache=str(self.store.local)) for t in tasks]
            self.store.push_missing(stage, skip="_tasks")  # what the driver wrote so far, for the tasks to read
        results: list[dict[str, Any] | None] = [read_marker(t) for t in tasks]
        todo = [i for i, r in enumerate(results) if r is None]
        if len(todo) < len(tasks):
            log.info("%s: %d of %d tasks already done, resuming", stage, len(tasks) - len(todo), len(tasks))
        with task_progress(label or stage, len(tasks), len(tasks) - len(todo), self.progress) as advance:
            for j, stats in self.executor.run([tasks[i] for i in todo]):
                results[todo[j]] = stats
                advance()
        if self.store is not None and todo:  # what tasks on other nodes wrote, for the stage's global steps
            self.store.pull_missing(stage)
        return [r for r in results if r is not None]

    def run_stage(self, stage: Stage, recipe: Any, settings: str, upstream: StageOutput | None) -> dict[str, Any]:
        """The stage's finished report if it ran before with these settings; otherwise run it and write one."""
        report = self.finished_report(stage.name, settings)
        if report is None:
            started = time.time()
            job = StageJob(self, stage, recipe, settings, upstream)
            extras = stage.run(job)
            # The counted tasks' stats make the counts; a stage without tasks reports counts of its own.
            body = {"stage": stage.name, **merge(job.task_stats), **extras, "settings_hash": settings}
            if job.task_stats:  # where the tasks ran (one node, or several on a Ray cluster)
                body["nodes"] = dict(sorted(Counter(s.get("node", "?") for s in job.task_stats).items()))
            report = self.write_stage_report(stage.name, body, started)
        self._outputs[stage.name] = StageOutput(stage.name, report, self.stage_dir(stage.name))
        return report

    def write_stage_report(self, stage: str, report: dict[str, Any], started: float) -> dict[str, Any]:
        """Check that the counts reconcile, add the time taken, write report.json (= stage done)."""
        report = {**report, "seconds": round(time.time() - started, 3)}
        check_reconciles(stage, report)
        write_json(self.stage_dir(stage) / "report.json", report)
        if self.store is not None:  # everything the stage wrote (and the manifest at the top), its report last
            for p in sorted(self.output.glob("*")):
                if p.is_file() and not p.name.startswith("."):
                    self.store.push(p.name)
            self.store.push_missing(stage, last=("report.json",))
        return report



def run_flow(flow: Sequence[Stage], recipe: Any, ctx: StageContext, until: str | None = None,
             preview: bool = False, where: str = "", checked: bool = False) -> dict[str, dict[str, Any]]:
    """Run the enabled stages of `flow` in order, up to and including `until`; returns their reports.

    Every enabled stage is checked before the first one runs. Each stage's settings hash chains its
    upstream's, so changing a stage reruns it and everything after it. preview: the last stage only
    reports what it would do (Stage.preview) and writes nothing. where: the recipe file, named in check errors;
    checked: the caller ran check_flow already (before starting an executor)."""
    active = check_flow(flow, recipe, until, where, run_checks=not checked)
    reports: dict[str, dict[str, Any]] = {}
    chain: str | None = None
    upstream: StageOutput | None = None
    try:
        for k, stage in enumerate(active):
            parts = stage.settings(recipe)
            settings = settings_hash(*parts) if chain is None else settings_hash(chain, *parts)
            if preview and k == len(active) - 1:
                reports[stage.name] = stage.preview(StageJob(ctx, stage, recipe, settings, upstream))
                break
            reports[stage.name] = report = ctx.run_stage(stage, recipe, settings, upstream)
            stage.check_output(recipe, report)
            if report["in"] and not report["kept"]:
                raise UserError(f"no documents left after stage {stage.name} ({_reasons(report)}); "
                                f"see {ctx.stage_dir(stage.name) / 'report.json'}")
            chain, upstream = settings, ctx.output_of(stage.name)
    except BuildFailed:
        raise
    except UserError as exc:
        raise BuildFailed(exc, reports) from None
    return reports


def check_flow(flow: Sequence[Stage], recipe: Any, until: str | None = None, where: str = "",
               run_checks: bool = True) -> list[Stage]:
    """The stages that would run, each checked (a UserError for the first problem found, prefixed with
    `where`, the recipe file)."""
    names = [s.name for s in flow]
    if until is not None and until not in names:
        raise UserError(f"unknown stage '{until}' for --until: choose from {', '.join(names)}")
    chosen = list(flow[: names.index(until) + 1] if until else flow)
    active = [s for s in chosen if s.enabled(recipe)]
    try:
        for stage in active if run_checks else []:
            stage.check(recipe)
    except UserError as exc:
        if where:
            raise UserError(f"{where}: {exc}") from None
        raise
    return active


def _reasons(report: dict[str, Any]) -> str:
    gone = {**report["dropped"], **{f"quarantined {k}": v for k, v in report["quarantined"].items()}}
    return ", ".join(f"{k} {v:,}" for k, v in sorted(gone.items(), key=lambda kv: -kv[1])) or "none kept"
