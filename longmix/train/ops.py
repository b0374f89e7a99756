"""DeepSpeed's JIT-built CPU op, built once per environment, never waited on silently or forever.

DeepSpeed compiles its CPU communication op (`deepspeed_shm_comm`) on first use, under torch's `lock` file in
the torch-extensions folder; a build killed half-way leaves that file behind and every later start waits on
it forever, at 0% CPU. So:

1. the folder is the environment's own (`<venv>/torch_extensions`, unless TORCH_EXTENSIONS_DIR is set), so two
   environments never share a build; every rank sets it for itself (``ensure_cpu_op``), whatever launched it
   (`longmix train --nproc`, torchrun, the DeepSpeed launcher, Slurm, a test worker);
2. a build happens only under longmix's own lock, an ``flock`` that the kernel releases when its holder dies.
   Whoever holds it knows that no live longmix process is building, so torch's `lock` file, if present, is
   stale: it is removed, saying so in one line, and the build goes on. Waiting for a live builder is visible;
3. the launcher (``prebuild_cpu_op``) builds before any rank starts, in a child process, and still gives up
   with one line after a bound (a build that hangs for another reason).
"""

from __future__ import annotations

import fcntl
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
OWNER_LOCK = "longmix-build.flock"
BUILD_CHILD = (sys.executable, "-m", "longmix.train.ops")  # the launcher's build process (tests put a stand-in)


def extensions_dir() -> Path:
    """Where torch builds JIT extensions for this environment."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


def use_env_extensions_dir(env: dict[str, str] | os._Environ) -> dict[str, str] | os._Environ:
    env.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    return env


def _say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_cpu_op(say: Callable[[str], None] = _say_stderr, notice_after_s: float = NOTICE_AFTER_S) -> None:
    """Build or load the CPU op in this process under longmix's own lock (see the module docstring)."""
    use_env_extensions_dir(os.environ)  # before torch's cpp_extension reads it
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    folder = extensions_dir() / OP_NAME
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / OWNER_LOCK, "a") as owner:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            while True:
                try:
                    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if notice_after_s is not None and time.monotonic() - t0 > notice_after_s:
                        say(f"longmix: waiting for another process building DeepSpeed's CPU op in {folder}")
                        notice_after_s = None  # once
                    time.sleep(0.2)
        stale = folder / "lock"
        if stale.exists():
            stale.unlink(missing_ok=True)
            say(f"longmix: removed a stale build lock {stale} (the build that left it is gone)")
        _build()


def prebuild_cpu_op(timeout_s: float | None = None, say: Callable[[str], None] = print,
                    notice_after_s: float = NOTICE_AFTER_S) -> None:
    """Build (or load) the CPU op in a child process before any rank starts; one line if it does not finish."""
    timeout_s = float(os.environ.get("LONGMIX_OP_BUILD_TIMEOUT", timeout_s or DEFAULT_TIMEOUT_S))
    env = dict(use_env_extensions_dir(dict(os.environ)))
    env.setdefault("DS_ACCELERATOR", "cpu")
    folder = Path(env["TORCH_EXTENSIONS_DIR"]) / OP_NAME
    if (folder / f"{OP_NAME}.so").is_file() and not (folder / "lock").exists():
        return  # built before and nobody building: the ranks load it at once
    child = subprocess.Popen(list(BUILD_CHILD), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    started, told = time.monotonic(), False
    while child.poll() is None:
        waited = time.monotonic() - started
        if waited > timeout_s:
            child.kill()
            child.wait()
            raise UserError(f"DeepSpeed's CPU op {OP_NAME} was not built after {timeout_s:.0f} s in {folder}; "
                            "set LONGMIX_OP_BUILD_TIMEOUT to wait longer")
        if not told and waited > notice_after_s:
            say(f"longmix: building DeepSpeed's CPU op {OP_NAME} into {folder.parent} (once per environment); "
                f"giving up after {timeout_s:.0f} s")
            told = True
        time.sleep(0.2)
    out = child.stdout.read() if child.stdout else ""
    for line in out.splitlines():
        if line.startswith("longmix: removed a stale build lock"):
            say(line)
    if child.returncode:
        raise UserError(f"building DeepSpeed's CPU op {OP_NAME} failed (exit {child.returncode}): "
                        f"{out.strip().splitlines()[-1] if out.strip() else 'no output'}")


def _build() -> None:
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        builder.load(verbose=False)


if __name__ == "__main__":
    ensure_cpu_op()
