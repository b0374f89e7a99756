"""MinHash LSH near-dedup in four steps, each parallel:

1. per part of a shard (tasks, bands.py): one 64-bit key per LSH band and each document's sorted set of
   32-bit shingle hashes;
2. per band and key range (tasks, `edge_task`): documents sharing a key are joined to the group's smallest
   index, written as (doc, root) edge files. A band's keys are uniform hashes, so a band splits into equal
   key ranges whose groups never straddle two ranges; the number of ranges comes from the stage's task
   memory budget (`key_ranges`), so no task holds more than its share of one band however big the corpus;
3. on the driver, on the candidates only: each candidate pair is decided on the exact Jaccard of its shingle
   sets (verify.py), loaded for candidate documents only; verified pairs -> connected components (scipy,
   over the candidate documents, never an array per corpus document); within a component, documents are
   visited best first (longest, or by source priority) and each is removed if its exact Jaccard to an
   already kept one reaches the threshold, so every removed document is within the threshold of the
   document that stands for it;
4. per shard (tasks): drop the removed documents.
The driver never reads band keys: its memory grows with the candidate pairs and their shingle sets (8 bytes
per distinct shingle of a candidate document), not with the corpus.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from longmix.data.dedup.verify import greedy_representatives, jaccard, load_sets
from longmix.formats.ipc import read_ipc, write_ipc


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


# What one edge task holds per document of its key range: the row index (4 bytes) and the key (8) read from
# the band files, the group root (8), and polars' window-hash workspace and read buffers for them; measured
# 60 bytes a document for one whole band at 10M documents (tests/bench/bench_global_steps_scaling.py).
EDGE_BYTES_PER_DOC = 64
KEY_SPACE = 2**64


def key_ranges(docs: int, memory_bytes: int) -> int:
    """How many equal key ranges each band is split into so one edge task stays within `memory_bytes`."""
    return max(1, -(-docs * EDGE_BYTES_PER_DOC // max(int(memory_bytes), 1)))


def band_edges(band_files: list[Path], band: int, part: int = 0, parts: int = 1) -> np.ndarray:
    """Candidate pairs as (doc, group root) among the documents whose key of `band` falls in the key range
    `part` of `parts` (equal ranges of the uint64 key space); docs are global indices in shard order. The
    range filter is pushed into the parquet scan, so only the range's documents are held."""
    key = f"b{band}"
    lo, hi = part * KEY_SPACE // parts, (part + 1) * KEY_SPACE // parts
    scan = pl.scan_parquet(band_files, row_index_name="doc").filter(pl.col("n_shingles") > 0)
    in_range = pl.col(key) >= pl.lit(lo, pl.UInt64)
    if hi < KEY_SPACE:
        in_range &= pl.col(key) < pl.lit(hi, pl.UInt64)
    e = (scan.select("doc", key, "n_shingles").filter(in_range).select("doc", key)
         .with_columns(root=pl.col("doc").min().over(key))
         .filter(pl.col("doc") != pl.col("root"))
         .select("doc", "root")
         .collect())
    return e.to_numpy().astype(np.int64).reshape(-1, 2)


def find_edges(band_files: list[Path], bands: int, parts: int = 1) -> np.ndarray:
    """Every band's candidate pairs in one process, unique, sorted: what the edge tasks compute together."""
    edges = [band_edges(band_files, j, k, parts) for j in range(bands) for k in range(parts)]
    return unique_edges(edges)


def unique_edges(edges: list[np.ndarray]) -> np.ndarray:
    """Edges found in several bands counted once, sorted by (doc, root): the same array however split."""
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(edges).reshape(-1, 2), axis=0).astype(np.int64)


def edge_task(*, band_files: list[str], band: int, part: int, parts: int, out_path: str) -> dict[str, Any]:
    """One band's key range as a task: its edges as a (doc, root) Arrow file."""
    edges = band_edges([Path(f) for f in band_files], band, part, parts)
    write_ipc(Path(out_path), pa.table({"doc": edges[:, 0], "root": edges[:, 1]}))
    return {"edges": int(len(edges))}


def read_edges(edge_files: list[Path]) -> np.ndarray:
    """The edge tasks' files, as find_edges returns them."""
    return unique_edges([np.column_stack([t.column("doc").to_numpy(), t.column("root").to_numpy()])
                         for t in (read_ipc(f) for f in edge_files)])


def _priority(meta: pl.DataFrame, keep: str) -> pl.DataFrame:
    """Sort key: best first within a component (longest; or earliest source, then longest)."""
    if keep == "source_priority":
        return meta.sort(["component", "source_rank", "n_chars", "doc"], descending=[False, False, True, False])
    return meta.sort(["component", "n_chars", "doc"], descending=[False, True, False])


def cluster(shards: list[Path], edges: np.ndarray, set_files: list[Path], threshold: float,
            keep: str, source_order: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(decisions, removed list, cluster sizes, stats) from the candidate pairs (`read_edges`)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = [pq.read_metadata(p).num_rows for p in shards]
    n = int(sum(rows))
    t0 = time.time()
    cand = np.unique(edges)
    sets = load_sets(set_files, cand)
    edge_a, edge_b = np.searchsorted(cand, edges[:, 0]), np.searchsorted(cand, edges[:, 1])
    ok = jaccard(sets, edge_a, edge_b) >= threshold
    verified = edges[ok]
    t_verify = time.time() - t0
    # Components over the candidate documents only (positions in `cand`): a document without a candidate
    # pair is its own component and never needs a label. Labels follow each component's smallest document,
    # as over the whole corpus, so the visiting order below is the same.
    graph = coo_matrix((np.ones(int(ok.sum()), dtype=np.int8), (edge_a[ok], edge_b[ok])), shape=(len(cand),) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    member_pos = np.flatnonzero(sizes[labels] > 1)
    members = cand[member_pos]
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
        component=pl.Series(labels[member_pos], dtype=pl.Int64),
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
             "verify_seconds": round(t_verify, 3), "cluster_seconds": round(time.time() - t0 - t_verify, 3)}
    return decisions, removed, clusters, stats
