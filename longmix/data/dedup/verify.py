"""Exact Jaccard of candidate pairs, on the shingle sets of candidate documents only.

The sets are held as one uint32 array of each candidate's sorted distinct shingle hashes, back to back:
4 bytes per distinct shingle of a candidate document, nothing for the rest of the corpus. A pair's
intersection is counted by merging its two sorted sets (kernels.intersect_kernel), so no pair is ever
decided on an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longmix.formats.ipc import read_ipc

_U64 = np.uint64


@dataclass
class CandidateSets:
    values: np.ndarray  # each candidate's sorted distinct shingles, back to back, uint32
    starts: np.ndarray  # first value of each candidate, int64
    sizes: np.ndarray  # distinct shingles of each candidate, int64

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.starts.nbytes + self.sizes.nbytes)


def load_sets(set_files: list[Path], docs: np.ndarray) -> CandidateSets:
    """Shingle sets of the given (sorted, unique) global document indices, taken from the memory-mapped sets
    files one file at a time, so the peak is the result plus the pages of one file's candidates."""
    parts, sizes, base = [], [], 0
    for path in set_files:
        table = read_ipc(path)
        n = table.num_rows
        lo, hi = np.searchsorted(docs, [base, base + n])
        if hi > lo:
            lists = table.column("shingles").take(pa.array(docs[lo:hi] - base)).combine_chunks()
            sizes.append(pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64))
            parts.append(pc.list_flatten(lists).to_numpy(zero_copy_only=False))
        base += n
    if len(docs) and (not sizes or sum(len(x) for x in sizes) != len(docs)):
        raise RuntimeError(f"shingle sets cover {sum(len(x) for x in sizes)} of {len(docs)} candidate documents")
    sizes_all = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    starts = np.concatenate([[0], np.cumsum(sizes_all)[:-1]]).astype(np.int64)
    return CandidateSets(values=values.astype(np.uint32, copy=False), starts=starts, sizes=sizes_all)


def jaccard(sets: CandidateSets, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets of candidate positions a[i], b[i] (float64; 1.0 for two empty sets)."""
    from longmix.data.dedup.kernels import intersect_kernel  # numba: compiled once per process

    a, b = np.ascontiguousarray(a, dtype=np.int64), np.ascontiguousarray(b, dtype=np.int64)
    inter = np.empty(len(a), dtype=np.int64)
    intersect_kernel(sets.values, sets.starts, sets.sizes, a, b, inter)
    union = sets.sizes[a] + sets.sizes[b] - inter
    return np.divide(inter, union, out=np.ones(len(a)), where=union > 0)


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
