"""The prepared device call of the real-model positional-encoding suite with continued pretraining
(tests/gpu/pe_suite_gpu.py) in its CPU dry run: the same script trains each arm in its own `longmix ablate`
process, and the results.json it leaves is the suite's own, which the report and verdicts accept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_train import REPO

from longmix.ablate.report import rewrite_report

pytestmark = pytest.mark.slow


def test_pe_suite_gpu_dry_run_writes_the_suites_results(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "gpu" / "pe_suite_gpu.py"), "--cpu-dry-run",
                             "--out", str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate()
    finally:  # a failing or interrupted test leaves no torchrun or rank behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-6000:]
    meta = json.loads((tmp_path / "pe_suite_gpu.json").read_text())
    assert [(r["arm"], r["status"]) for r in meta["arms"]] == [("rope", "done"), ("abf-x4", "done")]
    assert meta["report"] == "written" and meta["dry_run"]
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    runs = {r["arm"]: r for r in results["arms"]}
    assert set(runs) == {"rope", "abf-x4"}
    for r in runs.values():  # trained (not load-time), on the built mix, and evaluated by every section
        assert r["training"]["steps"] == 2 and r["load_time"] is None
        assert r["eval"]["ruler"]["lengths"] == [1024] and r["eval"]["dependency"]["by_distance"]
    # the verdicts of the findings that name these two arms, recomputed from results.json by the report
    md = (rewrite_report(tmp_path / "report" / "results.json") / "report.md").read_text()
    assert "## Verdicts" in md and "ABF beats unchanged RoPE beyond the window on retrieval" in md
    assert "No training happened" not in md
