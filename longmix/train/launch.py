"""Self-launch: ``longmix train`` outside a launcher re-runs itself under torchrun on N local processes;
inside one (RANK/WORLD_SIZE set by torchrun, the deepspeed launcher, srun wrappers...) it just trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch


def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_env(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would otherwise probe for a GPU accelerator
        # One process per share of the cores: oversubscribed OpenMP threads slow every rank down.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch(recipe: Path, nproc: int, extra: list[str]) -> int:
    """Run ``longmix train`` on ``nproc`` local ranks via torchrun; returns the launcher's exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "longmix.cli", "train", str(recipe), *extra]
    return subprocess.call(cmd, env=launch_env(nproc))
