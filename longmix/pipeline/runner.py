"""Runs a stage's tasks through an executor, skipping finished ones, and writes its report.

Stage folder layout: `<output>/<stage>/stage.json` (settings hash, written first),
`_tasks/<task>.json` (completion markers), outputs, and `report.json` (written last = stage done).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from longmix.atomic import remove_stale_temps, write_json
from longmix.errors import UserError
from longmix.pipeline.executors import Executor
from longmix.pipeline.stats import check_reconciles, merge
from longmix.pipeline.tasks import Task, read_marker

log = logging.getLogger("longmix")


class StageContext:
    def __init__(self, output: Path, executor: Executor, seed: int, progress: bool | None = None) -> None:
        self.output = output
        self.executor = executor
        self.seed = seed
        self.progress = sys.stderr.isatty() if progress is None else progress

    def stage_dir(self, stage: str) -> Path:
        return self.output / stage

    def finished_report(self, stage: str, settings_hash: str) -> dict[str, Any] | None:
        """The report of a finished stage with these settings; claims the folder for a new run otherwise."""
        folder = self.stage_dir(stage)
        meta_path, report_path = folder / "stage.json", folder / "report.json"
        if meta_path.is_file():
            old = json.loads(meta_path.read_text()).get("settings_hash")
            if old != settings_hash:
                raise UserError(
                    f"'{folder}' holds stage '{stage}' built with other settings or inputs; "
                    f"remove that folder (or everything after it) or choose a new output")
            if report_path.is_file():
                return json.loads(report_path.read_text())
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        write_json(meta_path, {"stage": stage, "settings_hash": settings_hash})
        return None

    def run_tasks(self, stage: str, tasks: list[Task], label: str | None = None) -> list[dict[str, Any]]:
        """Run tasks not yet marked done; return every task's stats in task order."""
        results: list[dict[str, Any] | None] = [read_marker(t) for t in tasks]
        todo = [i for i, r in enumerate(results) if r is None]
        if len(todo) < len(tasks):
            log.info("%s: %d of %d tasks already done, resuming", stage, len(tasks) - len(todo), len(tasks))
        with self._progress(label or stage, len(tasks), len(tasks) - len(todo)) as advance:
            for j, stats in self.executor.run([tasks[i] for i in todo]):
                results[todo[j]] = stats
                advance()
        return [r for r in results if r is not None]

    @contextmanager
    def _progress(self, label: str, total: int, done: int) -> Iterator[Callable[[], None]]:
        """Yields an `advance()`; a rich bar on a TTY, nothing otherwise."""
        if not self.progress:
            yield lambda: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            tid = bar.add_task(label, total=total, completed=done)
            yield lambda: bar.advance(tid)

    def write_report(self, stage: str, task_stats: list[dict[str, Any]], started: float,
                     **extra: Any) -> dict[str, Any]:
        return self.write_stage_report(stage, {"stage": stage, **merge(task_stats), **extra}, started)

    def write_stage_report(self, stage: str, report: dict[str, Any], started: float) -> dict[str, Any]:
        """Check that the counts reconcile, add the time taken, write report.json (= stage done)."""
        report = {**report, "seconds": round(time.time() - started, 3)}
        check_reconciles(stage, report)
        write_json(self.stage_dir(stage) / "report.json", report)
        return report

