"""Progress of a stage's tasks: a rich bar on a terminal; elsewhere (CI, nohup, `| tee`) a log line at the
start, at most one every `LONGMIX_PROGRESS_SECONDS` (default 10) while tasks finish, and one at the end."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("longmix")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("LONGMIX_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


@contextmanager
def task_progress(label: str, total: int, done: int, terminal: bool) -> Iterator[Callable[[], None]]:
    """Yields an `advance()` to call once per finished task."""
    if terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            tid = bar.add_task(label, total=total, completed=done)
            yield lambda: bar.advance(tid)
        return
    started = last = time.monotonic()
    count = done
    interval = _interval()
    if done == 0 and total:
        log.info("%s: %d tasks", label, total)  # (a resumed stage says so in the runner's line)

    def advance() -> None:
        nonlocal count, last
        count += 1
        now = time.monotonic()
        if count < total and now - last >= interval:
            log.info("%s: %d/%d tasks, %.0f s", label, count, total, now - started)
            last = now

    yield advance
    if done < total:
        log.info("%s: %d/%d tasks done in %.1f s", label, count, total, time.monotonic() - started)
