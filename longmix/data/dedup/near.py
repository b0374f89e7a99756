"""MinHash LSH near-dedup in three steps, each parallel:

1. per shard (tasks): signatures and one 64-bit key per LSH band, written as `bands/<shard>.parquet`;
2. global, on compact data only: per band, documents sharing a key are joined to the group's smallest
   index (polars, multi-threaded); each candidate pair is verified on the full signatures (estimated
   Jaccard >= threshold), which drops LSH false positives; verified pairs -> connected components
   (scipy); within a component, documents are visited best first (longest, or by source priority)
   and each is removed if it is a near-duplicate of an already kept one, so every removed document
   is within the threshold of the document that stands for it;
3. per shard (tasks): drop the removed documents.
Memory of step 2 is bounded by one band's keys plus the edges and the signatures of candidate
documents only, never by texts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from longmix.data.dedup.minhash import LshParams, batch_band_keys
from longmix.formats.documents import write_table


def band_task(*, in_path: str, out_path: str, num_perm: int, bands: int, rows: int, ngram: int, seed: int,
              batch_docs: int) -> dict[str, Any]:
    params = LshParams(num_perm=num_perm, bands=bands, rows=rows, ngram=ngram, seed=seed)
    parts_keys, parts_sigs, parts_counts = [], [], []
    pf = pq.ParquetFile(in_path)
    for batch in pf.iter_batches(batch_size=batch_docs, columns=["text"]):
        keys, sig, n_shingles = batch_band_keys(batch.column(0), params)
        parts_keys.append(keys)
        parts_sigs.append(sig)
        parts_counts.append(n_shingles)
    used = bands * rows
    keys = np.concatenate(parts_keys) if parts_keys else np.zeros((0, bands), dtype=np.uint64)
    sigs = np.concatenate(parts_sigs) if parts_sigs else np.zeros((0, used), dtype=np.uint32)
    counts = np.concatenate(parts_counts) if parts_counts else np.zeros(0, dtype=np.int64)
    cols = {"n_shingles": pa.array(counts.astype(np.int32)),
            "sig": pa.FixedSizeListArray.from_arrays(pa.array(sigs.reshape(-1)), used)}
    cols.update({f"b{j}": pa.array(keys[:, j]) for j in range(bands)})
    write_table(Path(out_path), pa.table(cols))
    return {"docs": int(len(counts)), "shingles": int(counts.sum())}


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


def _signatures_of(band_files: list[Path], docs: np.ndarray) -> np.ndarray:
    """Signatures [len(docs), bands*rows] of the given (sorted, unique) global doc indices."""
    frame = (pl.scan_parquet(band_files, row_index_name="doc")
             .filter(pl.col("doc").is_in(pl.Series(docs, dtype=pl.UInt32).implode()))
             .select("doc", "sig").collect().sort("doc"))
    return np.asarray(frame["sig"].to_numpy(), dtype=np.uint32).reshape(len(docs), -1)


def _similar(sig: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float, chunk: int = 65536) -> np.ndarray:
    """Estimated Jaccard (share of equal MinHash values) of rows a[i], b[i] is at least `threshold`."""
    out = np.empty(len(a), dtype=bool)
    for lo in range(0, len(a), chunk):
        eq = sig[a[lo: lo + chunk]] == sig[b[lo: lo + chunk]]
        out[lo: lo + chunk] = eq.mean(axis=1) >= threshold
    return out


def _priority(meta: pl.DataFrame, keep: str) -> pl.DataFrame:
    """Sort key: best first within a component (longest; or earliest source, then longest)."""
    if keep == "source_priority":
        return meta.sort(["component", "source_rank", "n_chars", "doc"], descending=[False, False, True, False])
    return meta.sort(["component", "n_chars", "doc"], descending=[False, True, False])


def greedy_representatives(component: np.ndarray, pos: np.ndarray, sig: np.ndarray, threshold: float) -> np.ndarray:
    """For members sorted best first within each component, the position (into `pos`) of the kept document
    each one is a near-duplicate of; a kept document points to itself."""
    rep = np.arange(len(pos))
    starts = np.flatnonzero(np.r_[True, component[1:] != component[:-1]])
    ends = np.r_[starts[1:], len(pos)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        if hi - lo == 2:  # the one verified pair of the component
            rep[lo + 1] = lo
            continue
        remaining = np.arange(lo, hi)
        while len(remaining) > 1:
            head, rest = remaining[0], remaining[1:]
            close = (sig[pos[rest]] == sig[pos[head]]).mean(axis=1) >= threshold
            rep[rest[close]] = head
            remaining = rest[~close]
    return rep


def cluster(shards: list[Path], band_files: list[Path], params: LshParams, threshold: float, keep: str,
            source_order: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(decisions, removed list, cluster sizes, stats)."""
    rows = [pq.read_metadata(p).num_rows for p in shards]
    n = int(sum(rows))
    t0 = time.time()
    edges = find_edges(band_files, params.bands)
    t_edges = time.time() - t0
    cand = np.unique(edges)
    sig = _signatures_of(band_files, cand) if len(cand) else np.zeros((0, 1), np.uint32)
    ok = _similar(sig, np.searchsorted(cand, edges[:, 0]), np.searchsorted(cand, edges[:, 1]), threshold)
    verified = edges[ok]
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
    rep = greedy_representatives(meta["component"].to_numpy(), np.searchsorted(cand, docs), sig, threshold)
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
             "edge_seconds": round(t_edges, 3), "cluster_seconds": round(time.time() - t0 - t_edges, 3)}
    return decisions, removed, clusters, stats
