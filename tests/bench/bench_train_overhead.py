"""Trainer overhead: tokens/s of `longmix train` against a bare DeepSpeed loop (the floor): same tiny model,
same ZeRO-3 config, the same packed batch (held in memory and repeated by the bare loop); plus the data
loader's throughput against what the trainer consumes.

    .venv/bin/python tests/bench/bench_train_overhead.py [--nproc 2] [--steps 40] [--hidden 256] [--full]

Both sides run in the same ranks on the same engine, in alternating blocks of 4 steps, one OpenMP
thread per rank. Steady-state tokens/s is the median over steps after the first few. ``--full`` also
runs the whole `longmix train` command and reports its steady-state tokens/s and wall time.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

SEQ_LEN = 512
WARMUP = 5


def model_config(hidden: int) -> dict:
    from helpers_train import TINY_LLAMA

    return {**TINY_LLAMA, "hidden_size": hidden, "intermediate_size": hidden * 8 // 3 // 8 * 8,
            "num_hidden_layers": 4, "num_attention_heads": max(hidden // 64, 1),
            "num_key_value_heads": max(hidden // 64, 1)}


def interleaved(args: argparse.Namespace) -> None:
    """On every rank: one Trainer (the code `longmix train` runs), then alternating blocks of
    (a) its own step path -- loader, masking, token-mean loss, loss all-reduce, metrics -- and
    (b) a bare DeepSpeed loop on the same engine over the trainer's first batch held in memory (the
    same packed rows and position ids, so the same attention masks). Alternating blocks cancel drift in
    machine load, which on a shared 2-core box otherwise swamps a few-percent difference."""
    import torch
    import torch.nn.functional as F

    from longmix.train.recipe import load_train_recipe
    from longmix.train.trainer import Trainer

    trainer = Trainer(load_train_recipe(args.recipe))
    engine, loader = trainer.engine, trainer.loader
    batch = loader.step(0)
    micro = [tuple(torch.from_numpy(a) for a in (m.input_ids, m.position_ids, m.targets)) for m in batch.micro]
    times: dict[str, list[float]] = {"longmix": [], "bare": []}
    block = 4
    for _ in range(args.steps // block):
        for _ in range(block):  # (a) the trainer's step, as in Trainer.run
            t = time.perf_counter()
            sb = loader.step(trainer.step)
            loss, _ = trainer.train_step(sb)
            trainer.step += 1
            trainer._log(sb, loss, 0.0, time.perf_counter() - t, 0.0)
            times["longmix"].append(time.perf_counter() - t)
        for _ in range(block):  # (b) the floor
            t = time.perf_counter()
            for ids, pos, tgt in micro:
                logits = engine(input_ids=ids, position_ids=pos, use_cache=False).logits
                loss_t = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), ignore_index=-100)
                engine.backward(loss_t)
                engine.step()
            times["bare"].append(time.perf_counter() - t)
    if torch.distributed.get_rank() == 0:
        Path(args.result).write_text(json.dumps(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--tokens-per-step", type=int, default=8192)
    ap.add_argument("--micro-tokens", type=int, default=2048)
    ap.add_argument("--full", action="store_true", help="also time the whole `longmix train` command")
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        return interleaved(args)

    from helpers_train import make_manifest, make_tokenizer, tiny_recipe, write_train_recipe

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        man = make_manifest(root / "d", make_tokenizer(root / "tok"), SEQ_LEN, 1_200_000, rows_per_shard=64)
        rec = tiny_recipe(root / "run", [{"manifest": str(man), "steps": args.steps}],
                          model={"config": model_config(args.hidden)},
                          batch={"tokens_per_step": args.tokens_per_step, "micro_batch_tokens": args.micro_tokens},
                          checkpoint={"every_steps": 10**6, "keep_last": 1}, data={"holdout_sequences": 0})
        recipe = write_train_recipe(root / "r.yaml", **rec)
        result = root / "times.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={args.nproc}", __file__, "--bare", "--result", str(result),
                        "--recipe", str(recipe), "--steps", str(args.steps)],
                       env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = json.loads(result.read_text())
        tps_train = args.tokens_per_step / statistics.median(times["longmix"][WARMUP:])
        tps_bare = args.tokens_per_step / statistics.median(times["bare"][WARMUP:])
        t0 = time.perf_counter()
        if args.full:
            subprocess.run([sys.executable, "-m", "longmix.cli", "train", str(recipe), "--nproc", str(args.nproc)],
                           env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows = [json.loads(ln) for ln in (root / "run" / "metrics.jsonl").read_text().splitlines()]
            full = [r["step_time_s"] for r in rows if "loss" in r and r["step"] < args.steps]
            tps_full = args.tokens_per_step / statistics.median(full[WARMUP:])
        wall_full = time.perf_counter() - t0

        # Loader: the same batches the trainer consumed (rank 0's share plus the global counts), timed alone.
        from longmix.train.loader import Loader, PhaseData, plan_phases
        from longmix.train.recipe import load_train_recipe

        r = load_train_recipe(recipe)
        phases = [PhaseData(man, verify=False)]
        loader = Loader(r, phases, plan_phases(r, phases, args.nproc), 0, args.nproc)
        t = time.perf_counter()
        for s in range(args.steps):
            loader.step(s)
        loader_sps = args.steps / (time.perf_counter() - t)

    print(f"model: Llama hidden {args.hidden}, 4 layers; {args.nproc} CPU ranks, ZeRO-3, seq_len {SEQ_LEN}, "
          f"{args.tokens_per_step} tokens/step, {args.steps} steps each, alternating blocks (median after {WARMUP})")
    print(f"bare DeepSpeed loop : {tps_bare:10,.0f} tokens/s")
    print(f"longmix train step  : {tps_train:10,.0f} tokens/s")
    print(f"overhead ratio      : {tps_bare / tps_train:10.3f}  (bare / longmix; goal <= 1.05)")
    if args.full:
        print(f"`longmix train` run : {tps_full:10,.0f} tokens/s steady state; whole command {wall_full:.0f} s "
              "(startup, imports, final checkpoint)")
    print(f"loader, one rank    : {loader_sps * args.tokens_per_step / args.nproc:10,.0f} tokens/s "
          f"({loader_sps:,.0f} steps/s) vs trainer consumption {tps_train / args.nproc:,.0f} tokens/s per rank "
          f"= {loader_sps * args.tokens_per_step / tps_train:,.0f}x headroom")


if __name__ == "__main__":
    main()
