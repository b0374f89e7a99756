"""Training speed of the real model: SmolLM2-135M at 2,048 tokens through `longmix train` (2 CPU ranks,
ZeRO-3, one thread each, tiled loss) against the floor, a bare transformers forward + backward + AdamW
step in one process with the same two threads, on the same global batch (the trainer's first step:
2 x 2,048 packed tokens, documents masked through restarting position ids in both).

    .venv/bin/python tests/bench/bench_real_model.py [--steps 6] [--model build/models/smollm2-135m]
        [--manifest build/demo-real/out/manifest.json]

Needs `make model` and the demo-real mix (`longmix build pipelines/demo-real.yaml`). Steady-state
tokens/s is the median over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def recipe(model: Path, manifest: Path, out: Path, steps: int) -> dict:
    return {
        "name": "bench-real", "seed": 1234, "output": str(out),
        "model": {"path": str(model.resolve()), "tiled_loss": True, "loss_tile_tokens": 512},
        "data": {"phases": [{"manifest": str(manifest.resolve()), "steps": steps}], "holdout_sequences": 0},
        "batch": {"tokens_per_step": 4096, "micro_batch_tokens": 2048},
        "optim": {"lr": 2e-5, "weight_decay": 0.0}, "schedule": {"warmup_steps": 1},
        "deepspeed": str(REPO / "train" / "ds_zero3.json"), "checkpoint": {"every_steps": 10_000, "keep_last": 1},
    }


def run_longmix(rec_path: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "longmix.cli", "train", str(rec_path), "--nproc", "2"], check=True,
                   cwd=REPO, env=env)
    wall = time.perf_counter() - t
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    steady = [r["tokens_per_s"] for r in rows[1:]]
    return {"tokens_per_s": statistics.median(steady), "per_step": [r["tokens_per_s"] for r in rows],
            "first_loss": rows[0]["loss"], "wall_s": wall}


def run_bare(rec_path: Path, steps: int) -> dict:
    """One process, two threads: the same rows, transformers' own packed-sdpa masking, torch AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from longmix.train.loader import Loader, PhaseData, plan_phases
    from longmix.train.masking import build_arrays
    from longmix.train.recipe import load_train_recipe

    torch.set_num_threads(2)
    rec = load_train_recipe(rec_path)
    phases = [PhaseData(rec.resolve(p.manifest), verify=False) for p in rec.data.phases]
    loader = Loader(rec, phases, plan_phases(rec, phases, 2), 0, 1)
    _, rows = loader.global_rows(0)  # the trainer's whole first step, both ranks' rows
    lens, pads = phases[0].meta(rows)
    arrays = build_arrays(phases[0].tokens(rows), lens, pads, True)
    ids, pos, tgt = (torch.from_numpy(a) for a in arrays)
    predicted = int((tgt != -100).sum())
    model = AutoModelForCausalLM.from_pretrained(rec.resolve(rec.model.path), attn_implementation="sdpa")
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, betas=(0.9, 0.95), weight_decay=0.0)
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        total = 0.0
        for r in range(len(rows)):  # one row per forward, as each rank does (packed masks need batch 1)
            logits = model(input_ids=ids[r:r + 1], position_ids=pos[r:r + 1], use_cache=False).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt[r], ignore_index=-100,
                                   reduction="sum") / predicted
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(total)
    tokens = ids.numel()
    return {"tokens_per_s": statistics.median(tokens / t for t in times[1:]),
            "per_step": [tokens / t for t in times], "first_loss": losses[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--model", type=Path, default=REPO / "build" / "models" / "smollm2-135m")
    ap.add_argument("--manifest", type=Path, default=REPO / "build" / "demo-real" / "out" / "manifest.json")
    ap.add_argument("--bare-only", action="store_true")
    args = ap.parse_args()
    for p, how in ((args.model / "config.json", "make model"),
                   (args.manifest, "longmix build pipelines/demo-real.yaml")):
        if not p.is_file():
            sys.exit(f"error: {p} not found; run `{how}` first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        rec_path = Path(tmp) / "bench.yaml"
        rec_path.write_text(yaml.safe_dump(recipe(args.model, args.manifest, out, args.steps)))
        bare = run_bare(rec_path, args.steps)
        print(f"bare transformers (1 process, 2 threads): {bare['tokens_per_s']:.1f} tokens/s, "
              f"first loss {bare['first_loss']:.4f}", flush=True)
        if args.bare_only:
            return
        ours = run_longmix(rec_path, out)
    ratio = ours["tokens_per_s"] / bare["tokens_per_s"]
    print(json.dumps({"bare": bare, "longmix": ours, "ratio": ratio}, indent=2))
    print("| loop | tokens/s (steady) | first-step loss |\n|---|---|---|")
    print(f"| bare transformers fwd+bwd+AdamW, 1 process x 2 threads | {bare['tokens_per_s']:.1f} | "
          f"{bare['first_loss']:.4f} |")
    print(f"| longmix train, ZeRO-3, 2 ranks x 1 thread, tiled loss | {ours['tokens_per_s']:.1f} | "
          f"{ours['first_loss']:.4f} |")
    print(f"ratio longmix / bare: {ratio:.3f}; longmix wall time for {args.steps} steps: {ours['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
