"""A task is one pure unit of work: a module-level function and its JSON-able keyword arguments.

The worker runs the function, then writes the task's completion marker (its stats) atomically. Files of the
build's output folder are named as FolderPaths (pipeline/folder.py), resolved on the node that runs the task;
those marked `read` are its inputs, the only files it pulls from a store.
A rerun skips every task whose marker exists, so a killed stage resumes where it stopped. The function is
pickled by reference (module and name), so process pools and Ray workers import it themselves.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmix.core.atomic import write_json
from longmix.pipeline.folder import FolderPath, OutputFolder

TaskFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    task_id: str
    fn: TaskFn
    # Its keyword arguments: JSON-able values, files of the output folder as FolderPaths or lists of them
    # (resolved to plain strings on the node that runs it, so the function receives str paths).
    kwargs: dict[str, Any] = field(default_factory=dict)
    marker: FolderPath | None = None  # its completion marker in the output folder; None: not resumable (a preview)
    cost: int = 0  # a size hint (input bytes): executors start the costliest tasks first
    # What one task needs (num_cpus, memory in bytes), declared by its stage; the Ray executor schedules with it.
    resources: dict[str, float] = field(default_factory=dict)
    folder: OutputFolder | None = None  # the output folder its FolderPaths lie in (set by the runner)

    @property
    def inputs(self) -> list[FolderPath]:
        """The files of the output folder it reads, as its arguments declare them."""
        return [v for v in _folder_paths(self.kwargs) if v.read]


def _folder_paths(kwargs: dict[str, Any]) -> list[FolderPath]:
    """The FolderPaths among a task's arguments: one, or each of a list (a task reading many files)."""
    out: list[FolderPath] = []
    for v in kwargs.values():
        out += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, FolderPath)]
    return out


def _resolve(folder: OutputFolder, v: Any) -> Any:
    if isinstance(v, list):
        return [folder.resolve(x) if isinstance(x, FolderPath) else x for x in v]
    return folder.resolve(v) if isinstance(v, FolderPath) else v


def current_node() -> str:
    """The node a task runs on: the Ray node id inside a Ray worker, else the host name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def run_task(task: Task) -> dict[str, Any]:
    """Executed in a worker process (local pool or Ray); returns the task's stats. The task's folder was
    unpickled on this node, so its paths resolve under this node's root (a store's cache here). It first
    brings the declared inputs this node lacks, and after the function ran puts the files it wrote in its
    stage's folder (newer than its start), then its marker: a marker in the store means the outputs are there."""
    folder = task.folder
    if folder is None:
        if _folder_paths(task.kwargs) or task.marker is not None:
            raise RuntimeError(f"task {task.task_id} names output-folder paths but has no folder (a bug)")
        folder = OutputFolder()
    folder.fetch_inputs(task.inputs)
    kwargs = {k: _resolve(folder, v) for k, v in task.kwargs.items()}
    started = time.time() - 1.0  # mtime granularity: a second of slack only re-puts identical files
    stats = {**task.fn(**kwargs), "node": current_node()}  # run metadata, like timings
    if task.marker is not None:
        folder.publish_task_outputs(task.marker.stage, since=started)
        write_json(folder.resolve(task.marker), {"task_id": task.task_id, "stats": stats})
        folder.publish_file(task.marker)
    return stats


def read_marker(task: Task) -> dict[str, Any] | None:
    if task.marker is None or task.folder is None:
        return None
    path = Path(task.folder.resolve(task.marker))
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["stats"]
    except (json.JSONDecodeError, KeyError):
        return None  # an unreadable marker means: run the task again
