"""A task is one pure unit of work: a module-level function and its JSON-able keyword arguments.

The worker runs the function, then writes the task's completion marker (its stats) atomically.
A rerun skips every task whose marker exists, so a killed stage resumes where it stopped. The function is
pickled by reference (module and name), so process pools and Ray workers import it themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmix.core.atomic import write_json

TaskFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    task_id: str
    fn: TaskFn
    kwargs: dict[str, Any] = field(default_factory=dict)
    marker: str = ""  # path of the completion marker; empty: not resumable (a preview)
    cost: int = 0  # a size hint (input bytes): executors start the costliest tasks first


def run_task(task: Task) -> dict[str, Any]:
    """Executed in a worker process (local pool or Ray); returns the task's stats."""
    stats = task.fn(**task.kwargs)
    if task.marker:
        write_json(task.marker, {"task_id": task.task_id, "stats": stats})
    return stats


def read_marker(task: Task) -> dict[str, Any] | None:
    path = Path(task.marker)
    if not task.marker or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["stats"]
    except (json.JSONDecodeError, KeyError):
        return None  # an unreadable marker means: run the task again
