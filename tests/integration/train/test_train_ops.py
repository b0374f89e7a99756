"""DeepSpeed's JIT-built CPU op: built in this environment's own folder, a stale build lock left by a killed
build is removed (saying so) instead of waited on, a live builder is waited for visibly, and a build that hangs
or fails ends the launcher's wait with one line (issue: every `longmix train` and every torchrun-launched rank
sat at 0% CPU on a dead build's lock). The hung and the failing build are stand-in children injected in place
of the real one: they hang or fail whatever the machine's speed, so no test waits on a real timeout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longmix.core.errors import UserError
from longmix.train import ops


def test_extensions_folder_is_per_environment(monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert ops.extensions_dir() == Path(sys.prefix) / "torch_extensions"
    env = ops.use_env_extensions_dir({})
    assert env["TORCH_EXTENSIONS_DIR"] == str(Path(sys.prefix) / "torch_extensions")
    assert ops.use_env_extensions_dir({"TORCH_EXTENSIONS_DIR": "/x"})["TORCH_EXTENSIONS_DIR"] == "/x"


@pytest.fixture()
def built_copy(tmp_path, monkeypatch) -> Path:
    """A copy of this environment's built op folder (built first if needed), so no test compiles twice."""
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    ops.prebuild_cpu_op(say=lambda _: None)
    shutil.copytree(ops.extensions_dir() / ops.OP_NAME, tmp_path / ops.OP_NAME)
    (tmp_path / ops.OP_NAME / ops.OWNER_LOCK).unlink(missing_ok=True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    return tmp_path / ops.OP_NAME


def test_stale_lock_is_removed_not_waited_on(built_copy: Path):
    lock = built_copy / "lock"
    lock.write_text("")  # what a build killed half-way leaves behind
    said: list[str] = []
    ops.prebuild_cpu_op(timeout_s=600, say=said.append)
    assert not lock.exists()
    assert any(f"removed a stale build lock {lock}" in s for s in said), said


def test_a_live_builder_is_waited_for_visibly_and_its_death_frees_the_lock(built_copy: Path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(3600)"), str(built_copy / ops.OWNER_LOCK)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (built_copy / "lock").write_text("")  # the holder's build in progress
        said: list[str] = []

        def kill_when_told(message: str) -> None:
            said.append(message)
            holder.kill()  # the builder dies mid-build: the kernel frees its flock, its torch lock stays

        ops.ensure_cpu_op(say=kill_when_told, notice_after_s=0.5)
        assert "waiting for another process building" in said[0]
        assert any("removed a stale build lock" in s for s in said[1:]), said
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture()
def stand_in_build(tmp_path, monkeypatch):
    """Run ``code`` as the launcher's build child in an empty extensions folder; every child started is ended
    when the test ends, whatever it asserted."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("LONGMIX_OP_BUILD_TIMEOUT", raising=False)
    started: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(ops.subprocess, "Popen", Recorded)

    def use(code: str) -> list[subprocess.Popen]:
        monkeypatch.setattr(ops, "BUILD_CHILD", (sys.executable, "-c", code))
        return started

    yield use
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_hung_build_is_ended_with_one_line(stand_in_build):
    started = stand_in_build("import time; time.sleep(3600)")
    with pytest.raises(UserError, match=f"{ops.OP_NAME} was not built after 1 s .* LONGMIX_OP_BUILD_TIMEOUT"):
        ops.prebuild_cpu_op(timeout_s=1, say=lambda _: None)
    assert len(started) == 1 and started[0].returncode is not None, "the hung build was left running"


def test_a_failed_build_names_its_last_line(stand_in_build):
    stand_in_build("print('error: no C++ compiler'); raise SystemExit(2)")
    with pytest.raises(UserError, match=r"failed \(exit 2\): error: no C\+\+ compiler"):
        ops.prebuild_cpu_op(timeout_s=600, say=lambda _: None)
