"""Time and peak memory of the global steps at 10M and 100M documents, on the compact data they read.

- Near-dedup candidates and components, two ways in the same run. The baseline: the single-process step
  longmix ran before the split (every band grouped by `find_edges` in one process, then connected components
  over an n-sized graph). The split step as the stage runs it: edge tasks, one per band and key range as
  many as `--task-memory-gb` asks for (one task alone for its peak; all of them one after another in one
  process for their total time, writing the edge files), then the driver's part (the edge files, unique,
  and components over the candidate documents only). Inputs: band files like the signature tasks write
  (`n_shingles` + one uint64 key per band, 1M documents per file, 18 bands = the 0.8/128 default), 2% of
  documents near copies of another (they share each band's key with probability 0.5). Exact verification
  and the keep rule are tasks that load the shingle sets of their own pairs and components, so they grow
  with the duplicates (bench_near_dedup_quality.py / _memory.py measure them).
- Mix plan: `plan_mix` over per-document lengths (log-normal, median ~600 tokens) of 4 sources, with shares
  and long-text upsampling.

Each measurement runs in a fresh process; peak is that process's own high-water mark (VmHWM) minus its
resident size after imports. Floors in the same run: one band's keys sorted by numpy (what any grouping of
one band costs at least), and numpy's stable argsort of the documents' cell ids (the plan's one sort).

    python tests/bench/bench_global_steps_scaling.py [--sizes 10000000,100000000] [--bands 18]
        [--task-memory-gb 1] [--steps cluster,split,mix]
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
import json, sys, time
from pathlib import Path
import numpy as np
step, n, folder, bands, budget = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
import polars as pl, pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from longmix.data.dedup.near import band_edges, edge_task, key_ranges, read_edges
from longmix.data.mix.plan import MixParams, SourceMix, plan_mix
import psutil
def hwm_kb():
    # This process's own peak (VmHWM): ru_maxrss would carry over the parent's at fork + exec.
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
base = psutil.Process().memory_info().rss / 1024  # resident after imports, in KB like VmHWM
t = time.perf_counter()
out = {}
if step == "cluster":
    # The step before the split, as it ran on the driver: every band grouped in polars, then an n-sized graph.
    files = sorted(folder.glob("bands-*.parquet"))
    scan = pl.scan_parquet(files, row_index_name="doc").filter(pl.col("n_shingles") > 0)
    edges = pl.concat([scan.select("doc", f"b{j}").with_columns(root=pl.col("doc").min().over(f"b{j}"))
                       .filter(pl.col("doc") != pl.col("root")).select("doc", "root").collect()
                       for j in range(bands)]).unique().to_numpy().astype(np.int64)
    t_edges = time.perf_counter() - t
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    k, labels = connected_components(graph, directed=False)
    out = {"edges": int(len(edges)), "components": int(k), "edge_seconds": round(t_edges, 2)}
elif step in ("edge_task", "edge_tasks"):
    # The split step: one task (band 0, key range 0) alone for its peak; or every band's ranges one after
    # another in this process, writing the edge files the driver step reads (the total work of the tasks).
    files = sorted(folder.glob("bands-*.parquet"))
    parts = key_ranges(n, int(budget * 2**30))
    if step == "edge_task":
        out = {"edges": int(len(band_edges(files, 0, 0, parts))), "key_ranges": parts}
    else:
        (folder / "edges").mkdir(exist_ok=True)
        total = sum(edge_task(band_files=[str(f) for f in files], band=j, part=k, parts=parts,
                              out_path=str(folder / "edges" / f"b{j:03d}-{k:05d}.arrow"))["edges"]
                    for j in range(bands) for k in range(parts))
        out = {"edges": int(total), "tasks": bands * parts, "key_ranges": parts}
elif step == "driver":
    # The driver's part after the split: the edge files, unique, and components over the candidates only.
    edges = read_edges(sorted((folder / "edges").glob("*.arrow")))
    cand = np.unique(edges)
    a, b = np.searchsorted(cand, edges[:, 0]), np.searchsorted(cand, edges[:, 1])
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (a, b)), shape=(len(cand), len(cand)))
    k, labels = connected_components(graph, directed=False)
    out = {"edges": int(len(edges)), "candidates": int(len(cand)), "components": int(k)}
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
out["peak_mb"] = round((hwm_kb() - base) / 1024, 1)
print(json.dumps(out))
"""


def write_band_files(folder: Path, n: int, bands: int, dup_rate: float = 0.02, seed: int = 0) -> None:
    """n documents of band keys in files of PER_FILE rows; a near copy shares each band's key with its
    original (an earlier document of the same file) with probability 0.5."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for f, start in enumerate(range(0, n, PER_FILE)):
        m = min(PER_FILE, n - start)
        keys = rng.integers(0, 2**64 - 1, size=(m, bands), dtype=np.uint64, endpoint=True)  # fmix64: all 64 bits
        dups = np.flatnonzero(rng.random(m) < dup_rate)
        dups = dups[dups > 0]
        orig = (rng.random(len(dups)) * dups).astype(np.int64)
        share = rng.random((len(dups), bands)) < 0.5
        keys[dups] = np.where(share, keys[orig], keys[dups])
        cols = {"n_shingles": pa.array(np.full(m, 100, np.int32))}
        cols.update({f"b{j}": pa.array(keys[:, j]) for j in range(bands)})
        pq.write_table(pa.table(cols), folder / f"bands-{f:05d}.parquet", compression="none")


def measure(step: str, n: int, folder: Path, bands: int, budget_gb: float = 1.0) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, step, str(n), str(folder), str(bands), str(budget_gb)],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000000,100000000")
    ap.add_argument("--bands", type=int, default=18)
    ap.add_argument("--work", type=Path, default=Path("build/bench/global-scaling"))
    ap.add_argument("--task-memory-gb", type=float, default=1.0, help="the near-dedup task budget that splits bands")
    ap.add_argument("--steps", default="cluster,split,mix", help="which measurements: cluster (the single-process "
                    "step, the baseline), split (edge tasks + driver), mix")
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"u64-n{n}"
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            write_band_files(folder, n, args.bands)
            (folder / "done").write_text("ok\n")
        steps, row = args.steps.split(","), {"docs": n}
        floor = measure("sort_floor", n, folder, args.bands)
        row["sort_one_band"] = floor
        if "cluster" in steps:  # the baseline: every band and the n-sized components in one process
            row["cluster"] = c = measure("cluster", n, folder, args.bands)
            print(f"{n:>13,} docs  single-process clustering {c['seconds']:7.1f} s {c['peak_mb']:8.0f} MB "
                  f"({c['edges']:,} candidate pairs; {c['seconds'] / (args.bands * floor['seconds']):.2f}x "
                  f"{args.bands} bands' floor of one sort each)", flush=True)
        if "split" in steps:
            row["edge_task"] = t = measure("edge_task", n, folder, args.bands, args.task_memory_gb)
            row["edge_tasks"] = ts = measure("edge_tasks", n, folder, args.bands, args.task_memory_gb)
            row["driver"] = d = measure("driver", n, folder, args.bands)
            base = row.get("cluster")
            vs = (f"; tasks + driver {(ts['seconds'] + d['seconds']) / base['seconds']:.2f}x the single-process "
                  f"step's time, driver {d['peak_mb'] / base['peak_mb']:.2f}x its peak") if base else ""
            print(f"{n:>13,} docs  split: {ts['tasks']} edge tasks ({t['key_ranges']} key ranges a band), one task "
                  f"{t['seconds']:.1f} s {t['peak_mb']:.0f} MB (budget {args.task_memory_gb * 1024:.0f} MB), all "
                  f"{ts['seconds']:.1f} s in one process; driver {d['seconds']:.1f} s {d['peak_mb']:.0f} MB over "
                  f"{d['candidates']:,} candidates{vs}", flush=True)
        if "mix" in steps:
            row["mix"] = mix = measure("mix", n, folder, args.bands)
            row["argsort_cells"] = mix_floor = measure("argsort_floor", n, folder, args.bands)
            print(f"{n:>13,} docs  mix plan {mix['seconds']:6.1f} s {mix['peak_mb']:7.0f} MB "
                  f"({mix['seconds'] / mix_floor['seconds']:.1f}x one stable argsort)", flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        for key in ("cluster", "driver", "mix"):
            if key not in a or key not in b:
                continue
            per_doc_mb = (b[key]["peak_mb"] - a[key]["peak_mb"]) / (b["docs"] - a["docs"])
            per_doc_s = (b[key]["seconds"] - a[key]["seconds"]) / (b["docs"] - a["docs"])
            for big in (10**9, 10**10):
                print(f"{key}: at {big:,} docs ~{b[key]['peak_mb'] + per_doc_mb * (big - b['docs']):,.0f} MB, "
                      f"~{(b[key]['seconds'] + per_doc_s * (big - b['docs'])) / 60:,.0f} min "
                      f"(linear from the last two sizes: {per_doc_mb * 1e6:.1f} bytes/doc)")


if __name__ == "__main__":
    main()
