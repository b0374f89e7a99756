"""MinHash LSH near-dedup in four steps, each parallel:

1. per part of a shard (tasks, bands.py): one 64-bit key per LSH band and each document's sorted set of
   32-bit shingle hashes;
2. per band and key range (tasks, `edge_task` here): documents sharing a key are joined to the group's
   smallest index, written as (doc, root) edge files. A band's keys are uniform hashes, so a band splits
   into equal key ranges whose groups never straddle two ranges; the number of ranges comes from the
   stage's task memory budget (`key_ranges`), so no task holds more than its share of one band;
3. per document range (tasks, clusters.py): the candidate pairs made unique, verified on the exact Jaccard
   of their shingle sets (verify.py), joined into connected components in rounds of star steps
   (components.py), and each component's documents visited best first (longest, or by source priority),
   each removed if its exact Jaccard to an already kept one reaches the threshold, so every removed
   document is within the threshold of the document that stands for it;
4. per shard (tasks): drop the removed documents.
The driver reads no band keys, pairs or shingle sets: it keeps offsets and counts, and writes the decisions
one range at a time, so its memory does not grow with the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from longmix.formats.ipc import write_ipc

# What one edge task holds per document of its key range: the row index and the key read from the band
# files, the group root, and polars' window-hash workspace for them; measured 59 bytes a document with one
# range of 10M documents and 66 with ranges of 16.7M (tests/bench/bench_global_steps_scaling.py), so 72.
EDGE_BYTES_PER_DOC = 72
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
    """Every band's candidate pairs in one process, each once, sorted by (doc, root): what the edge tasks and
    the pairs tasks (clusters.py) compute together; the reference of tests and benchmarks."""
    edges = [band_edges(band_files, j, k, parts) for j in range(bands) for k in range(parts)]
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(edges).reshape(-1, 2), axis=0).astype(np.int64)


def edge_task(*, band_files: list[str], band: int, part: int, parts: int, out_path: str) -> dict[str, Any]:
    """One band's key range as a task: its edges as a (doc, root) Arrow file."""
    edges = band_edges([Path(f) for f in band_files], band, part, parts)
    write_ipc(Path(out_path), pa.table({"doc": edges[:, 0], "root": edges[:, 1]}))
    return {"edges": int(len(edges))}
