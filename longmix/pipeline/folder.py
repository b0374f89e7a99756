"""The build's output folder, one object with one job: where stages read and write on this node, and what
keeps it in line with an object store when the output is one.

`LocalFolder` is a plain (or shared network) folder: every hook does nothing. `MirroredFolder` is a store
prefix (`s3://...`) worked through this node's cache of it (core/storage.py `Mirror`): its hooks pull what a
stage or task reads and put what it wrote, in the order that makes a store's writes atomic (a task's outputs
before its marker, a stage's report.json after everything else). The runner calls the hooks unconditionally,
so it has no store branches.

Tasks name files of the output folder as `FolderPath`s (relative to the folder), never as absolute paths:
a task may run on another node, whose root (its cache of the store) lies elsewhere. `run_task` resolves them
there, after pulling exactly the inputs the task declares (`FolderPath.read`) that the node lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from longmix.core.storage import Mirror, file_info, is_uri, join


@dataclass(frozen=True)
class FolderPath:
    """A file or folder of the output folder, relative to it (posix). read: an input of the task, pulled from
    the store when the node that runs the task lacks it; otherwise something the task writes."""

    rel: str
    read: bool = False

    @classmethod
    def of(cls, path: Path | str, root: Path, read: bool = False) -> FolderPath:
        """The path of a file under `root` (the output folder on the node that makes the task)."""
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            raise RuntimeError(f"{path} is not inside the output folder {root}") from None
        return cls("" if rel == "." else rel, read)

    @property
    def stage(self) -> str:
        """The stage folder it lies in (its first part)."""
        return PurePosixPath(self.rel).parts[0] if self.rel else ""


class OutputFolder:
    """Where a build's stages write (`root`, on this node) and the hooks that keep a mirror of it in line.
    The hooks take stage names (the stage's folder under the root); the base does nothing in any of them."""

    root: Path

    def resolve(self, path: FolderPath) -> str:
        """The path on this node."""
        return str(self.root / path.rel) if path.rel else str(self.root)

    def check_writable(self) -> None:
        """Fail fast, before any work, when the output cannot be written."""

    def sync_stage_before_reuse(self, stage: str) -> None:
        """Before a stage's folder is read for reuse or resume: make it say what the truth says."""

    def publish_claim(self, stage: str) -> None:
        """After the stage's `stage.json` (its settings hash) was written: the claim is visible."""

    def share_driver_files(self, stage: str) -> None:
        """Before tasks run: what the driver wrote in the stage's folder so far, for tasks on other nodes."""

    def fetch_inputs(self, inputs: Iterable[FolderPath]) -> None:
        """On the node that runs a task: bring the task's declared inputs this node lacks."""

    def publish_task_outputs(self, stage: str, since: float) -> None:
        """After a task ran, before its marker is written: the files it wrote in the stage's folder."""

    def publish_file(self, path: FolderPath) -> None:
        """One finished file (a task's marker, after its outputs)."""

    def collect_task_files(self, stage: str) -> None:
        """After tasks ran: what they wrote (on any node), for the stage's global steps on the driver."""

    def publish_stage(self, stage: str) -> None:
        """After `report.json` was written: everything of the stage, the files at the top (the manifest), and
        the report last, which marks the stage done."""


class LocalFolder(OutputFolder):
    """A folder every node sees at the same path (local, or a shared file system): nothing to mirror."""

    def __init__(self, root: Path) -> None:
        self.root = root


class MirroredFolder(OutputFolder):
    """A store prefix worked through this node's cache of it (the same store, a cache of its own per node).
    Pickled as its URI, so a task unpickled on another node resolves its paths under that node's cache."""

    def __init__(self, uri: str) -> None:
        self.mirror = Mirror(uri)
        self.uri, self.root = self.mirror.uri, self.mirror.local

    def __reduce__(self) -> tuple[Any, ...]:
        return MirroredFolder, (self.uri,)

    def check_writable(self) -> None:
        self.mirror.check_writable()

    def sync_stage_before_reuse(self, stage: str) -> None:
        # the store is the truth: the cache holds what it holds, no more
        self.mirror.pull_missing(stage, exact=True)
        self.mirror.pull_missing("", self.mirror.listing("", recursive=False))  # the manifest at the top

    def publish_claim(self, stage: str) -> None:
        self.mirror.push(f"{stage}/stage.json")

    def share_driver_files(self, stage: str) -> None:
        self.mirror.push_missing(stage, skip="_tasks")

    def fetch_inputs(self, inputs: Iterable[FolderPath]) -> None:
        # only what the store holds: an input it lacks fails in the task, as a missing local file would
        for path in inputs:
            if not (self.root / path.rel).exists() and file_info(join(self.uri, path.rel)) is not None:
                self.mirror.pull(path.rel)

    def publish_task_outputs(self, stage: str, since: float) -> None:
        self.mirror.push_missing(stage, since=since, skip="_tasks")

    def publish_file(self, path: FolderPath) -> None:
        self.mirror.push(path.rel)

    def collect_task_files(self, stage: str) -> None:
        self.mirror.pull_missing(stage)

    def publish_stage(self, stage: str) -> None:
        for p in sorted(self.root.glob("*")):
            if p.is_file() and not p.name.startswith("."):
                self.mirror.push(p.name)
        self.mirror.push_missing(stage, last=("report.json",))


def output_folder(output: str, local: Path) -> OutputFolder:
    """The folder object of a build's `output`: a store URI mirrors through this node's cache; `local` is the
    resolved path of a plain folder."""
    return MirroredFolder(output) if is_uri(output) else LocalFolder(local)
