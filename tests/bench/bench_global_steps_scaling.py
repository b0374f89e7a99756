"""Time and peak memory of the two global steps at 10M and 100M documents, on the compact data they read.

- Near-dedup clustering: band files like the signature tasks write (`n_shingles` + one uint64 key per band,
  1M documents per file, 18 bands = the 0.8/128 default), 2% of documents near copies of another (they share
  each band's key with probability 0.5), then `find_edges` (polars, band by band) and connected components
  (scipy) over the candidate pairs, as longmix's cluster step runs them. Exact verification is left out: it
  reads shingle sets of candidate documents only, so it grows with the candidates, not the corpus
  (bench_near_dedup_quality.py / _memory.py measure it).
- Mix plan: `plan_mix` over per-document lengths (log-normal, median ~600 tokens) of 4 sources, with shares
  and long-text upsampling.

Each measurement runs in a fresh process; peak RSS is that process's maximum minus its resident size after
imports.
Baselines in the same run (the raw library floor): one band's keys sorted by numpy (what any grouping of
one band costs at least), and numpy's stable argsort of the documents' cell ids (what the plan's one sort
costs).

    python tests/bench/bench_global_steps_scaling.py [--sizes 10000000,100000000] [--bands 18]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PER_FILE = 1_000_000

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
step, n, folder, bands = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
import polars as pl, pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from longmix.data.dedup.near import find_edges
from longmix.data.mix.plan import MixParams, SourceMix, plan_mix
import psutil
base = psutil.Process().memory_info().rss / 1024  # resident after imports, in KB like ru_maxrss
t = time.perf_counter()
out = {}
if step == "cluster":
    files = sorted(folder.glob("bands-*.parquet"))
    edges = find_edges(files, bands)
    t_edges = time.perf_counter() - t
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    k, labels = connected_components(graph, directed=False)
    out = {"edges": int(len(edges)), "components": int(k), "edge_seconds": round(t_edges, 2)}
elif step == "sort_floor":
    keys = pq.read_table(sorted(folder.glob("bands-*.parquet")), columns=["b0"]).column(0).to_numpy()
    t = time.perf_counter()
    np.sort(keys)
elif step == "mix":
    rng = np.random.default_rng(0)
    src = rng.integers(0, 4, n).astype(np.int16)
    lens = np.minimum(rng.lognormal(6.4, 1.3, n), 2_000_000).astype(np.int32)
    t = time.perf_counter()
    params = MixParams(total_tokens=int(lens.sum() // 2), edges=(1024, 4096, 16384, 65536), seed=1, sources=tuple(
        SourceMix(name=f"s{i}", share=0.25, long_share=0.3) for i in range(4)))
    plan = plan_mix(src, lens, params)
    out = {"tokens": int(plan.report.achieved_tokens.sum())}
elif step == "argsort_floor":
    rng = np.random.default_rng(0)
    cell = (rng.integers(0, 4, n) * 5 + rng.integers(0, 5, n)).astype(np.int64)
    t = time.perf_counter()
    np.argsort(cell, kind="stable")
out["seconds"] = round(time.perf_counter() - t, 2)
out["peak_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, 1)
print(json.dumps(out))
"""


def write_band_files(folder: Path, n: int, bands: int, dup_rate: float = 0.02, seed: int = 0) -> None:
    """n documents of band keys in files of PER_FILE rows; a near copy shares each band's key with its
    original (an earlier document of the same file) with probability 0.5."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for f, start in enumerate(range(0, n, PER_FILE)):
        m = min(PER_FILE, n - start)
        keys = rng.integers(0, 2**63, size=(m, bands), dtype=np.int64).view(np.uint64)
        dups = np.flatnonzero(rng.random(m) < dup_rate)
        dups = dups[dups > 0]
        orig = (rng.random(len(dups)) * dups).astype(np.int64)
        share = rng.random((len(dups), bands)) < 0.5
        keys[dups] = np.where(share, keys[orig], keys[dups])
        cols = {"n_shingles": pa.array(np.full(m, 100, np.int32))}
        cols.update({f"b{j}": pa.array(keys[:, j]) for j in range(bands)})
        pq.write_table(pa.table(cols), folder / f"bands-{f:05d}.parquet", compression="none")


def measure(step: str, n: int, folder: Path, bands: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, step, str(n), str(folder), str(bands)],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000000,100000000")
    ap.add_argument("--bands", type=int, default=18)
    ap.add_argument("--work", type=Path, default=Path("build/bench/global-scaling"))
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"n{n}"
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            write_band_files(folder, n, args.bands)
            (folder / "done").write_text("ok\n")
        cluster, floor = measure("cluster", n, folder, args.bands), measure("sort_floor", n, folder, args.bands)
        mix, mix_floor = measure("mix", n, folder, args.bands), measure("argsort_floor", n, folder, args.bands)
        row = {"docs": n, "cluster": cluster, "sort_one_band": floor, "mix": mix, "argsort_cells": mix_floor}
        rows.append(row)
        print(json.dumps(row), flush=True)
        print(f"{n:>13,} docs  cluster {cluster['seconds']:7.1f} s {cluster['peak_mb']:8.0f} MB "
              f"({cluster['edges']:,} candidate pairs; {cluster['seconds'] / floor['seconds']:.1f}x "
              f"{args.bands} bands' floor of one sort each: "
              f"{cluster['seconds'] / (args.bands * floor['seconds']):.2f}x)"
              f" | mix plan {mix['seconds']:6.1f} s {mix['peak_mb']:7.0f} MB "
              f"({mix['seconds'] / mix_floor['seconds']:.1f}x one stable argsort)", flush=True)
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        for key in ("cluster", "mix"):
            per_doc_mb = (b[key]["peak_mb"] - a[key]["peak_mb"]) / (b["docs"] - a["docs"])
            per_doc_s = (b[key]["seconds"] - a[key]["seconds"]) / (b["docs"] - a["docs"])
            for big in (10**9, 10**10):
                print(f"{key}: at {big:,} docs ~{b[key]['peak_mb'] + per_doc_mb * (big - b['docs']):,.0f} MB, "
                      f"~{(b[key]['seconds'] + per_doc_s * (big - b['docs'])) / 60:,.0f} min "
                      f"(linear from the last two sizes: {per_doc_mb * 1e6:.1f} bytes/doc)")


if __name__ == "__main__":
    main()
