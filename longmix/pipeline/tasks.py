"""A task is one pure unit of work: a function named by import path, with JSON-able arguments.

The worker runs the function, then writes the task's completion marker (its stats) atomically.
A rerun skips every task whose marker exists, so a killed stage resumes where it stopped.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmix.atomic import write_json


@dataclass(frozen=True)
class Task:
    task_id: str
    fn: str  # "package.module:function"
    kwargs: dict[str, Any] = field(default_factory=dict)
    marker: str = ""  # path of the completion marker


def run_task(task: Task) -> dict[str, Any]:
    """Executed in a worker process (local pool or Ray); returns the task's stats."""
    module, _, name = task.fn.partition(":")
    fn = getattr(importlib.import_module(module), name)
    stats = fn(**task.kwargs)
    if task.marker:
        write_json(task.marker, {"task_id": task.task_id, "stats": stats})
    return stats


def read_marker(task: Task) -> dict[str, Any] | None:
    path = Path(task.marker)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["stats"]
    except (json.JSONDecodeError, KeyError):
        return None  # an unreadable marker means: run the task again
