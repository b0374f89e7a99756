"""What the loss breakdowns cost (loss by source and length bucket each step: a detached per-token cross-entropy
and a bincount per micro-batch): `longmix train` on a demo recipe with `logging.loss_breakdown` on, against the
same run with it off (the baseline), same machine, same process tree, one after the other.

    .venv/bin/python tests/bench/bench_loss_breakdown.py [--recipe train/demo-long-abf.yaml] [--steps 8]

Needs the demo's mixes (`make demo`, or the `longmix build` lines of the Makefile). Steady-state tokens/s is
the median over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def run(recipe: Path, steps: int, breakdown: bool, tmp: Path) -> float:
    rec = yaml.safe_load(recipe.read_text())
    out = tmp / ("on" if breakdown else "off")
    first = rec["data"]["phases"][0]
    rec["output"] = str(out)
    rec["data"]["phases"] = [{"manifest": str((recipe.parent / first["manifest"]).resolve()), "steps": steps}]
    rec["deepspeed"] = str((recipe.parent / rec["deepspeed"]).resolve())
    if rec["model"].get("path"):
        rec["model"]["path"] = str((recipe.parent / rec["model"]["path"]).resolve())
    rec["checkpoint"] = {"every_steps": 10_000, "keep_last": 1}
    rec["logging"] = {**rec.get("logging", {}), "loss_breakdown": breakdown, "every_steps": 1}
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(rec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    subprocess.run([sys.executable, "-m", "longmix.cli", "train", str(path), "--nproc", "2"], check=True, cwd=REPO,
                   env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    return statistics.median(r["tokens_per_s"] for r in rows[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", type=Path, default=REPO / "train" / "demo-long-abf.yaml")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        off = run(args.recipe, args.steps, False, Path(tmp))
        on = run(args.recipe, args.steps, True, Path(tmp))
    print(f"| {args.recipe.name} | breakdown off (baseline) {off:,.0f} tokens/s | on {on:,.0f} tokens/s | "
          f"ratio on/off {on / off:.3f} |")


if __name__ == "__main__":
    main()
