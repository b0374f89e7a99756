"""Near-dedup step 1, per part of a shard (a task): LSH band keys and shingle sets.

Writes `bands/<part>.parquet` (shingle count and one 64-bit key per band) and `sets/<part>.arrow` (each
document's sorted distinct 32-bit shingle hashes, read later for the candidates only). A shard is split
into parts of at most `task_bytes` of text, so one large shard does not serialize the step. This module
imports only numpy, pyarrow, rensa and numba (kernels.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longmix.core.atomic import atomic_path
from longmix.data.dedup.minhash import LshParams, batch_band_keys
from longmix.formats.ipc import write_ipc


def task_parts(path: Path, task_bytes: int) -> list[list[int]]:
    """Consecutive row-group ranges of one shard, each of at most ~`task_bytes` (uncompressed)."""
    meta = pq.read_metadata(path)
    parts: list[list[int]] = []
    size = 0
    for g in range(meta.num_row_groups):
        group_bytes = meta.row_group(g).total_byte_size
        if not parts or size + group_bytes > task_bytes:
            parts.append([])
            size = 0
        parts[-1].append(g)
        size += group_bytes
    return parts or [[]]


def band_task(*, in_path: str, row_groups: list[int], out_path: str, sets_path: str, num_perm: int,
              bands: int, rows: int, ngram: int, seed: int, batch_docs: int) -> dict[str, Any]:
    params = LshParams(num_perm=num_perm, bands=bands, rows=rows, ngram=ngram, seed=seed)
    parts_keys, parts_values, parts_sizes, parts_counts = [], [], [], []
    pf = pq.ParquetFile(in_path)
    batches = pf.iter_batches(batch_size=batch_docs, columns=["text"], row_groups=row_groups) if row_groups else []
    for batch in batches:
        keys, values, set_sizes, n_shingles = batch_band_keys(batch.column(0), params)
        parts_keys.append(keys)
        parts_values.append(values)
        parts_sizes.append(set_sizes)
        parts_counts.append(n_shingles)
    keys = np.concatenate(parts_keys) if parts_keys else np.zeros((0, bands), dtype=np.uint64)
    counts = np.concatenate(parts_counts) if parts_counts else np.zeros(0, dtype=np.int64)
    values = np.concatenate(parts_values) if parts_values else np.zeros(0, dtype=np.uint32)
    set_sizes = np.concatenate(parts_sizes) if parts_sizes else np.zeros(0, dtype=np.int64)
    cols = {"n_shingles": pa.array(counts.astype(np.int32))}
    cols.update({f"b{j}": pa.array(keys[:, j]) for j in range(bands)})
    with atomic_path(Path(out_path)) as tmp:  # 64-bit keys do not compress either
        pq.write_table(pa.table(cols), tmp, compression="none")
    offsets = pa.array(np.concatenate([[0], np.cumsum(set_sizes)]).astype(np.int64))
    # Random hashes do not compress: Arrow IPC, plain, which the clustering memory-maps.
    write_ipc(Path(sets_path), pa.table({"shingles": pa.LargeListArray.from_arrays(offsets, pa.array(values))}))
    return {"docs": int(len(counts)), "shingles": int(counts.sum()), "distinct_shingles": int(len(values))}
