"""Progress, one helper for stages and evaluations: a rich bar on a terminal; elsewhere (CI, nohup, `| tee`,
make logs, which would else show nothing for minutes) log lines. The two callers differ only in when a line is
due: a stage's tasks log at the start, at most once every `LONGMIX_PROGRESS_SECONDS` (default 10) and at the
end (`task_progress`); an evaluation logs once per tenth of its work (`progress`)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("longmix")
eval_log = logging.getLogger("longmix.eval")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("LONGMIX_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


@contextmanager
def _bar(label: str, total: int, done: int, columns: tuple[Any, ...]) -> Iterator[Callable[[int], None]]:
    """A transient rich bar (``columns``: rich's defaults, with an ETA, when empty); yields ``advance(n)``."""
    from rich.progress import Progress

    with Progress(*columns, transient=True) as bar:
        tid = bar.add_task(label, total=total, completed=done)
        yield lambda n=1: bar.advance(tid, n)


@contextmanager
def task_progress(label: str, total: int, done: int, terminal: bool) -> Iterator[Callable[[], None]]:
    """Yields an `advance()` to call once per finished task."""
    if terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        with _bar(label, total, done, (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                       TimeElapsedColumn())) as advance:
            yield lambda: advance(1)
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


@contextmanager
def progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """An evaluation's progress; yields ``advance(n)``. Off (``enabled=False``) it stays silent."""
    if not enabled:
        yield lambda n=1: None
        return
    if sys.stderr.isatty():
        with _bar(label, total, 0, ()) as advance:
            yield advance
        return
    step = max(1, -(-total // 10))
    done, next_mark, t0 = 0, step, time.perf_counter()

    def advance_lines(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done >= next_mark or done == total:
            eval_log.info("%s: %d/%d (%.0f s)", label, done, total, time.perf_counter() - t0)
            next_mark = done + step

    yield advance_lines
