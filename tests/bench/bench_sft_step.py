"""What an SFT step costs against a pretraining step: `longmix train` on an SFT manifest (loss mask, long
examples padded alone) against the same rows as a pretraining manifest (the mask column dropped: every token a
target), same model, same batch, same ranks, in one run.

    .venv/bin/python tests/bench/bench_sft_step.py [--manifest build/sft/demo/pack-io/manifest.json]
        [--model build/models/smollm2-135m] [--steps 4]

Needs `make model` and an SFT manifest (`make demo-sft` writes the one above). Prints tokens/s (non-padding
tokens) and loss tokens/s of each, the steady state being the median over the steps after the first, and the
ratio SFT / pretraining.
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
sys.path.insert(0, str(REPO))


def pretraining_twin(manifest: Path, out: Path) -> Path:
    """The SFT manifest's rows, in the same shards and order, without their loss mask."""
    import shutil

    from longmix.formats.manifest import load_manifest, shard_entries, write_manifest
    from longmix.formats.packed_shards import read_rows, write_shard

    m = load_manifest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    infos = []
    for entry in m.shards:
        rows = read_rows(manifest.parent / entry.path, m.seq_len)
        rows.loss_mask = None
        infos.append(write_shard(out / Path(entry.path).name, rows, m.seq_len))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the same tokenizer entry, ids and hash
        if (manifest.parent / name).is_file():
            shutil.copy2(manifest.parent / name, out / name)
    twin = m.model_copy(update={"sft": None, "shards": shard_entries(infos, out)})
    write_manifest(twin, out / "manifest.json")
    return out / "manifest.json"


def run(model: Path, manifest: Path, out: Path, steps: int) -> dict:
    rec = {"name": "bench-sft", "seed": 0, "output": str(out),
           "model": {"path": str(model.resolve()), "tiled_loss": True, "loss_tile_tokens": 512},
           "data": {"phases": [{"manifest": str(manifest.resolve()), "steps": steps}], "holdout_sequences": 0},
           "batch": {"tokens_per_step": 4096, "micro_batch_tokens": 2048},
           "optim": {"lr": 1e-5, "weight_decay": 0.0}, "schedule": {"warmup_steps": 1},
           "deepspeed": str(REPO / "train" / "ds_zero3.json"), "logging": {"every_steps": 1},
           "checkpoint": {"every_steps": 10_000, "keep_last": 1}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(rec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    subprocess.run([sys.executable, "-m", "longmix.cli", "train", str(path), "--nproc", "2"], check=True, cwd=REPO,
                   env=env)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    steady = rows[1:]
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
            "loss_tokens_per_s": statistics.median(r["predicted_tokens"] / r["step_time_s"] for r in steady),
            "loss_tokens_per_step": statistics.median(r["predicted_tokens"] for r in steady)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, default=REPO / "build/sft/demo/pack-io/manifest.json")
    ap.add_argument("--model", type=Path, default=REPO / "build/models/smollm2-135m")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        twin = pretraining_twin(a.manifest, root / "twin")
        base = run(a.model, twin, root / "pretrain", a.steps)
        sft = run(a.model, a.manifest, root / "sft", a.steps)
    print(f"{'step':<34}{'tokens/s':>10}{'loss tokens/s':>15}{'loss tokens/step':>18}")
    for name, r in (("pretraining (same rows, no mask)", base), ("SFT (loss mask)", sft)):
        print(f"{name:<34}{r['tokens_per_s']:>10.1f}{r['loss_tokens_per_s']:>15.1f}{r['loss_tokens_per_step']:>18.0f}")
    print(f"ratio SFT / pretraining, tokens/s: {sft['tokens_per_s'] / base['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
