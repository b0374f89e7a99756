"""Self-launch: ``longmix train`` outside a launcher re-runs itself under torchrun on N local processes;
inside one (RANK/WORLD_SIZE set by torchrun, the deepspeed launcher, srun wrappers...) it just trains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from longmix.train.ops import prebuild_cpu_op, use_env_extensions_dir

STOP_GRACE_S = 60  # how long the ranks get to end after an interrupt before they are killed


def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


SELF_LAUNCHED = "LONGMIX_SELF_LAUNCHED"  # set for the ranks `longmix train --nproc` starts itself


def launch_env(nproc: int) -> dict[str, str]:
    env = use_env_extensions_dir(dict(os.environ))
    env[SELF_LAUNCHED] = "1"
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would otherwise probe for a GPU accelerator
        # One process per share of the cores: oversubscribed OpenMP threads slow every rank down.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def torchrun(module_args: list[str], nproc: int) -> int:
    """Run ``python -m <module_args>`` on ``nproc`` local ranks via torchrun; returns its exit code. On CPU
    the JIT-built DeepSpeed op is built first, here, so no rank waits on its lock silently (train/ops.py)."""
    if not torch.cuda.is_available():
        prebuild_cpu_op(say=lambda m: print(m, file=sys.stderr, flush=True))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", *module_args]
    agent = subprocess.Popen(cmd, env=launch_env(nproc))
    try:
        return agent.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun passes SIGTERM on to every rank and waits for them
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        raise


def launch(recipe: Path, nproc: int, extra: list[str]) -> int:
    """Run ``longmix train`` on ``nproc`` local ranks."""
    return torchrun(["longmix.cli", "train", str(recipe), *extra], nproc)
