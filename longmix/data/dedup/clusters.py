"""Near-dedup steps 3 and 4 as tasks: exact verification of the candidate pairs, and the greedy keep rule per
component, each split so one task loads the shingle sets of its own documents only.

The driver keeps what grows with the duplicates, never with the corpus: the candidate pairs (16 bytes each),
a bool per pair, the component labels of the candidate documents (connected components over them only),
and the id, source and length of documents in components of two or more. The sets, which are most of the
memory (4 bytes per distinct shingle of a candidate), are loaded by tasks:

- **verify tasks** take consecutive slices of the candidate pairs, as many pairs as the task memory holds
  at the corpus's mean set size, and write whether each pair reaches the threshold;
- **greedy tasks** take whole components, best member first, as many as the task memory holds (a component
  larger than that goes alone: a component cannot be split without changing its decisions), with their
  verified pairs, and write each member's kept document.

Components are independent in the greedy rule (verify.greedy_representatives decides each on its own), and a
pair's Jaccard does not depend on the other pairs, so any split gives the decisions of one task, byte for
byte (tests/integration/data/test_near_dedup_split.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from longmix.data.dedup.verify import greedy_representatives, jaccard, load_sets
from longmix.formats.ipc import read_ipc, write_ipc
from longmix.pipeline.stage import StageJob

PAIR_BYTES = 64  # one candidate pair in a task: the pair, its positions, the result and the merge's work


def mean_set_bytes(set_files: list[Path], docs: int) -> float:
    """Shingle-set bytes of an average document, from the set files' sizes (values and offsets)."""
    return sum(f.stat().st_size for f in set_files) / max(docs, 1)


def verify_task(*, set_files: list[str], pairs_path: str, start: int, stop: int, threshold: float,
                out_path: str) -> dict[str, Any]:
    """Pairs start..stop of the candidate pairs file: whether each one's exact Jaccard reaches the threshold."""
    t = read_ipc(Path(pairs_path)).slice(start, stop - start)
    a, b = t.column("doc").to_numpy(), t.column("root").to_numpy()
    docs = np.unique(np.concatenate([a, b]))
    sets = load_sets([Path(f) for f in set_files], docs)
    ok = jaccard(sets, np.searchsorted(docs, a), np.searchsorted(docs, b)) >= threshold
    write_ipc(Path(out_path), pa.table({"ok": ok}))
    return {"pairs": int(len(a)), "docs": int(len(docs)), "set_bytes": int(sets.nbytes)}


def greedy_task(*, set_files: list[str], members_path: str, pairs_path: str, threshold: float,
                out_path: str) -> dict[str, Any]:
    """Whole components (members best first, with their verified-or-not candidate pairs): each member's kept
    document, and the pairs compared beyond the known ones."""
    m = read_ipc(Path(members_path))
    docs, component = m.column("doc").to_numpy(), m.column("component").to_numpy()
    p = read_ipc(Path(pairs_path))
    sorted_docs = np.unique(docs)
    sets = load_sets([Path(f) for f in set_files], sorted_docs)
    pos = lambda d: np.searchsorted(sorted_docs, d)  # noqa: E731
    rep, compared = greedy_representatives(component, pos(docs), sets, threshold, pos(p.column("a").to_numpy()),
                                           pos(p.column("b").to_numpy()), p.column("close").to_numpy())
    write_ipc(Path(out_path), pa.table({"kept_doc": docs[rep]}))
    return {"members": int(len(docs)), "compared": int(compared), "set_bytes": int(sets.nbytes)}


def _slices(weights: np.ndarray, budget: float) -> list[tuple[int, int]]:
    """Consecutive [start, stop) slices whose summed weight stays within budget (one item at least each)."""
    out, start, acc = [], 0, 0.0
    for i, w in enumerate(weights.tolist()):
        if i > start and acc + w > budget:
            out.append((start, i))
            start, acc = i, 0.0
        acc += w
    if start < len(weights):
        out.append((start, len(weights)))
    return out


def verify_pairs(job: StageJob, edges: np.ndarray, set_files: list[Path], threshold: float, per_set: float,
                 memory: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Whether each candidate pair reaches the threshold, as verify tasks."""
    pairs = job.dir / "verify" / "pairs.arrow"
    write_ipc(pairs, pa.table({"doc": edges[:, 0], "root": edges[:, 1]}))
    per_task = max(1, int(memory // (2 * per_set + PAIR_BYTES)))
    bounds = [(i, min(i + per_task, len(edges))) for i in range(0, len(edges), per_task)]
    reads = [job.reads(f) for f in set_files]
    tasks = [job.task(f"verify-{k:05d}of{len(bounds):05d}", verify_task, cost=hi - lo, set_files=reads,
                      pairs_path=job.reads(pairs), start=lo, stop=hi, threshold=threshold,
                      out_path=job.path("verify", f"ok-{k:05d}of{len(bounds):05d}.arrow"))
             for k, (lo, hi) in enumerate(bounds)]
    stats = job.run_tasks(tasks, "exact verification", counted=False)
    ok = np.concatenate([read_ipc(job.dir / "verify" / f"ok-{k:05d}of{len(bounds):05d}.arrow").column("ok")
                         .to_numpy(zero_copy_only=False) for k in range(len(bounds))]) if bounds else \
        np.zeros(0, dtype=bool)
    return ok, {"verify_tasks": len(tasks), "pairs_per_task_max": max((s["pairs"] for s in stats), default=0),
                "set_bytes_per_verify_task_max": max((s["set_bytes"] for s in stats), default=0)}


def greedy_keep(job: StageJob, meta: pl.DataFrame, edges: np.ndarray, ok: np.ndarray, set_files: list[Path],
                threshold: float, per_set: float, memory: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Each member's kept document (meta: members best first within each component, components in order),
    as greedy tasks over whole components; and the split's figures."""
    docs, component = meta["doc"].to_numpy(), meta["component"].to_numpy()
    starts = np.flatnonzero(np.r_[True, component[1:] != component[:-1]]) if len(docs) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(docs)])
    groups = _slices(sizes * per_set, memory / 2)  # the other half: the known pairs and the merge's work
    reads = [job.reads(f) for f in set_files]
    group = _pair_groups(docs, starts, groups, edges)
    tasks, outs = [], []
    for k, (c0, c1) in enumerate(groups):
        lo, hi = int(starts[c0]), int(starts[c1]) if c1 < len(starts) else len(docs)
        name = f"{k:05d}of{len(groups):05d}"
        mine = group == k  # the pairs with both documents in this task's components: all it may look up
        write_ipc(job.dir / "greedy" / f"members-{name}.arrow",
                  pa.table({"doc": docs[lo:hi], "component": component[lo:hi]}))
        write_ipc(job.dir / "greedy" / f"pairs-{name}.arrow",
                  pa.table({"a": edges[mine, 0], "b": edges[mine, 1], "close": ok[mine]}))
        outs.append(job.dir / "greedy" / f"kept-{name}.arrow")
        tasks.append(job.task(f"greedy-{name}", greedy_task, cost=hi - lo, set_files=reads,
                              members_path=job.reads(job.dir / "greedy" / f"members-{name}.arrow"),
                              pairs_path=job.reads(job.dir / "greedy" / f"pairs-{name}.arrow"),
                              threshold=threshold, out_path=job.path("greedy", f"kept-{name}.arrow")))
    stats = job.run_tasks(tasks, "greedy keep rule", counted=False)
    kept = np.concatenate([read_ipc(f).column("kept_doc").to_numpy() for f in outs]) if outs else \
        np.zeros(0, dtype=np.int64)
    return kept, {"greedy_tasks": len(tasks), "greedy_comparisons": int(sum(s["compared"] for s in stats)),
                  "members_per_task_max": max((s["members"] for s in stats), default=0),
                  "set_bytes_per_greedy_task_max": max((s["set_bytes"] for s in stats), default=0),
                  "largest_component": int(sizes.max()) if len(sizes) else 0}


def _pair_groups(docs: np.ndarray, starts: np.ndarray, groups: list[tuple[int, int]], edges: np.ndarray) -> np.ndarray:
    """The greedy task of each candidate pair whose two documents are both members of its components; -1 for
    the rest (a pair across components, or with a document left alone, is never looked up)."""
    task_of_member = np.zeros(len(docs), dtype=np.int64)
    for k, (c0, c1) in enumerate(groups):
        task_of_member[int(starts[c0]):int(starts[c1]) if c1 < len(starts) else len(docs)] = k
    order = np.argsort(docs)
    sorted_docs = docs[order]

    def task_of(d: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(sorted_docs, d), max(len(docs) - 1, 0))
        found = sorted_docs[at] == d if len(docs) else np.zeros(len(d), dtype=bool)
        return np.where(found, task_of_member[order[at]] if len(docs) else -1, -1)

    ta, tb = task_of(edges[:, 0]), task_of(edges[:, 1])
    return np.where(ta == tb, ta, -1)


def components(edges: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, component label) of every component of two or more documents, over the candidate documents
    only: a document without a verified pair is alone and never gets a label. Labels follow each
    component's smallest document, as they would over the whole corpus."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cand = np.unique(edges)
    edge_a, edge_b = np.searchsorted(cand, edges[:, 0]), np.searchsorted(cand, edges[:, 1])
    graph = coo_matrix((np.ones(int(ok.sum()), dtype=np.int8), (edge_a[ok], edge_b[ok])), shape=(len(cand),) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    member_pos = np.flatnonzero(sizes[labels] > 1)
    return cand[member_pos], labels[member_pos]


def members_meta(shards: list[Path], members: np.ndarray, labels: np.ndarray, keep: str,
                 source_order: list[str]) -> pl.DataFrame:
    """Id, source, length and place of each member, sorted best first within each component (`keep`)."""
    rows = [pq.read_metadata(p).num_rows for p in shards]
    starts = np.concatenate([[0], np.cumsum(rows)])
    shard_of = np.searchsorted(starts, members, side="right") - 1
    meta = pl.concat([
        pl.read_parquet(p, columns=["id", "source", "n_chars"]).with_columns(shard=pl.lit(i, pl.Int32))
        .with_row_index("row")
        .filter(pl.col("row").is_in(pl.Series(members[shard_of == i] - starts[i], dtype=pl.UInt32).implode()))
        for i, p in enumerate(shards)
    ]) if len(members) else pl.DataFrame(schema={"row": pl.UInt32, "id": pl.String, "source": pl.String,
                                                  "n_chars": pl.Int32, "shard": pl.Int32})
    rank = {s: i for i, s in enumerate(source_order)}
    meta = meta.with_columns(
        doc=pl.Series(members, dtype=pl.Int64),
        component=pl.Series(labels, dtype=pl.Int64),
        source_rank=pl.col("source").replace_strict(rank, default=len(rank), return_dtype=pl.Int32))
    if keep == "source_priority":  # best first: the earliest source, then the longest
        return meta.sort(["component", "source_rank", "n_chars", "doc"], descending=[False, False, True, False])
    return meta.sort(["component", "n_chars", "doc"], descending=[False, True, False])


def decisions_of(meta: pl.DataFrame, kept_doc: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(decisions, removed list, cluster sizes) from each member's kept document."""
    kept = pl.DataFrame({"kept_doc": meta["doc"], "kept_id": meta["id"], "kept_source": meta["source"]})
    meta = meta.with_columns(kept_doc=pl.Series(kept_doc, dtype=pl.Int64)).join(kept, on="kept_doc", how="left",
                                                                                   maintain_order="left")
    # A cluster is a kept document with the documents removed in its favour; its id is the kept
    # document's global index, stable for the same inputs.
    removed_docs = meta.filter(pl.col("doc") != pl.col("kept_doc")).with_columns(cluster=pl.col("kept_doc"))
    removed_docs = removed_docs.sort("doc")
    decisions = removed_docs.select(
        "shard", pl.col("row").cast(pl.Int64), action=pl.lit("drop"), reason=pl.lit("near_duplicate"),
        detail=pl.format("cluster {} kept {} ({})", "cluster", "kept_id", "kept_source"))
    removed = removed_docs.select("id", "source", "cluster", "kept_id", "kept_source")
    clusters = (removed_docs.group_by("cluster")
                .agg(size=pl.len() + 1, kept_id=pl.col("kept_id").first(), kept_source=pl.col("kept_source").first())
                .sort("cluster"))
    return decisions, removed, clusters


def cluster_with_tasks(job: StageJob, shards: list[Path], edges: np.ndarray, set_files: list[Path], docs: int,
                       threshold: float, keep: str, source_order: list[str], memory: int
                       ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(decisions, removed list, cluster sizes, stats) from the candidate pairs: verification and the keep rule
    as tasks within `memory` bytes each, the components on the driver."""
    t0 = time.time()
    per_set = mean_set_bytes(set_files, docs)
    ok, verify_stats = verify_pairs(job, edges, set_files, threshold, per_set, memory)
    t_verify = time.time() - t0
    members, labels = components(edges, ok)
    meta = members_meta(shards, members, labels, keep, source_order)
    kept, greedy_stats = greedy_keep(job, meta, edges, ok, set_files, threshold, per_set, memory)
    decisions, removed, clusters = decisions_of(meta, kept)
    stats = {"docs": docs, "candidate_pairs": int(len(edges)), "verified_pairs": int(ok.sum()),
             "components": int(len(np.unique(labels))), "clusters": int(clusters.height),
             "docs_in_clusters": int(clusters["size"].sum()) if clusters.height else 0,
             "largest_cluster": int(clusters["size"].max()) if clusters.height else 0,
             "candidate_docs": int(len(np.unique(edges))), "verification": "exact shingle-set Jaccard",
             **verify_stats, **greedy_stats,
             "verify_seconds": round(t_verify, 3), "cluster_seconds": round(time.time() - t0 - t_verify, 3)}
    return decisions, removed, clusters, stats
