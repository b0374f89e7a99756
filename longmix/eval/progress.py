"""Progress of long evaluations: a rich bar on a terminal, a log line per tenth of the work otherwise (CI and
make logs would else show nothing for minutes)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("longmix.eval")


@contextmanager
def progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``."""
    if not enabled:
        yield lambda n=1: None
        return
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            tid = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(tid, n)
        return
    step = max(1, -(-total // 10))
    done, next_mark, t0 = 0, step, time.perf_counter()

    def advance(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done >= next_mark or done == total:
            log.info("%s: %d/%d (%.0f s)", label, done, total, time.perf_counter() - t0)
            next_mark = done + step

    yield advance
