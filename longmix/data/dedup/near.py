"""MinHash LSH near-dedup in three steps, each parallel:

1. per part of a shard (tasks, bands.py): one 64-bit key per LSH band and each document's sorted set of
   32-bit shingle hashes;
2. global, on compact data only: per band, documents sharing a key are joined to the group's smallest
   index (polars, multi-threaded); each candidate pair is decided on the exact Jaccard of its shingle
   sets (verify.py), loaded for candidate documents only; verified pairs -> connected components
   (scipy); within a component, documents are visited best first (longest, or by source priority)
   and each is removed if its exact Jaccard to an already kept one reaches the threshold, so every
   removed document is within the threshold of the document that stands for it;
3. per shard (tasks): drop the removed documents.
Memory of step 2 is bounded by one band's keys plus the edges and 8 bytes per distinct shingle of the
candidate documents, never by texts or by the documents that have no candidate.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from longmix.data.dedup.minhash import LshParams
from longmix.data.dedup.verify import greedy_representatives, jaccard, load_sets


def load_in_background() -> threading.Thread:
    """Import scipy's graph routines and load the pair-merge kernel (numba's start-up: about 1 s together) on
    a thread: the driver does it while the workers compute signatures, not when the pairs are ready."""
    def load() -> None:
        import scipy.sparse.csgraph  # noqa: F401

        from longmix.data.dedup.kernels import warm_intersect

        warm_intersect()

    thread = threading.Thread(target=load, name="load-cluster-libraries", daemon=True)
    thread.start()
    return thread


def find_edges(band_files: list[Path], bands: int) -> np.ndarray:
    """Candidate pairs as (doc, group root) over all bands; docs are global indices in shard order."""
    scan = pl.scan_parquet(band_files, row_index_name="doc").filter(pl.col("n_shingles") > 0)
    edges = []
    for j in range(bands):
        key = f"b{j}"
        e = (scan.select("doc", key)
             .with_columns(root=pl.col("doc").min().over(key))
             .filter(pl.col("doc") != pl.col("root"))
             .select("doc", "root")
             .collect())
        edges.append(e)
    all_edges = pl.concat(edges).unique() if edges else pl.DataFrame({"doc": [], "root": []})
    return all_edges.to_numpy().astype(np.int64).reshape(-1, 2)


def _priority(meta: pl.DataFrame, keep: str) -> pl.DataFrame:
    """Sort key: best first within a component (longest; or earliest source, then longest)."""
    if keep == "source_priority":
        return meta.sort(["component", "source_rank", "n_chars", "doc"], descending=[False, False, True, False])
    return meta.sort(["component", "n_chars", "doc"], descending=[False, True, False])


def cluster(shards: list[Path], band_files: list[Path], set_files: list[Path], params: LshParams, threshold: float,
            keep: str, source_order: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(decisions, removed list, cluster sizes, stats)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = [pq.read_metadata(p).num_rows for p in shards]
    n = int(sum(rows))
    t0 = time.time()
    edges = find_edges(band_files, params.bands)
    t_edges = time.time() - t0
    cand = np.unique(edges)
    sets = load_sets(set_files, cand)
    edge_a, edge_b = np.searchsorted(cand, edges[:, 0]), np.searchsorted(cand, edges[:, 1])
    ok = jaccard(sets, edge_a, edge_b) >= threshold
    verified = edges[ok]
    t_verify = time.time() - t0 - t_edges
    graph = coo_matrix((np.ones(len(verified), dtype=np.int8), (verified[:, 0], verified[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    members = np.flatnonzero(sizes[labels] > 1)
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
    meta = _priority(meta.with_columns(
        doc=pl.Series(members, dtype=pl.Int64),
        component=pl.Series(labels[members], dtype=pl.Int64),
        source_rank=pl.col("source").replace_strict(rank, default=len(rank), return_dtype=pl.Int32),
    ), keep)
    docs = meta["doc"].to_numpy()
    rep, compared = greedy_representatives(meta["component"].to_numpy(), np.searchsorted(cand, docs), sets,
                                           threshold, edge_a, edge_b, ok)
    meta = meta.with_columns(kept_doc=pl.Series(docs[rep], dtype=pl.Int64),
                             kept_id=meta["id"].gather(rep), kept_source=meta["source"].gather(rep))
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
    stats = {"docs": n, "candidate_pairs": int(len(edges)), "verified_pairs": int(len(verified)),
             "components": int((sizes > 1).sum()), "clusters": int(clusters.height),
             "docs_in_clusters": int(clusters["size"].sum()) if clusters.height else 0,
             "largest_cluster": int(clusters["size"].max()) if clusters.height else 0,
             "candidate_docs": int(len(cand)), "candidate_set_bytes": sets.nbytes,
             "greedy_comparisons": int(compared), "verification": "exact shingle-set Jaccard",
             "edge_seconds": round(t_edges, 3), "verify_seconds": round(t_verify, 3),
             "cluster_seconds": round(time.time() - t0 - t_edges - t_verify, 3)}
    return decisions, removed, clusters, stats
