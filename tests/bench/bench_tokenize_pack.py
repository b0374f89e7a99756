"""Tokenize-stage throughput against raw `tokenizers` encode_batch, the whole data path's time by stage,
and packing throughput and waste.

    python tests/bench/bench_tokenize_pack.py [--workers 2]

1. Two corpus shapes: the demo corpus (code, docs, legal, tests: a few huge files next to many short
   texts) and an ordinary one cut from the same text (tests/bench/ordinary_corpus.py: log-normal lengths,
   median ~1.5 KB). Each is ingested and deduplicated (not timed), then the tokenize stage runs with N
   workers (one tokenizer thread each), with the recipe's default shard size. The baseline encodes the
   same documents with `Tokenizer.encode_batch` on N threads (RAYON_NUM_THREADS=N) in a fresh process,
   reading the same shards. Both include reading the shards; only longmix writes its output.
   Then the whole flow (ingest -> pack) runs once more from scratch on each, and each stage's share of
   the time is printed.
2. Packing: every tokenized document once, with concat, best_fit and pad at 2,048 and 8,192 tokens:
   tokens/s, padding share, documents split and truncated.
3. Mix plan at scale: `plan_mix` on N synthetic documents (log-normal lengths, 4 sources, default
   buckets at seq_len 32,768, long-share targets), against the floor of sorting the same documents
   by (source, bucket) cell, which the plan needs anyway; seconds and peak RSS growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "bench" / "tokenize"

_RAW = """
import json, sys, time
import pyarrow.parquet as pq
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
files = json.loads(sys.argv[2])
out = {}
for name, fast, batch in (("encode_batch", False, 0), ("encode_batch_fast", True, 0),
                          ("encode_batch_fast x256", True, 256)):
    t0 = time.perf_counter()
    texts = [t for f in files for t in pq.read_table(f, columns=["text"]).column(0).to_pylist()]
    enc = tok.encode_batch_fast if fast else tok.encode_batch
    step = batch or len(texts)
    n = sum(len(e.ids) for i in range(0, len(texts), step) for e in enc(texts[i:i + step], add_special_tokens=False))
    out[name] = {"seconds": time.perf_counter() - t0, "tokens": n}
print(json.dumps(out))
"""

def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "longmix.cli", *args], check=True, capture_output=True)


def prepare(workers: int, shape: str) -> Path:
    """The corpus of one shape, its recipe, and its documents built up to near_dedup."""
    corpus, tok = WORK / "corpus", WORK / "tokenizer.json"
    if not (corpus / "corpus.json").is_file():
        _cli("demo-corpus", str(corpus))
    if not tok.is_file():
        _cli("tokenizer", "train", str(corpus / "code"), str(corpus / "docs"), "-o", str(tok), "--vocab-size", "8192")
    if shape == "demo":
        sources = [{"name": s, "paths": [str(corpus / s / "*.jsonl")]} for s in ("code", "docs", "legal", "tests")]
    else:
        from ordinary_corpus import build as build_ordinary

        ordinary = WORK / "ordinary"
        if not (ordinary / "corpus.json").is_file():
            build_ordinary(corpus, ordinary)
        sources = [{"name": "ordinary", "paths": [str(ordinary / "part-*.jsonl")]}]
    recipe = {"output": str(WORK / f"out-{shape}"), "seed": 1, "executor": {"workers": workers},
              "sources": sources, "tokenizer": {"path": str(tok)}, "seq_len": 2048}
    path = WORK / f"recipe-{shape}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _cli("build", str(path), "--until", "near_dedup")
    return path


def flow_bench(recipe: Path) -> list[tuple[str, float]]:
    """The whole flow from scratch: (stage, seconds) in flow order."""
    out = WORK / "flow"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    _cli("build", str(recipe), "-o", str(out))
    order = ["ingest", "exact_dedup", "near_dedup", "filter", "tokenize", "mix", "pack"]
    return [(s, json.loads((out / s / "report.json").read_text())["seconds"]) for s in order
            if (out / s / "report.json").is_file()]


def tokenize_bench(recipe: Path, workers: int) -> dict:
    out = Path(yaml.safe_load(recipe.read_text())["output"])
    for stage in ("tokenize", "mix", "pack"):
        subprocess.run(["rm", "-rf", str(out / stage)], check=True)
    t0 = time.perf_counter()
    _cli("build", str(recipe), "--until", "tokenize")
    wall = time.perf_counter() - t0
    report = json.loads((out / "tokenize" / "report.json").read_text())
    near = json.loads((out / "near_dedup" / "report.json").read_text())
    files = [str(out / "near_dedup" / o["path"]) for o in near["outputs"]]
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers), "TOKENIZERS_PARALLELISM": "true"}
    raw = json.loads(subprocess.run([sys.executable, "-c", _RAW, str(WORK / "tokenizer.json"), json.dumps(files)],
                                    check=True, capture_output=True, text=True, env=env).stdout)
    mb = report["bytes_in"] / 1e6
    best = min(raw, key=lambda k: raw[k]["seconds"])  # the strongest floor sets the ratio
    return {"docs": report["in"], "mb": mb, "tokens": report["tokens"], "stage_s": report["seconds"],
            "wall_s": wall, "raw": raw, "best": best, "raw_s": raw[best]["seconds"]}


def pack_bench() -> list[dict]:
    from longmix.data.pack.packing import PackStats, TokenBatch, pack
    from longmix.formats.ipc import read_ipc

    out = WORK / "out-demo" / "tokenize"
    report = json.loads((out / "report.json").read_text())
    arrays = [read_ipc(out / o["path"], ["input_ids"]).column(0).combine_chunks() for o in report["outputs"]]
    docs = [a.values.to_numpy()[a.offsets.to_numpy()[i]: a.offsets.to_numpy()[i + 1]]
            for a in arrays for i in range(len(a))]
    batch = TokenBatch.from_arrays(docs, np.zeros(len(docs), np.int16))
    rows = []
    for seq_len in (2048, 8192):
        for strategy in ("concat", "best_fit", "pad"):
            stats = PackStats(strategy=strategy, seq_len=seq_len)
            t0 = time.perf_counter()
            for _ in pack([batch], seq_len, strategy, pad_id=2, stats=stats):
                pass
            rows.append({"seq_len": seq_len, "strategy": strategy, "seconds": time.perf_counter() - t0,
                         **stats.to_dict()})
    return rows


def mix_plan_bench(n_docs: int) -> dict:
    import resource

    from longmix.data.mix.buckets import assign_buckets, default_edges
    from longmix.data.mix.plan import MixParams, SourceMix, plan_mix

    rng = np.random.default_rng(0)
    src = rng.integers(0, 4, n_docs).astype(np.int16)
    lens = np.minimum(rng.lognormal(6.5, 1.5, n_docs), 2_000_000).astype(np.int32) + 1
    edges = tuple(int(e) for e in default_edges(32768))
    params = MixParams(total_tokens=int(lens.sum(dtype=np.int64) // 2), edges=edges, seed=1, sources=tuple(
        SourceMix(name=f"s{i}", share=0.25, long_share=0.3 if i < 2 else None) for i in range(4)))
    t0 = time.perf_counter()
    np.argsort(src.astype(np.int64) * 5 + assign_buckets(lens, edges), kind="stable")
    floor = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    plan_mix(src, lens, params)
    seconds = time.perf_counter() - t0
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"docs": n_docs, "seconds": seconds, "floor_s": floor, "peak_growth_mb": grown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mix-docs", type=int, default=10_000_000, help="documents for the mix-plan benchmark")
    ap.add_argument("--shapes", default="demo,ordinary", help="corpus shapes: demo, ordinary")
    ap.add_argument("--flow", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the whole flow per corpus")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    flows = {}
    for shape in args.shapes.split(","):
        recipe = prepare(args.workers, shape)
        t = tokenize_bench(recipe, args.workers)
        print(f"tokenize, {shape} corpus: {t['docs']:,} docs, {t['mb']:.1f} MB, {t['tokens']:,} tokens, "
              f"{args.workers} workers/threads")
        print(f"  longmix tokenize stage  {t['stage_s']:6.2f} s  {t['tokens'] / t['stage_s'] / 1e6:6.2f} Mtok/s  "
              f"{t['mb'] / t['stage_s']:6.2f} MB/s  (whole command {t['wall_s']:.2f} s)")
        for name, r in t["raw"].items():
            print(f"  raw {name:<22} {r['seconds']:6.2f} s  {r['tokens'] / r['seconds'] / 1e6:6.2f} Mtok/s  "
                  f"{t['mb'] / r['seconds']:6.2f} MB/s")
        print(f"  ratio longmix / fastest raw ({t['best']}): {t['raw_s'] / t['stage_s']:.2f}x (goal >= 0.85x)")
        if args.flow:
            flows[shape] = flow_bench(recipe)
    for shape, stages in flows.items():
        total = sum(sec for _, sec in stages)
        print(f"whole flow, {shape} corpus: {total:.1f} s: " +
              ", ".join(f"{s} {sec:.1f} s ({sec / total:.0%})" for s, sec in stages))
    print("packing (every tokenized document once):")
    print(f"  {'seq_len':>7} {'strategy':>8} {'Mtok/s':>7} {'rows':>7} {'padding':>8} {'split':>6} {'truncated':>9}")
    for r in pack_bench():
        print(f"  {r['seq_len']:7d} {r['strategy']:>8} {r['doc_tokens'] / r['seconds'] / 1e6:7.1f} {r['rows']:7d} "
              f"{r['padding_share']:8.2%} {r['docs_split']:6d} {r['docs_truncated']:9d}")
    m = mix_plan_bench(args.mix_docs)
    print(f"mix plan: {m['docs']:,} documents in {m['seconds']:.2f} s (floor, sorting them by cell: "
          f"{m['floor_s']:.2f} s, ratio {m['seconds'] / m['floor_s']:.1f}x), "
          f"peak RSS grew {m['peak_growth_mb']:.0f} MB")


if __name__ == "__main__":
    main()
