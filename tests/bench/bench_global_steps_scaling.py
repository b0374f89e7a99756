"""Time and peak memory of the global steps at 10M and 100M documents, on the compact data they read,
against the single-process steps longmix ran before they were split, in the same run.

- Near dedup. The baseline: every band grouped in one process, then connected components over an
  n-sized graph. The split, as the stage runs it: edge tasks, one per band and key range as many as
  `--task-memory-gb` asks for (one task alone for its peak; all of them one after another in one process
  for their total time), then the driver of the later steps (`clusters.py`, `components.py`): unique pairs
  per document range and the component rounds, each task in a fresh process (BenchJob), the driver's own
  peak measured apart. Inputs: band files like the signature tasks write (`n_shingles` + one uint64 key per
  band, 1M documents per file, 18 bands = the 0.8/128 default), 2% of documents near copies of another
  (they share each band's key with probability 0.5). The band files carry no shingle sets, so a stand-in
  verify task passes every candidate pair as verified; exact verification and the keep rule load the sets
  of their own pairs and components (bench_near_dedup_quality.py / _memory.py measure them).
- Mix plan. The baseline: `plan_mix` over per-document lengths (log-normal, median ~600 tokens) of 4
  sources, with shares and long-text upsampling, in one process. The tasks: `plan_with_tasks` (the mix
  stage's driver) over tokenized-like shards of 5M documents, each task in a fresh process.

Each measurement runs in a fresh process; peak is that process's own high-water mark (VmHWM) minus its
resident size after imports. Floors in the same run: one band's keys sorted by numpy (what any grouping of
one band costs at least), and numpy's stable argsort of the documents' cell ids (the plan's one sort).

    python tests/bench/bench_global_steps_scaling.py [--sizes 10000000,100000000] [--bands 18]
        [--task-memory-gb 1] [--steps cluster,split,mix]
"""

from __future__ import annotations

import argparse
import json
import os
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
from longmix.data.dedup.near import band_edges, edge_task, key_ranges
from longmix.data.mix.plan import plan_mix
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
elif step == "sort_floor":
    keys = pq.read_table(sorted(folder.glob("bands-*.parquet")), columns=["b0"]).column(0).to_numpy()
    t = time.perf_counter()
    np.sort(keys)
elif step == "mix":
    sys.path.insert(0, sys.argv[6])
    from bench_global_steps_scaling import mix_params, mix_sources
    src, lens = mix_sources(n)
    t = time.perf_counter()
    plan = plan_mix(src, lens, mix_params(int(lens.astype(np.int64).sum())))
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


def _hwm_kb() -> int:
    # This process's own peak (VmHWM): ru_maxrss would carry over the parent's at fork + exec.
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))


def _rss_kb() -> int:
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS:"))


def _run_measured(task: tuple) -> tuple[dict, float, float]:
    """One task in a fresh (spawned) process: its stats, seconds, and peak MB above its resident size at start."""
    import time

    _, fn, kwargs = task
    base, t = _rss_kb(), time.perf_counter()
    stats = fn(**kwargs)
    return stats, time.perf_counter() - t, (_hwm_kb() - base) / 1024


def verify_all(*, pairs_path: str, bounds: list[int], edges_path: str) -> dict:
    """The bench's stand-in for a verify task (band files carry no shingle sets): every candidate pair is
    taken as verified and routed on to the components, as verify_task routes its verified pairs."""
    from longmix.data.dedup.components import route_edges
    from longmix.formats.ipc import read_ipc

    t = read_ipc(Path(pairs_path))
    return {"offsets": route_edges(Path(edges_path), t.column("doc").to_numpy(), t.column("root").to_numpy(),
                                   np.asarray(bounds, dtype=np.int64))}


class BenchJob:
    """The part of a StageJob the near-dedup steps use, running each task in a fresh process (one at a
    time), so this process is what the driver holds and each task's peak is its own."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.tasks: dict[str, list[tuple[float, float]]] = {}

    def reads(self, path: Path | str) -> str:
        return str(path)

    def path(self, *parts: str) -> str:
        out = self.dir.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        return str(out)

    def task(self, task_id: str, fn, cost: int = 0, **kwargs) -> tuple:
        return task_id, fn, kwargs

    def run_tasks(self, tasks: list[tuple], label: str | None = None, counted: bool = True) -> list[dict]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        workers = int(os.environ.get("BENCH_WORKERS", "1"))  # side by side on this machine's cores
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 max_tasks_per_child=1) as pool:
            done = list(pool.map(_run_measured, tasks))
        for (task_id, _, _), (_, sec, mb) in zip(tasks, done, strict=True):
            kind = "-".join(p for p in task_id.split("-") if not p[:1].isdigit())  # cc-000-large-00001of00002: cc-large
            self.tasks.setdefault(kind, []).append((sec, mb))
        return [stats for stats, _, _ in done]


class RayBenchJob(BenchJob):
    """BenchJob on a Ray cluster: every task a Ray task asking for 1 CPU and the task memory (nodes take as
    many as their memory admits), in a fresh worker process (max_calls=1) so its peak is its own; tasks of
    one step run side by side, and the step's wall time is what the driver waits."""

    def __init__(self, folder: Path, address: str, memory_bytes: int) -> None:
        import ray

        super().__init__(folder)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        self.remote = ray.remote(max_calls=1)(_run_measured)
        self.memory = memory_bytes
        self.walls: dict[str, float] = {}

    def run_tasks(self, tasks: list[tuple], label: str | None = None, counted: bool = True) -> list[dict]:
        import time

        import ray

        t = time.perf_counter()
        done = ray.get([self.remote.options(num_cpus=1, memory=self.memory).remote(task) for task in tasks])
        for (task_id, _, _), (_, sec, mb) in zip(tasks, done, strict=True):
            kind = "-".join(p for p in task_id.split("-") if not p[:1].isdigit())
            self.tasks.setdefault(kind, []).append((sec, mb))
        kind = "-".join(p for p in tasks[0][0].split("-") if not p[:1].isdigit()) if tasks else "none"
        self.walls[kind] = self.walls.get(kind, 0.0) + time.perf_counter() - t
        return [stats for stats, _, _ in done]


def _fresh(work: Path, job: BenchJob | None) -> BenchJob:
    """`job` (or a new local one) writing into an emptied `work` folder."""
    shutil.rmtree(work, ignore_errors=True)
    job = job or BenchJob(work)
    job.dir = work
    return job


def on_cluster(n: int, folder: Path, bands: int, budget_gb: float, address: str) -> dict:
    """Both global steps end to end on a Ray cluster, as the stages run them: near dedup's edge tasks, unique
    pairs, stand-in verification and component rounds (driver()), then the mix (mix_driver()); the driver's
    peak (its Ray client included) and each kind of task's count, summed seconds, largest peak, wall time."""
    import time

    from longmix.data.dedup.near import edge_task, key_ranges

    base, t0 = _rss_kb(), time.perf_counter()
    job = RayBenchJob(folder / "cluster-run", address, int(budget_gb * 2**30))
    files = [str(f) for f in sorted(folder.glob("bands-*.parquet"))]
    parts = key_ranges(n, int(budget_gb * 2**30))
    job.run_tasks([job.task(f"edges-{j:03d}-{k:05d}", edge_task, band_files=files, band=j, part=k, parts=parts,
                            out_path=job.path("edges", f"b{j:03d}-{k:05d}.arrow"))
                   for j in range(bands) for k in range(parts)])
    near = driver(n, folder, budget_gb, job=job, edges=folder / "cluster-run" / "edges")
    t_near = time.perf_counter() - t0
    mix = mix_driver(n, folder, job=job)
    out = {"near_dedup_seconds": round(t_near, 2), "mix_seconds": round(time.perf_counter() - t0 - t_near, 2),
           "ranges": near["ranges"], "component_rounds": near["component_rounds"], "mix_tokens": mix["tokens"],
           "peak_mb": round((_hwm_kb() - base) / 1024, 1)}
    out["tasks"] = {kind: {"count": len(v), "seconds": round(sum(x for x, _ in v), 2),
                           "peak_mb_max": round(max(m for _, m in v), 1), "wall": round(job.walls.get(kind, 0), 2)}
                    for kind, v in job.tasks.items()}
    return out


def driver(n: int, folder: Path, budget_gb: float, job: BenchJob | None = None, edges: Path | None = None) -> dict:
    """The driver of the split steps that depend on the pairs alone, as the stage runs them: unique pairs per
    document range, then the component rounds (every candidate pair taken as verified); each task in its own
    process. Returns the driver's and each kind of task's time and peak."""
    import time

    from longmix.data.dedup.clusters import doc_ranges, pairs_task
    from longmix.data.dedup.components import components_with_tasks
    from longmix.formats.routed import range_bounds

    base, t0 = _rss_kb(), time.perf_counter()
    work = folder / "split"
    job = _fresh(work, job)
    edge_files = sorted((edges or folder / "edges").glob("*.arrow"))
    found = sum(pa.ipc.open_file(pa.memory_map(str(f))).read_all().num_rows for f in edge_files)
    ranges = doc_ranges(found, int(budget_gb * 2**30))
    bounds = range_bounds(n, ranges)
    names = [f"{r:05d}of{ranges:05d}" for r in range(ranges)]
    pairs = job.run_tasks([job.task(f"pairs-{nm}", pairs_task, edge_files=[str(f) for f in edge_files],
                                    lo=int(bounds[r]), hi=int(bounds[r + 1]), out_path=job.path("pairs", f"{nm}.arrow"))
                           for r, nm in enumerate(names)])
    verified = job.run_tasks([job.task(f"verify-{nm}", verify_all, pairs_path=str(work / "pairs" / f"{nm}.arrow"),
                                       bounds=bounds.tolist(), edges_path=job.path("verify", f"{nm}.arrow"))
                              for nm in names])
    _, cc = components_with_tasks(job, [work / "verify" / f"{nm}.arrow" for nm in names],
                                  [v["offsets"] for v in verified], bounds)
    out = {"edges_found": found, "ranges": ranges, "pairs": sum(p["pairs"] for p in pairs), **cc,
           "seconds": round(time.perf_counter() - t0, 2), "peak_mb": round((_hwm_kb() - base) / 1024, 1)}
    out["tasks"] = {kind: {"count": len(v), "seconds": round(sum(x for x, _ in v), 2),
                           "peak_mb_max": round(max(m for _, m in v), 1)} for kind, v in job.tasks.items()}
    return out


def mix_sources(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The bench's corpus for the mix: 4 sources, log-normal lengths (median ~600 tokens)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, n).astype(np.int16), np.minimum(rng.lognormal(6.4, 1.3, n), 2_000_000).astype(np.int32)


def mix_params(lens_sum: int):
    from longmix.data.mix.plan import MixParams, SourceMix

    return MixParams(total_tokens=int(lens_sum // 2), edges=(1024, 4096, 16384, 65536), seed=1, sources=tuple(
        SourceMix(name=f"s{i}", share=0.25, long_share=0.3) for i in range(4)))


def write_mix_shards(n: int, shards: Path) -> None:
    """Tokenized-like shards of 5M documents (source, n_tokens) and the corpus's token sum, made by the bench
    itself, not the measured driver (its peak must not include making them)."""
    if not (shards / "done").is_file():
        shutil.rmtree(shards, ignore_errors=True)
        shards.mkdir(parents=True)
        src, lens = mix_sources(n)
        names = pa.array([f"s{i}" for i in range(4)])
        for k, start in enumerate(range(0, n, 5_000_000)):
            part = slice(start, min(start + 5_000_000, n))
            table = pa.table({"source": names.take(pa.array(src[part])), "n_tokens": lens[part]})
            with pa.OSFile(str(shards / f"{k:05d}.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table, max_chunksize=table.num_rows)
        (shards / "done").write_text(f"{int(lens.astype(np.int64).sum())}\n")  # the budget's base, kept


def mix_driver(n: int, folder: Path, job: BenchJob | None = None) -> dict:
    """The mix stage's driver (`plan_with_tasks`) over the shards of write_mix_shards, each task in its own
    process; the same corpus and parameters as the single-process `mix` step."""
    import time

    from longmix.data.mix.tasks import plan_with_tasks

    shards = folder / "mix-shards"
    lens_sum = int((shards / "done").read_text())
    base, t0 = _rss_kb(), time.perf_counter()
    work = folder / "mix-split"
    job = _fresh(work, job)
    report, _, split = plan_with_tasks(job, sorted(shards.glob("*.arrow")), None, [f"s{i}" for i in range(4)],
                                       mix_params(lens_sum))
    out = {"tokens": int(report.achieved_tokens.sum()), **split, "seconds": round(time.perf_counter() - t0, 2),
           "peak_mb": round((_hwm_kb() - base) / 1024, 1)}
    out["tasks"] = {kind: {"count": len(v), "seconds": round(sum(x for x, _ in v), 2),
                           "peak_mb_max": round(max(m for _, m in v), 1)} for kind, v in job.tasks.items()}
    return out


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


def measure(step: str, n: int, folder: Path, bands: int, budget_gb: float = 1.0, address: str = "") -> dict:
    child = [__file__, "--driver-child"] if step in ("driver", "mix_tasks", "on_cluster") else ["-c", _CHILD]
    done = subprocess.run([sys.executable, *child, step, str(n), str(folder), str(bands), str(budget_gb),
                           str(Path(__file__).parent), address],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin",
                                                               "HOME": os.environ.get("HOME", "/tmp"),
                                                               "BENCH_WORKERS": str(getattr(measure, "workers", 1)),
                                                               "RAY_DISABLE_USAGE_STATS": "1"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def ray_run(n: int, folder: Path, args: argparse.Namespace) -> dict:
    """Start a local Ray cluster (a head and more nodes, each its own raylet with 1 CPU and the node memory),
    run both steps on it from a fresh driver process, stop it."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    write_mix_shards(n, folder / "mix-shards")
    node = {"num_cpus": 1, "memory": int(args.node_memory_gb * 2**30), "object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(args.ray_nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes(timeout=600)
        return measure("on_cluster", n, folder, args.bands, args.task_memory_gb, cluster.address)
    finally:
        cluster.shutdown()


def main() -> None:
    if sys.argv[1:2] == ["--driver-child"]:
        step, n, folder, bands, budget = sys.argv[2:7]
        if step == "on_cluster":
            out = on_cluster(int(n), Path(folder), int(bands), float(budget), sys.argv[8])
        else:
            out = driver(int(n), Path(folder), float(budget)) if step == "driver" else mix_driver(int(n), Path(folder))
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000000,100000000")
    ap.add_argument("--bands", type=int, default=18)
    ap.add_argument("--work", type=Path, default=Path("build/bench/global-scaling"))
    ap.add_argument("--task-memory-gb", type=float, default=1.0, help="the near-dedup task budget that splits bands")
    ap.add_argument("--steps", default="cluster,split,mix", help="which measurements: cluster (the single-process "
                    "step, the baseline), split (edge tasks + driver), mix, ray (both steps on a local Ray cluster)")
    ap.add_argument("--workers", type=int, default=1, help="split and mix: tasks run this many at a time "
                    "(1: one after another, their summed time; 2: side by side on 2 cores, the wall time)")
    ap.add_argument("--ray-nodes", type=int, default=3, help="ray: nodes of the local cluster (1 CPU each)")
    ap.add_argument("--node-memory-gb", type=float, default=2.0, help="ray: each node's memory for tasks")
    args = ap.parse_args()
    measure.workers = args.workers  # type: ignore[attr-defined]
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
            row["driver"] = d = measure("driver", n, folder, args.bands, args.task_memory_gb)
            work = sum(k["seconds"] for k in d["tasks"].values())
            base = row.get("cluster")
            vs = (f"; all tasks {(ts['seconds'] + work) / base['seconds']:.2f}x the single-process step's time, "
                  f"driver {d['peak_mb'] / base['peak_mb']:.3f}x its peak") if base else ""
            print(f"{n:>13,} docs  split: {ts['tasks']} edge tasks ({t['key_ranges']} key ranges a band), one task "
                  f"{t['seconds']:.1f} s {t['peak_mb']:.0f} MB (budget {args.task_memory_gb * 1024:.0f} MB), all "
                  f"{ts['seconds']:.1f} s; then {d['ranges']} document ranges, {d['component_rounds']} component "
                  f"rounds: " + ", ".join(f"{k} x{v['count']} {v['seconds']:.1f} s (max {v['peak_mb_max']:.0f} MB)"
                                          for k, v in d["tasks"].items())
                  + f"; driver {d['seconds']:.1f} s wall, {d['peak_mb']:.0f} MB{vs}", flush=True)
        if "mix" in steps:
            row["mix"] = mix = measure("mix", n, folder, args.bands)
            row["argsort_cells"] = mix_floor = measure("argsort_floor", n, folder, args.bands)
            print(f"{n:>13,} docs  mix plan in one process (baseline) {mix['seconds']:6.1f} s {mix['peak_mb']:7.0f} MB "
                  f"({mix['seconds'] / mix_floor['seconds']:.1f}x one stable argsort)", flush=True)
            write_mix_shards(n, folder / "mix-shards")
            row["mix_tasks"] = mt = measure("mix_tasks", n, folder, args.bands)
            work = sum(k["seconds"] for k in mt["tasks"].values())
            same = "same achieved tokens" if mt["tokens"] == mix["tokens"] else f"tokens DIFFER: {mt['tokens']}"
            head = f"{n:>13,} docs  mix plan as tasks ({args.workers} at a time, {mt['seconds']:.1f} s wall): "
            print(head + ", ".join(
                f"{k} x{v['count']} {v['seconds']:.1f} s (max {v['peak_mb_max']:.0f} MB)"
                for k, v in mt["tasks"].items())
                + f"; largest cell {mt['largest_cell_docs']:,} documents; all tasks {work:.1f} s "
                f"({work / mix['seconds']:.2f}x the baseline's time), driver {mt['peak_mb']:.0f} MB "
                f"({mt['peak_mb'] / mix['peak_mb']:.3f}x its peak); {same}", flush=True)
        if "ray" in steps:
            row["ray"] = r = ray_run(n, folder, args)
            base = row.get("cluster", {}).get("seconds", 0) + row.get("mix", {}).get("seconds", 0)
            vs = f" ({(r['near_dedup_seconds'] + r['mix_seconds']) / base:.2f}x the baselines' time)" if base else ""
            print(f"{n:>13,} docs  on a Ray cluster of {args.ray_nodes} nodes x 1 CPU, {args.node_memory_gb:g} GiB "
                  f"(tasks of {args.task_memory_gb:g} GiB): near dedup {r['near_dedup_seconds']:.1f} s, mix "
                  f"{r['mix_seconds']:.1f} s wall{vs}; driver {r['peak_mb']:.0f} MB; " + ", ".join(
                      f"{k} x{v['count']} {v['wall']:.1f} s wall (max {v['peak_mb_max']:.0f} MB)"
                      for k, v in r["tasks"].items()), flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        for key in ("cluster", "driver", "mix", "mix_tasks"):
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
