"""Exact Jaccard of candidate pairs, on the shingle sets of candidate documents only.

The sets are held as one sorted uint64 array of (candidate index << 32 | shingle hash): 8 bytes per
distinct shingle of a candidate document, nothing for the rest of the corpus. A pair's intersection is
counted by looking up each shingle of its smaller set in the other's range with one vectorized
binary search, in slices of at most `chunk` lookups, so no pair is ever decided on an estimate.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)


@dataclass
class CandidateSets:
    keys: np.ndarray  # sorted (position << 32 | shingle), uint64
    starts: np.ndarray  # first key of each candidate, int64
    sizes: np.ndarray  # distinct shingles of each candidate, int64

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.starts.nbytes + self.sizes.nbytes)


def load_sets(set_files: list[Path], docs: np.ndarray) -> CandidateSets:
    """Shingle sets of the given (sorted, unique) global document indices, read from the sets files one
    file at a time, so the peak is the result plus one file."""
    parts, sizes, base = [], [], 0
    for path in set_files:
        n = pq.read_metadata(path).num_rows
        lo, hi = np.searchsorted(docs, [base, base + n])
        if hi > lo:
            lists = pq.read_table(path, columns=["shingles"]).column(0).combine_chunks().take(
                pa.array(docs[lo:hi] - base))
            sizes.append(pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64))
            parts.append(pc.list_flatten(lists).to_numpy(zero_copy_only=False))
        base += n
    if len(docs) and (not sizes or sum(len(x) for x in sizes) != len(docs)):
        raise RuntimeError(f"shingle sets cover {sum(len(x) for x in sizes)} of {len(docs)} candidate documents")
    sizes_all = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    keys = np.repeat(np.arange(len(docs), dtype=_U64), sizes_all)
    keys <<= _U64(32)
    lo = 0
    for values in parts:
        keys[lo: lo + len(values)] |= values
        lo += len(values)
    starts = np.concatenate([[0], np.cumsum(sizes_all)[:-1]]).astype(np.int64)
    return CandidateSets(keys=keys, starts=starts, sizes=sizes_all)


def jaccard(sets: CandidateSets, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20, threads: int = 4) -> np.ndarray:
    """Exact Jaccard of the shingle sets of candidate positions a[i], b[i] (float64)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    swap = sets.sizes[a] > sets.sizes[b]
    small, large = np.where(swap, b, a), np.where(swap, a, b)
    # Pairs in order of the larger set: the lookups then arrive in increasing key order, which numpy's
    # binary search exploits (each search starts from the last one), several times faster than random.
    order = np.lexsort((small, large))
    small, large = small[order], large[order]
    lookups = sets.sizes[small]
    bounds = np.concatenate([[0], np.cumsum(lookups)])
    inter = np.zeros(len(a), dtype=np.float64)

    def count(lo: int) -> tuple[int, np.ndarray]:
        # Lookups lo .. lo + chunk, cutting through pairs where needed: a pair of two 50 MB documents has
        # millions of lookups, and the temporaries stay at ~60 bytes per lookup of one slice (60 MB).
        hi = min(lo + chunk, int(bounds[-1]))
        p0, p1 = int(np.searchsorted(bounds, lo, side="right")) - 1, int(np.searchsorted(bounds, hi - 1, side="right"))
        span = np.clip(bounds[p0 + 1: p1 + 1], lo, hi) - np.clip(bounds[p0:p1], lo, hi)
        pair = np.repeat(np.arange(p0, p1, dtype=np.int64), span)
        element = np.arange(lo, hi, dtype=np.int64)
        values = sets.keys[sets.starts[small[pair]] + (element - bounds[pair])] & _LOW32
        targets = (large[pair].astype(_U64) << _U64(32)) | values
        found = np.searchsorted(sets.keys, targets)
        hit = sets.keys[np.minimum(found, len(sets.keys) - 1)] == targets
        return p0, np.bincount(pair - p0, weights=hit)

    # numpy's binary search releases the GIL: slices run on threads (the workers idle during this step).
    with ThreadPoolExecutor(max(1, min(threads, os.cpu_count() or 1))) as pool:
        for first, counted in pool.map(count, range(0, int(bounds[-1]), chunk)):
            inter[first: first + len(counted)] += counted
    union = lookups + sets.sizes[large] - inter
    result = np.divide(inter, union, out=np.ones(len(a)), where=union > 0)
    out = np.empty_like(result)
    out[order] = result
    return out


def _pair_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(a, b).astype(_U64), np.maximum(a, b).astype(_U64)
    return (lo << _U64(32)) | hi


def greedy_representatives(component: np.ndarray, pos: np.ndarray, sets: CandidateSets, threshold: float,
                           known_a: np.ndarray, known_b: np.ndarray,
                           known_close: np.ndarray) -> tuple[np.ndarray, int]:
    """For members sorted best first within each component, the index (into `pos`) of the kept document
    each one is a near-duplicate of (a kept document points to itself), and the pairs compared.

    Round by round, in every component at once: the best remaining member is kept, and every remaining
    member whose exact Jaccard to it reaches the threshold is removed in its favour. Pairs already
    decided (the verified candidate pairs: known_a, known_b, known_close) are not computed again."""
    codes = _pair_codes(known_a, known_b)
    order = np.argsort(codes)
    codes, known_close = codes[order], known_close[order]
    rep = np.arange(len(pos))
    alive = np.ones(len(pos), dtype=bool)
    compared = 0
    while alive.any():
        idx = np.flatnonzero(alive)
        comp = component[idx]
        is_head = np.r_[True, comp[1:] != comp[:-1]]
        head_of = idx[is_head][np.cumsum(is_head) - 1]
        others, heads = idx[~is_head], head_of[~is_head]
        alive[idx[is_head]] = False
        if not len(others):
            break
        want = _pair_codes(pos[others], pos[heads])
        at = np.minimum(np.searchsorted(codes, want), max(len(codes) - 1, 0))
        known = codes[at] == want if len(codes) else np.zeros(len(want), dtype=bool)
        close = np.zeros(len(others), dtype=bool)
        close[known] = known_close[at[known]]
        todo = np.flatnonzero(~known)
        close[todo] = jaccard(sets, pos[others[todo]], pos[heads[todo]]) >= threshold
        compared += len(todo)
        rep[others[close]] = heads[close]
        alive[others[close]] = False
    return rep, compared
