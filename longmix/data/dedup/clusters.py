"""Near-dedup steps 2b-4 as tasks over document ranges: unique candidate pairs, exact verification,
connected components, and the greedy keep rule, each task holding one range's share and the driver only
offsets and counts (formats/routed.py).

1. **pairs** (one task per document range): the edge files' pairs whose document falls in the range,
   each once (a pair found in several bands is read from each), sorted by (doc, root);
2. **verify** (slices of each range's pairs, as many as the task memory holds at the corpus's mean set
   size): whether each pair's exact Jaccard reaches the threshold; the verified pairs go on, routed to
   the ranges of both their documents;
3. **components** (components.py): rounds of star steps, one task per range; every document with a
   verified pair gets its component's smallest document as label;
4. **members** (one task per range): the range's labelled documents with their id, source and length read
   from the shards that hold the range, and the range's candidate pairs, both routed to the range of their
   label, so each component arrives whole at one task;
5. **greedy** (one task per label range): members best first within each component (longest, or by source
   priority), in groups of whole components whose shingle sets fit the task memory (a component larger
   than that goes alone: a component cannot be split without changing its decisions); each member is
   removed if its exact Jaccard to an already kept one reaches the threshold. The removed documents are
   routed by their own range, the clusters by their kept document's;
6. the driver writes the decisions, removed list and clusters one range at a time, in document order.

A pair's Jaccard does not depend on the other pairs, components are independent in the greedy rule
(verify.greedy_representatives), and the output files are written with the same row groups however the
rows were split, so any split gives the same bytes (tests/integration/data/test_near_dedup_split.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from longmix.data.dedup.components import components_with_tasks, route_edges
from longmix.data.dedup.verify import greedy_representatives, jaccard, load_sets
from longmix.formats.decisions import DECISION_SCHEMA
from longmix.formats.documents import table_stream
from longmix.formats.ipc import read_ipc, write_ipc
from longmix.formats.routed import range_bounds, range_of, read_slices, slices_for, write_routed
from longmix.pipeline.stage import StageJob

PAIR_BYTES = 64  # one candidate pair in a task: the pair, its positions, the result and the merge's work
# One edge in a range's task: read (once per band that found it), sorted and made unique, or, in a star
# step, held from both ends with its routing; 64 bytes covers the sort's copies.
EDGE_BYTES = 64

PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("close", pa.bool_())])
MEMBER_SCHEMA = pa.schema([("doc", pa.int64()), ("component", pa.int64()), ("id", pa.string()),
                           ("source", pa.string()), ("n_chars", pa.int32()), ("shard", pa.int32()),
                           ("row", pa.int64())])
REMOVED_SCHEMA = pa.schema([("doc", pa.int64()), ("shard", pa.int32()), ("row", pa.int64()),
                            ("action", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
                            ("id", pa.string()), ("source", pa.string()), ("cluster", pa.int64()),
                            ("kept_id", pa.string()), ("kept_source", pa.string())])
REMOVED_LIST_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("cluster", pa.int64()),
                                 ("kept_id", pa.string()), ("kept_source", pa.string())])
CLUSTER_SCHEMA = pa.schema([("cluster", pa.int64()), ("size", pa.int64()), ("kept_id", pa.string()),
                            ("kept_source", pa.string())])


def doc_ranges(edges_found: int, memory_bytes: int) -> int:
    """How many document ranges keep one task's edges (every band's copy) within `memory_bytes`."""
    return max(1, -(-edges_found * EDGE_BYTES // max(int(memory_bytes), 1)))


def mean_set_bytes(set_files: list[Path], docs: int) -> float:
    """Shingle-set bytes of an average document, from the set files' sizes (values and offsets)."""
    return sum(f.stat().st_size for f in set_files) / max(docs, 1)


def pairs_task(*, edge_files: list[str], lo: int, hi: int, out_path: str) -> dict[str, Any]:
    """The candidate pairs whose document is in lo..hi-1, each once, sorted by (doc, root); the range filter
    is pushed into the scan of the edge files."""
    pairs = (pl.scan_ipc(edge_files)
             .filter((pl.col("doc") >= lo) & (pl.col("doc") < hi))
             .unique().sort("doc", "root").collect()) if edge_files else \
        pl.DataFrame(schema={"doc": pl.Int64, "root": pl.Int64})
    write_ipc(Path(out_path), pairs.to_arrow().cast(pa.schema([("doc", pa.int64()), ("root", pa.int64())])))
    return {"pairs": pairs.height}


def verify_task(*, set_files: list[str], pairs_path: str, start: int, stop: int, threshold: float,
                bounds: list[int], out_path: str, edges_path: str) -> dict[str, Any]:
    """Pairs start..stop of a range's pairs file: whether each one's exact Jaccard reaches the threshold (in
    order), and the verified ones routed to the ranges of both their documents for the components."""
    t = read_ipc(Path(pairs_path)).slice(start, stop - start)
    a, b = t.column("doc").to_numpy(), t.column("root").to_numpy()
    docs = np.unique(np.concatenate([a, b]))
    sets = load_sets([Path(f) for f in set_files], docs)
    ok = jaccard(sets, np.searchsorted(docs, a), np.searchsorted(docs, b)) >= threshold
    write_ipc(Path(out_path), pa.table({"ok": ok}))
    offsets = route_edges(Path(edges_path), a[ok], b[ok], np.asarray(bounds, dtype=np.int64))
    return {"pairs": int(len(a)), "verified": int(ok.sum()), "set_bytes": int(sets.nbytes), "offsets": offsets}


def members_task(*, shards: list[str], shard_starts: list[int], labels_path: str, pairs_path: str,
                 ok_paths: list[str], bounds: list[int], members_path: str, known_path: str) -> dict[str, Any]:
    """One range's labelled documents with their id, source, length and place, and its candidate pairs with
    their verdicts, both routed to the range of their label."""
    bounds_arr = np.asarray(bounds, dtype=np.int64)
    labels = read_ipc(Path(labels_path))
    docs, label = labels.column("doc").to_numpy(), labels.column("label").to_numpy()
    shard_of = np.searchsorted(shard_starts, docs, side="right") - 1
    parts = []
    for i in np.unique(shard_of).tolist():
        rows = docs[shard_of == i] - shard_starts[i]
        t = pq.read_table(shards[i], columns=["id", "source", "n_chars"]).take(pa.array(rows))
        parts.append(t.append_column("shard", pa.array(np.full(len(rows), i, dtype=np.int32)))
                     .append_column("row", pa.array(rows)))
    meta = pa.concat_tables(parts) if parts else pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("n_chars", pa.int32()), ("shard", pa.int32()),
         ("row", pa.int64())]).empty_table()
    members = meta.append_column("doc", pa.array(docs)).append_column("component", pa.array(label))
    m_off = write_routed(Path(members_path), members.select(MEMBER_SCHEMA.names).cast(MEMBER_SCHEMA),
                         range_of(label, bounds_arr), len(bounds) - 1)
    # The pairs a greedy task may look up have both documents in its components: a pair whose document has
    # no label (no verified pair) never is.
    p = read_ipc(Path(pairs_path))
    a, b = p.column("doc").to_numpy(), p.column("root").to_numpy()
    ok = np.concatenate([read_ipc(Path(f)).column("ok").to_numpy(zero_copy_only=False) for f in ok_paths]) \
        if ok_paths else np.zeros(0, dtype=bool)
    at = np.minimum(np.searchsorted(docs, a), max(len(docs) - 1, 0))
    has = docs[at] == a if len(docs) else np.zeros(len(a), dtype=bool)
    k_off = write_routed(Path(known_path), pa.table({"a": a[has], "b": b[has], "close": ok[has]}),
                         range_of(label[at[has]], bounds_arr), len(bounds) - 1)
    return {"members": int(len(docs)), "members_offsets": m_off, "known_offsets": k_off}


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


def best_first(members: pl.DataFrame, keep: str, source_order: list[str]) -> pl.DataFrame:
    """Members sorted best first within each component (`keep`), components in label order."""
    rank = {s: i for i, s in enumerate(source_order)}
    members = members.with_columns(
        source_rank=pl.col("source").replace_strict(rank, default=len(rank), return_dtype=pl.Int32))
    if keep == "source_priority":  # the earliest source, then the longest
        return members.sort(["component", "source_rank", "n_chars", "doc"], descending=[False, False, True, False])
    return members.sort(["component", "n_chars", "doc"], descending=[False, True, False])


def greedy_task(*, set_files: list[str], member_files: list[str], member_starts: list[int],
                member_stops: list[int], known_files: list[str], known_starts: list[int], known_stops: list[int],
                threshold: float, keep: str, source_order: list[str], group_bytes: float, per_set: float,
                bounds: list[int], removed_path: str, clusters_path: str) -> dict[str, Any]:
    """The keep rule over whole components (one label range), in groups whose shingle sets fit `group_bytes`:
    the removed documents routed by their range, the clusters by their kept document's."""
    bounds_arr, ranges = np.asarray(bounds, dtype=np.int64), len(bounds) - 1
    meta = best_first(pl.from_arrow(read_slices(member_files, member_starts, member_stops, MEMBER_SCHEMA)),
                      keep, source_order)
    known = read_slices(known_files, known_starts, known_stops, PAIR_SCHEMA)
    docs, component = meta["doc"].to_numpy(), meta["component"].to_numpy()
    starts = np.flatnonzero(np.r_[True, component[1:] != component[:-1]]) if len(docs) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(docs)])
    groups = _slices(sizes * per_set, group_bytes)
    ka, kb, kclose = (known.column(c).to_numpy(zero_copy_only=False) for c in ("a", "b", "close"))
    pair_group = _pair_groups(docs, starts, groups, ka, kb)
    order = np.argsort(pair_group, kind="stable")
    pair_at = np.searchsorted(pair_group[order], np.arange(len(groups) + 1))
    kept = np.empty(len(docs), dtype=np.int64)
    compared, set_bytes_max, members_max = 0, 0, 0
    for k, (c0, c1) in enumerate(groups):
        lo, hi = int(starts[c0]), int(starts[c1]) if c1 < len(starts) else len(docs)
        group_docs = docs[lo:hi]
        sorted_docs = np.unique(group_docs)
        sets = load_sets([Path(f) for f in set_files], sorted_docs)
        mine = order[pair_at[k]:pair_at[k + 1]]
        pos = [np.searchsorted(sorted_docs, d) for d in (group_docs, ka[mine], kb[mine])]
        rep, n = greedy_representatives(component[lo:hi], pos[0], sets, threshold, pos[1], pos[2], kclose[mine])
        kept[lo:hi] = group_docs[rep]
        compared, set_bytes_max, members_max = compared + n, max(set_bytes_max, sets.nbytes), max(members_max, hi - lo)
    removed, clusters = _decisions(meta, kept)
    r_off = write_routed(Path(removed_path), removed.to_arrow().select(REMOVED_SCHEMA.names).cast(REMOVED_SCHEMA),
                         range_of(removed["doc"].to_numpy(), bounds_arr), ranges)
    c_off = write_routed(Path(clusters_path), clusters.to_arrow().select(CLUSTER_SCHEMA.names).cast(CLUSTER_SCHEMA),
                         range_of(clusters["cluster"].to_numpy(), bounds_arr), ranges)
    return {"members": int(len(docs)), "components": int(len(starts)), "groups": len(groups),
            "compared": int(compared), "members_per_group_max": int(members_max),
            "set_bytes_per_group_max": int(set_bytes_max),
            "largest_component": int(sizes.max()) if len(sizes) else 0,
            "removed_offsets": r_off, "clusters_offsets": c_off}


def _pair_groups(docs: np.ndarray, starts: np.ndarray, groups: list[tuple[int, int]], a: np.ndarray,
                 b: np.ndarray) -> np.ndarray:
    """The group of each pair whose two documents are both members of its components; len(groups) for the
    rest (a pair across groups, or with a document outside this task, is never looked up)."""
    group_of_member = np.zeros(len(docs), dtype=np.int64)
    for k, (c0, c1) in enumerate(groups):
        group_of_member[int(starts[c0]):int(starts[c1]) if c1 < len(starts) else len(docs)] = k
    order = np.argsort(docs)
    sorted_docs = docs[order]

    def group_of(d: np.ndarray) -> np.ndarray:
        if not len(docs):
            return np.full(len(d), len(groups))
        at = np.minimum(np.searchsorted(sorted_docs, d), len(docs) - 1)
        return np.where(sorted_docs[at] == d, group_of_member[order[at]], len(groups))

    ga, gb = group_of(a), group_of(b)
    return np.where(ga == gb, ga, len(groups))


def _decisions(meta: pl.DataFrame, kept_doc: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(removed rows with their decision, clusters) from each member's kept document."""
    kept = pl.DataFrame({"kept_doc": meta["doc"], "kept_id": meta["id"], "kept_source": meta["source"]})
    meta = meta.with_columns(kept_doc=pl.Series(kept_doc, dtype=pl.Int64)).join(kept, on="kept_doc", how="left",
                                                                                   maintain_order="left")
    # A cluster is a kept document with the documents removed in its favour; its id is the kept
    # document's global index, stable for the same inputs.
    removed = (meta.filter(pl.col("doc") != pl.col("kept_doc")).with_columns(cluster=pl.col("kept_doc"))
               .sort("doc")
               .with_columns(action=pl.lit("drop"), reason=pl.lit("near_duplicate"),
                             detail=pl.format("cluster {} kept {} ({})", "cluster", "kept_id", "kept_source")))
    clusters = (removed.group_by("cluster")
                .agg(size=pl.len().cast(pl.Int64) + 1, kept_id=pl.col("kept_id").first(),
                     kept_source=pl.col("kept_source").first())
                .sort("cluster"))
    return removed, clusters


def write_outputs(job: StageJob, greedy: list[dict[str, Any]], names: list[str], ranges: int) -> dict[str, int]:
    """decisions.parquet (last: it marks the step done), removed.parquet and clusters.parquet, one range at
    a time in document order; the clusters' figures."""
    removed_files = [job.dir / "greedy" / f"removed-{n}.arrow" for n in names]
    cluster_files = [job.dir / "greedy" / f"clusters-{n}.arrow" for n in names]
    figures = {"clusters": 0, "docs_in_clusters": 0, "largest_cluster": 0}
    with table_stream(job.dir / "clusters.parquet", CLUSTER_SCHEMA) as add:
        for r in range(ranges):
            part = read_slices(*slices_for(cluster_files, [s["clusters_offsets"] for s in greedy], r), CLUSTER_SCHEMA)
            part = part.sort_by("cluster")
            size = part.column("size").to_numpy()
            figures["clusters"] += part.num_rows
            figures["docs_in_clusters"] += int(size.sum())
            figures["largest_cluster"] = max(figures["largest_cluster"], int(size.max()) if len(size) else 0)
            add(part)
    removed_parts = lambda r: read_slices(  # noqa: E731
        *slices_for(removed_files, [s["removed_offsets"] for s in greedy], r), REMOVED_SCHEMA).sort_by("doc")
    with table_stream(job.dir / "removed.parquet", REMOVED_LIST_SCHEMA) as add:
        for r in range(ranges):
            add(removed_parts(r))
    with table_stream(job.dir / "decisions.parquet", DECISION_SCHEMA) as add:
        for r in range(ranges):
            add(removed_parts(r))
    return figures


def cluster_with_tasks(job: StageJob, shards: list[Path], edge_files: list[Path], edges_found: int,
                       set_files: list[Path], docs: int, threshold: float, keep: str, source_order: list[str],
                       memory: int) -> dict[str, Any]:
    """Steps 1-6 above from the edge tasks' files: decisions.parquet, removed.parquet, clusters.parquet
    written, and the stats returned."""
    t0 = time.time()
    ranges = min(doc_ranges(edges_found, memory), max(docs, 1))
    bounds = range_bounds(docs, ranges)
    tag = lambda r: f"{r:05d}of{ranges:05d}"  # noqa: E731
    edge_reads = [job.reads(f) for f in edge_files]
    pair_stats = job.run_tasks([job.task(f"pairs-{tag(r)}", pairs_task, cost=edges_found // ranges,
                                         edge_files=edge_reads, lo=int(bounds[r]), hi=int(bounds[r + 1]),
                                         out_path=job.path("pairs", f"pairs-{tag(r)}.arrow"))
                                for r in range(ranges)], "unique candidate pairs", counted=False)

    per_set = mean_set_bytes(set_files, docs)
    per_task = max(1, int(memory // (2 * per_set + PAIR_BYTES)))
    set_reads = [job.reads(f) for f in set_files]
    verify, ok_files = [], []
    for r, s in enumerate(pair_stats):
        bounds_r = [(i, min(i + per_task, s["pairs"])) for i in range(0, s["pairs"], per_task)]
        ok_files.append([])
        for k, (lo, hi) in enumerate(bounds_r):
            name = f"{tag(r)}-{k:05d}of{len(bounds_r):05d}"
            ok_files[r].append(job.dir / "verify" / f"ok-{name}.arrow")
            verify.append(job.task(f"verify-{name}", verify_task, cost=hi - lo, set_files=set_reads,
                                   pairs_path=job.reads(job.dir / "pairs" / f"pairs-{tag(r)}.arrow"), start=lo,
                                   stop=hi, threshold=threshold, bounds=bounds.tolist(),
                                   out_path=job.path("verify", f"ok-{name}.arrow"),
                                   edges_path=job.path("verify", f"edges-{name}.arrow")))
    verify_stats = job.run_tasks(verify, "exact verification", counted=False)
    t_verify = time.time() - t0

    verified_files = [job.dir / "verify" / f"edges-{t.task_id.removeprefix('verify-')}.arrow" for t in verify]
    labels, cc_stats = components_with_tasks(job, verified_files, [s["offsets"] for s in verify_stats], bounds)

    rows = [pq.read_metadata(p).num_rows for p in shards]
    shard_starts = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
    shard_reads = [job.reads(p) for p in shards]
    members = [job.task(f"members-{tag(r)}", members_task, cost=int(bounds[r + 1] - bounds[r]), shards=shard_reads,
                        shard_starts=shard_starts, labels_path=job.reads(labels[r]),
                        pairs_path=job.reads(job.dir / "pairs" / f"pairs-{tag(r)}.arrow"),
                        ok_paths=[job.reads(f) for f in ok_files[r]], bounds=bounds.tolist(),
                        members_path=job.path("members", f"members-{tag(r)}.arrow"),
                        known_path=job.path("members", f"known-{tag(r)}.arrow"))
               for r in range(ranges)]
    member_stats = job.run_tasks(members, "component members", counted=False)

    member_files = [job.dir / "members" / f"members-{tag(r)}.arrow" for r in range(ranges)]
    known_files = [job.dir / "members" / f"known-{tag(r)}.arrow" for r in range(ranges)]
    greedy = []
    for r in range(ranges):
        mf, ms, me = slices_for(member_files, [s["members_offsets"] for s in member_stats], r)
        kf, ks, ke = slices_for(known_files, [s["known_offsets"] for s in member_stats], r)
        greedy.append(job.task(f"greedy-{tag(r)}", greedy_task, cost=sum(me) - sum(ms), set_files=set_reads,
                               member_files=[job.reads(f) for f in mf], member_starts=ms, member_stops=me,
                               known_files=[job.reads(f) for f in kf], known_starts=ks, known_stops=ke,
                               threshold=threshold, keep=keep, source_order=source_order,
                               group_bytes=memory / 2,  # the other half: the members, known pairs, merge work
                               per_set=per_set, bounds=bounds.tolist(),
                               removed_path=job.path("greedy", f"removed-{tag(r)}.arrow"),
                               clusters_path=job.path("greedy", f"clusters-{tag(r)}.arrow")))
    greedy_stats = job.run_tasks(greedy, "greedy keep rule", counted=False)
    figures = write_outputs(job, greedy_stats, [tag(r) for r in range(ranges)], ranges)
    most = lambda stats, key: max((s[key] for s in stats), default=0)  # noqa: E731
    return {"docs": docs, "doc_ranges": ranges, "candidate_pairs": int(sum(s["pairs"] for s in pair_stats)),
            "verified_pairs": int(sum(s["verified"] for s in verify_stats)),
            "components": int(sum(s["components"] for s in greedy_stats)), **figures,
            "verification": "exact shingle-set Jaccard",
            "pairs_per_range_max": most(pair_stats, "pairs"), "verify_tasks": len(verify),
            "pairs_per_task_max": most(verify_stats, "pairs"),
            "set_bytes_per_verify_task_max": most(verify_stats, "set_bytes"), **cc_stats,
            "members_per_range_max": most(member_stats, "members"),
            "greedy_tasks": len(greedy), "greedy_groups": int(sum(s["groups"] for s in greedy_stats)),
            "greedy_comparisons": int(sum(s["compared"] for s in greedy_stats)),
            "members_per_group_max": most(greedy_stats, "members_per_group_max"),
            "set_bytes_per_greedy_group_max": most(greedy_stats, "set_bytes_per_group_max"),
            "largest_component": most(greedy_stats, "largest_component"),
            "verify_seconds": round(t_verify, 3), "cluster_seconds": round(time.time() - t0 - t_verify, 3)}
