"""Exact Jaccard of candidate pairs, on the shingle sets of candidate documents only.

The sets are held as one sorted uint64 array of (candidate index << 32 | shingle hash): 8 bytes per
distinct shingle of a candidate document, nothing for the rest of the corpus. A pair's intersection is
counted by looking up each shingle of its smaller set in the other's range with one vectorized
binary search, in chunks of at most `chunk` lookups, so no pair is ever decided on an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

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
    """Shingle sets of the given (sorted, unique) global document indices, read from the sets files."""
    frame = (pl.scan_parquet(set_files, row_index_name="doc")
             .filter(pl.col("doc").is_in(pl.Series(docs, dtype=pl.UInt32).implode()))
             .select("doc", "shingles").collect().sort("doc"))
    if frame.height != len(docs):
        raise RuntimeError(f"shingle sets hold {frame.height} of {len(docs)} candidate documents")
    sizes = frame["shingles"].list.len().to_numpy().astype(np.int64)
    values = frame["shingles"].explode().drop_nulls().to_numpy().astype(_U64)
    position = np.repeat(np.arange(len(docs), dtype=_U64), sizes)
    keys = (position << _U64(32)) | values
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return CandidateSets(keys=keys, starts=starts, sizes=sizes)


def jaccard(sets: CandidateSets, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 23) -> np.ndarray:
    """Exact Jaccard of the shingle sets of candidate positions a[i], b[i] (float64)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    swap = sets.sizes[a] > sets.sizes[b]
    small, large = np.where(swap, b, a), np.where(swap, a, b)
    # Pairs in order of the larger set: the lookups then arrive in increasing key order, which numpy's
    # binary search exploits (each search starts from the last one), several times faster than random.
    order = np.lexsort((small, large))
    small, large = small[order], large[order]
    lookups = sets.sizes[small]
    result = np.empty(len(a), dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(lookups)])
    lo = 0
    while lo < len(a):
        # As many pairs as fit in `chunk` lookups (at least one, however large it is).
        hi = max(lo + 1, int(np.searchsorted(bounds, bounds[lo] + chunk, side="right")) - 1)
        hi = min(hi, len(a))
        s, g, n = small[lo:hi], large[lo:hi], lookups[lo:hi]
        pair = np.repeat(np.arange(hi - lo), n)
        within = np.arange(len(pair)) - np.repeat(np.cumsum(n) - n, n)
        values = sets.keys[sets.starts[s][pair] + within] & _LOW32
        targets = (g[pair].astype(_U64) << _U64(32)) | values
        found = np.searchsorted(sets.keys, targets)
        hit = sets.keys[np.minimum(found, len(sets.keys) - 1)] == targets
        inter = np.bincount(pair, weights=hit, minlength=hi - lo)
        union = n + sets.sizes[g] - inter
        result[lo:hi] = np.divide(inter, union, out=np.ones(hi - lo), where=union > 0)
        lo = hi
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
