"""DeepSpeed's JIT-built CPU op: built in this environment's own folder, and a stale build lock is an error
that names it after a visible wait, never a silent hang (issue: every `longmix train` sat at 0% CPU)."""

from __future__ import annotations

import sys
import time
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


def test_stale_lock_is_reported_then_fails_with_its_path(tmp_path, monkeypatch):
    lock = tmp_path / ops.OP_NAME / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # what a build killed half-way leaves behind
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.delenv("LONGMIX_OP_BUILD_TIMEOUT", raising=False)
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(UserError, match=f"delete {lock}"):
        ops.prebuild_cpu_op(timeout_s=12, say=said.append, notice_after_s=1)
    assert time.monotonic() - t0 < 30
    assert len(said) == 1 and f"waiting for {lock}" in said[0]
