"""A task is one pure unit of work: a module-level function and its JSON-able keyword arguments.

The worker runs the function, then writes the task's completion marker (its stats) atomically.
A rerun skips every task whose marker exists, so a killed stage resumes where it stopped. The function is
pickled by reference (module and name), so process pools and Ray workers import it themselves.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from longmix.core.atomic import write_json
from longmix.core.storage import Mirror

TaskFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    task_id: str
    fn: TaskFn
    kwargs: dict[str, Any] = field(default_factory=dict)
    marker: str = ""  # path of the completion marker; empty: not resumable (a preview)
    cost: int = 0  # a size hint (input bytes): executors start the costliest tasks first
    # What one task needs (num_cpus, memory in bytes), declared by its stage; the Ray executor schedules with it.
    resources: dict[str, float] = field(default_factory=dict)
    store: str = ""  # the object-store prefix the stage's folder mirrors ("" for a local folder)
    store_cache: str = ""  # the cache folder of that store on the node that made the task (its paths)


def current_node() -> str:
    """The node a task runs on: the Ray node id inside a Ray worker, else the host name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def run_task(task: Task) -> dict[str, Any]:
    """Executed in a worker process (local pool or Ray); returns the task's stats. With a store, the task
    first pulls the inputs its arguments name that this node lacks, and after it ran puts the files it wrote
    (newer than its start), then its marker: a marker in the store means the task's outputs are there."""
    mirror = Mirror(task.store) if task.store else None
    if mirror is not None:
        if task.store_cache != str(mirror.local):  # this node caches the store elsewhere: use its own paths
            task = replace(task, kwargs=mirror.rebase(task.kwargs, task.store_cache),
                           marker=mirror.rebase(task.marker, task.store_cache))
        mirror.pull_inputs(task.kwargs)
    started = time.time() - 1.0  # mtime granularity: a second of slack only re-puts identical files
    stats = {**task.fn(**task.kwargs), "node": current_node()}  # run metadata, like timings
    if task.marker:
        if mirror is not None:
            stage_rel = mirror.rel(Path(task.marker).parent.parent)
            mirror.push_missing(stage_rel or "", since=started, skip="_tasks")
        write_json(task.marker, {"task_id": task.task_id, "stats": stats})
        if mirror is not None:
            mirror.push(mirror.rel(task.marker) or "")
    return stats


def read_marker(task: Task) -> dict[str, Any] | None:
    path = Path(task.marker)
    if not task.marker or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["stats"]
    except (json.JSONDecodeError, KeyError):
        return None  # an unreadable marker means: run the task again
