"""DeepSpeed's JIT-built CPU op, built once per environment before any rank starts, never waited on silently.

DeepSpeed compiles its CPU communication op (`deepspeed_shm_comm`) on first use, under a `lock` file in
the torch-extensions folder; a build killed half-way leaves that lock behind and every later start waits
on it forever, at 0% CPU. So the launcher (1) keeps the folder inside the environment (`<venv>/
torch_extensions`, unless TORCH_EXTENSIONS_DIR is set), so two environments never share a build, and
(2) builds the op itself in a child process before launching ranks, saying what it waits on after a few
seconds and failing with the lock's path after a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from longmix.core.errors import UserError

OP_NAME = "deepspeed_shm_comm"
DEFAULT_TIMEOUT_S = 600.0
NOTICE_AFTER_S = 5.0


def extensions_dir() -> Path:
    """Where torch builds JIT extensions for this environment."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


def use_env_extensions_dir(env: dict[str, str]) -> dict[str, str]:
    env.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    return env


def prebuild_cpu_op(timeout_s: float | None = None, say: Callable[[str], None] = print,
                    notice_after_s: float = NOTICE_AFTER_S) -> None:
    """Build (or load) the CPU op in a child process; a stale lock is an error naming it, not a hang."""
    timeout_s = float(os.environ.get("LONGMIX_OP_BUILD_TIMEOUT", timeout_s or DEFAULT_TIMEOUT_S))
    env = use_env_extensions_dir(dict(os.environ))
    env.setdefault("DS_ACCELERATOR", "cpu")
    lock = Path(env["TORCH_EXTENSIONS_DIR"]) / OP_NAME / "lock"
    if (lock.parent / f"{OP_NAME}.so").is_file() and not lock.exists():
        return  # built before and nobody building: the ranks load it at once
    child = subprocess.Popen([sys.executable, "-m", "longmix.train.ops"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    started, told = time.monotonic(), False
    while child.poll() is None:
        waited = time.monotonic() - started
        if waited > timeout_s:
            child.kill()
            child.wait()
            held = f"{lock} is held (a build killed half-way leaves it behind)" if lock.exists() else \
                "the build did not finish"
            raise UserError(f"DeepSpeed's CPU op was not ready after {timeout_s:.0f} s: {held}; if no other "
                            f"longmix build or training is running, delete {lock} and retry")
        if not told and waited > notice_after_s:
            what = f"waiting for {lock} (another process is building the op, or a stale lock)" if lock.exists() \
                else f"building DeepSpeed's CPU op {OP_NAME} into {lock.parent.parent} (once per environment)"
            say(f"longmix: {what}; giving up after {timeout_s:.0f} s")
            told = True
        time.sleep(0.2)
    out = child.stdout.read() if child.stdout else ""
    if child.returncode:
        raise UserError(f"building DeepSpeed's CPU op {OP_NAME} failed (exit {child.returncode}): "
                        f"{out.strip().splitlines()[-1] if out.strip() else 'no output'}")


def _build() -> None:
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        builder.load(verbose=False)


if __name__ == "__main__":
    _build()
