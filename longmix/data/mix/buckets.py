"""Document length buckets: edges in tokens, vectorized assignment, token counts per source x bucket.

Bucket i holds documents with edges[i-1] <= n_tokens < edges[i]; bucket 0 starts at 0 and the last bucket
(index len(edges)) is open-ended, so there are len(edges) + 1 buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_FRACTIONS = (1 / 8, 1 / 2, 1.0)


def default_edges(seq_len: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Edges relative to seq_len: by default <seq_len/8, <seq_len/2, <seq_len, >=seq_len."""
    return validate_edges([max(1, int(round(f * seq_len))) for f in fractions])


def validate_edges(edges: Sequence[int] | np.ndarray) -> np.ndarray:
    """Return edges as int64, raising on empty, non-positive or not strictly increasing edges."""
    arr = np.asarray(edges, dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"bucket edges must be a non-empty list of token counts, got {list(edges)}")
    if arr[0] <= 0 or np.any(np.diff(arr) <= 0):
        raise ValueError(f"bucket edges must be positive and strictly increasing, got {arr.tolist()}")
    return arr


def bucket_names(edges: Sequence[int] | np.ndarray) -> list[str]:
    """Readable labels: ['<4096', '<16384', '<32768', '>=32768'] for the default edges at 32K."""
    arr = validate_edges(edges)
    return [f"<{int(e)}" for e in arr] + [f">={int(arr[-1])}"]


def assign_buckets(n_tokens: np.ndarray, edges: Sequence[int] | np.ndarray) -> np.ndarray:
    """Bucket index per document (int8 for up to 127 buckets, else int16)."""
    arr = validate_edges(edges)
    dtype = np.int8 if arr.size < 127 else np.int16
    return np.searchsorted(arr, np.asarray(n_tokens), side="right").astype(dtype)


def resolve_bucket(bucket: int | str, edges: Sequence[int] | np.ndarray) -> int:
    """Bucket index from an index or a label such as '>=32768'; raises naming the valid labels."""
    names = bucket_names(edges)
    if isinstance(bucket, str):
        if bucket in names:
            return names.index(bucket)
        raise ValueError(f"unknown length bucket {bucket!r}; valid buckets: {', '.join(names)}")
    if not 0 <= bucket < len(names):
        raise ValueError(f"bucket index {bucket} out of range 0..{len(names) - 1} ({', '.join(names)})")
    return int(bucket)


def token_counts(
    source_idx: np.ndarray, bucket_idx: np.ndarray, n_tokens: np.ndarray, n_sources: int, n_buckets: int
) -> np.ndarray:
    """Tokens per source x bucket as an int64 (n_sources, n_buckets) matrix."""
    cell = _cell_index(source_idx, bucket_idx, n_sources, n_buckets)
    # float64 weights are exact up to 2^53 tokens, far beyond any corpus.
    weights = np.asarray(n_tokens, dtype=np.float64)
    counts = np.bincount(cell, weights=weights, minlength=n_sources * n_buckets)
    return counts.astype(np.int64).reshape(n_sources, n_buckets)


def doc_counts(source_idx: np.ndarray, bucket_idx: np.ndarray, n_sources: int, n_buckets: int) -> np.ndarray:
    """Documents per source x bucket as an int64 (n_sources, n_buckets) matrix."""
    cell = _cell_index(source_idx, bucket_idx, n_sources, n_buckets)
    return np.bincount(cell, minlength=n_sources * n_buckets).astype(np.int64).reshape(n_sources, n_buckets)


def _cell_index(source_idx: np.ndarray, bucket_idx: np.ndarray, n_sources: int, n_buckets: int) -> np.ndarray:
    src = np.asarray(source_idx, dtype=np.int64)
    if src.size and (src.min() < 0 or src.max() >= n_sources):
        raise ValueError(f"source index out of range 0..{n_sources - 1}")
    return src * n_buckets + np.asarray(bucket_idx, dtype=np.int64)
