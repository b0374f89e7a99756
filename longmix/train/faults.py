"""Deliberate crashes for the kill -9 tests (tests/integration/train/test_train_run.py): with
LONGMIX_TEST_SIGKILL set to `<point>:<step>` (points: after_step, after_log, mid_save), rank 0 sends itself
SIGKILL there, as an OOM killer or a preempted node would. Unset, as always outside those tests, it does nothing."""

from __future__ import annotations

import os
import signal

ENV = "LONGMIX_TEST_SIGKILL"


def crash_point(point: str, step: int) -> None:
    spec = os.environ.get(ENV)
    if spec and f"{point}:{step}" in spec.split(",") and os.environ.get("RANK", "0") == "0":
        os.kill(os.getpid(), signal.SIGKILL)
