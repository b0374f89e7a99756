"""Peak memory per rank against sequence length, with and without Ulysses sequence parallelism (SP=2 vs
SP=1) and tiled loss, on 2 CPU ranks (gloo, ZeRO-3, activation checkpointing on); and the longest
sequence that fits a fixed per-rank memory cap in each configuration.

    .venv/bin/python tests/bench/bench_long_sequences.py [--cap-gib 3] [--max-len 131072] [--vocab 32000]

Baseline: SP=1 with the full logits (what a plain DeepSpeed ZeRO-3 loop does). Each configuration is one
2-rank launch of the real Trainer (`longmix train`'s code) that trains one optimizer step per length
(2K, 4K, ...; documents of 4,096 tokens packed into each row, per-document attention) and reads the
rank's peak RSS after it; lengths go up until a step's peak passes the cap. With SP=1 each rank trains
its own sequence (data parallel 2); with SP=2 both ranks share one. The model is Llama-shaped but tiny
(2 layers, hidden 128) with Llama's 32,000-token vocabulary, so the logits weigh what they do at scale.
Writes build/bench/long_sequences/{results.json,memory.png} and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

DOC_TOKENS = 4096
CONFIGS = {  # name: (sequence_parallel_size, tiled_loss)
    "SP=1, full logits (baseline)": (1, False),
    "SP=1, tiled loss": (1, True),
    "SP=2, full logits": (2, False),
    "SP=2, tiled loss": (2, True),
}


def model_config(vocab: int, max_len: int) -> dict:
    from helpers_train import TINY_LLAMA

    return {**TINY_LLAMA, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab,
            "max_position_embeddings": max_len}


def write_recipe(root: Path, sp: int, tiled: bool, args: argparse.Namespace) -> Path:
    """A recipe whose own manifest (256-token rows) only sets up the Trainer; the benchmark feeds it
    synthetic rows of each length. One sequence per rank per step, one micro-batch."""
    from helpers_train import make_manifest, make_tokenizer, tiny_recipe, write_train_recipe

    manifest = root / "d256" / "manifest.json"
    if not manifest.is_file():
        manifest = make_manifest(root / "d256", make_tokenizer(root / "tok"), 256, 20_000)
    dp = 2 // sp
    recipe = tiny_recipe(root / f"run-sp{sp}-{int(tiled)}", [{"manifest": str(manifest), "steps": 1}],
                         model={"config": model_config(args.vocab, args.max_len), "attn_implementation": "auto",
                                "activation_checkpointing": True, "tiled_loss": tiled, "loss_tile_tokens": 1024},
                         batch={"tokens_per_step": 256 * dp, "micro_batch_tokens": 256 // sp},
                         data={"holdout_sequences": 0}, parallel={"sequence_parallel_size": sp},
                         checkpoint={"every_steps": 1 << 30, "keep_last": 1})
    return write_train_recipe(root / f"sp{sp}-{int(tiled)}.yaml", **recipe)


def synthetic_step(L: int, dp: int, dp_rank: int, vocab: int, seed: int):
    """One step's batch for this rank: a row of L random tokens holding documents of DOC_TOKENS."""
    import numpy as np

    from longmix.train import masking
    from longmix.train.loader import MicroBatch, StepBatch

    lens = np.full(max(L // DOC_TOKENS, 1), min(L, DOC_TOKENS), dtype=np.int64)
    ids = np.random.default_rng([seed, L, dp_rank]).integers(3, vocab, size=(1, L))
    ids, pos, tgt = masking.build_arrays(ids, [lens], np.array([0]), True)
    predicted = masking.predicted_count(lens, 0, L, True) * dp
    pairs = masking.attention_pairs(lens, 0, L, True) * dp
    groups = np.full_like(tgt, -1)  # no breakdown: synthetic rows have no sources
    return StepBatch(0, [MicroBatch(np.array([0]), ids, pos, tgt, groups)], predicted, L * dp, pairs)


def worker(args: argparse.Namespace) -> None:
    """On every rank: a Trainer, then one step per length until the cap; rank 0 writes the peaks."""
    import torch
    import torch.distributed as dist

    from longmix.train.recipe import load_train_recipe
    from longmix.train.trainer import Trainer

    trainer = Trainer(load_train_recipe(args.recipe))
    lay = trainer.dims

    def peak_gib() -> float:
        t = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    rows = [{"seq_len": 0, "peak_gib": peak_gib()}]  # after setup: model, optimizer, libraries
    L = 2048
    while L <= args.max_len:
        loss, _ = trainer.train_step(synthetic_step(L, lay.dp, lay.dp_rank, args.vocab, 0))
        rows.append({"seq_len": L, "peak_gib": peak_gib(), "loss": loss})
        if trainer.rank == 0:
            print(f"  seq_len {L}: peak {rows[-1]['peak_gib']:.2f} GiB per rank", file=sys.stderr, flush=True)
        if rows[-1]["peak_gib"] > args.cap_gib:
            break
        L *= 2
    if trainer.rank == 0:
        Path(args.out).write_text(json.dumps(rows))


def run_config(recipe: Path, out: Path, args: argparse.Namespace) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           "--worker", "--recipe", str(recipe), "--out", str(out), "--cap-gib", str(args.cap_gib),
           "--max-len", str(args.max_len), "--vocab", str(args.vocab)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def longest_fit(rows: list[dict], cap: float) -> int:
    fits = [r["seq_len"] for r in rows[1:] if r["peak_gib"] <= cap]
    return max(fits, default=0)


def plot(results: dict[str, list[dict]], cap: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, rows in results.items():
        pts = rows[1:]
        ax.plot([r["seq_len"] for r in pts], [r["peak_gib"] for r in pts], marker="o", label=name)
    ax.axhline(cap, color="grey", linestyle="--", label=f"cap {cap:g} GiB")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("peak RSS per rank (GiB)")
    ax.set_title("Memory per rank vs sequence length (tiny Llama, 32K vocab, 2 CPU ranks)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap-gib", type=float, default=3.0, help="per-rank peak memory cap")
    ap.add_argument("--max-len", type=int, default=131072)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--out-dir", type=Path, default=REPO / "build" / "bench" / "long_sequences")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (sp, tiled) in CONFIGS.items():
            recipe = write_recipe(Path(tmp), sp, tiled, args)
            results[name] = run_config(recipe, Path(tmp) / "rows.json", args)
            print(f"{name}: " + ", ".join(f"{r['seq_len']}: {r['peak_gib']:.2f}" for r in results[name][1:]),
                  flush=True)
    (args.out_dir / "results.json").write_text(json.dumps({"cap_gib": args.cap_gib, "results": results}, indent=1))
    plot(results, args.cap_gib, args.out_dir / "memory.png")
    lengths = sorted({r["seq_len"] for rows in results.values() for r in rows[1:]})
    base = next(iter(results))
    print(f"\nPeak RSS per rank (GiB) on 2 CPU ranks; cap {args.cap_gib:g} GiB\n")
    print("| configuration | after setup | " + " | ".join(f"{L // 1024}K" for L in lengths)
          + " | longest under cap | vs baseline |")
    print("| --- " * (len(lengths) + 4) + "|")
    for name, rows in results.items():
        by_len = {r["seq_len"]: r["peak_gib"] for r in rows[1:]}
        cells = [f"{by_len[L]:.2f}" if L in by_len else "-" for L in lengths]
        fit, base_fit = longest_fit(rows, args.cap_gib), longest_fit(results[base], args.cap_gib)
        ratio = f"{fit / base_fit:.0f}x" if base_fit else "-"
        capped = rows[-1]["peak_gib"] <= args.cap_gib  # never passed the cap: the limit is --max-len
        fit_s = f">= {fit:,}" if capped else f"{fit:,}"
        print(f"| {name} | {rows[0]['peak_gib']:.2f} | " + " | ".join(cells) + f" | {fit_s} | "
              + (f">= {ratio}" if capped else ratio) + " |")
    print(f"\nwrote {args.out_dir / 'results.json'} and {args.out_dir / 'memory.png'}")


if __name__ == "__main__":
    main()
