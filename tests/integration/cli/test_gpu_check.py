"""The prepared GPU check (tests/gpu/gpu_check.py) in its CPU dry run: the same script, parts and report at
tiny shapes, so it cannot rot between GPU leases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_train import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_passes_every_part(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "gpu" / "gpu_check.py"), "--cpu-dry-run",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = {(r["part"], r["arg"]): r for r in report["results"]}
    assert set(parts) == {("correctness", None), ("throughput", "256"), ("throughput", "512"), ("reach", None),
                          ("real", None)}
    assert all(r["ok"] for r in parts.values())
    corr = parts[("correctness", None)]
    # fp32 on CPU: flex (forward only) and transformers' masked sdpa agree with per-document SDPA
    assert corr["flex_loss_abs_diff"] <= 1e-5 and corr["sdpa_loss_abs_diff"] <= 1e-5
    assert corr["sdpa_grad_max_rel_diff"] <= 1e-4
    for L in ("256", "512"):
        t = parts[("throughput", L)]
        assert t["longmix"]["tokens_per_s"] > 0 and t["bare"]["tokens_per_s"] > 0 and t["ratio"] > 0
    assert parts[("reach", None)]["longest"] == 2048
    assert "| longmix |" in (tmp_path / "gpu_check.md").read_text()
