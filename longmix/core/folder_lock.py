"""One run per output folder: a build or a training launch holds ``<folder>/.longmix.lock`` while it runs.

The lock is an ``flock``, which the kernel releases when its holder dies, so a lock is never stale; the file
names its holder (pid, command, start time) so that a refused second run can say who holds it, and a holder
that ended without clearing it (killed) is reported when the next run takes over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from longmix.core.errors import UserError

log = logging.getLogger(__name__)
LOCK_NAME = ".longmix.lock"


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock for ``what`` (e.g. "build"); a second holder is refused in one line."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = _holder(fh.read())
            raise UserError(f"{folder} is in use by another longmix {holder}; wait for it to finish or stop it "
                            "(two runs writing one folder would mix their outputs)") from None
        fh.seek(0)
        left = fh.read().strip()
        if left:  # the last holder did not clear it: it was killed
            log.warning("%s: taking over from a longmix %s that ended without releasing it", folder,
                        _holder(left))
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "what": what, "command": " ".join(sys.argv),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"{info['what']} (pid {info['pid']}, started {info['started']}: {info['command']})"
    except (ValueError, KeyError, TypeError):
        return "run"
