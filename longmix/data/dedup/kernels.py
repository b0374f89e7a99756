"""The inner loops of near dedup, compiled by numba: shingling (bytes -> word hashes -> n-gram hashes in one
pass) and the exact intersection of two sorted shingle sets.

Array libraries need one full pass (and a temporary) per step here: split into word strings, hash the
words, then a dozen passes to combine n-grams. One compiled loop over the bytes does all of it, about
3x faster (docs/performance.md). Intersecting by a merge reads each set once, in order, where a
vectorized binary search pays a cache miss per level per lookup. Compiled once per machine: `cache=True`
keeps the machine code beside this file (or in NUMBA_CACHE_DIR), so a process only loads it.

minhash.SHINGLE_VERSION names the hash defined here: change it with the hash.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
NGRAM_MULTS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB],
    dtype=np.uint64,
)
SPACE = 32


@njit(cache=True, nogil=True, inline="always")
def fmix64(x):
    """MurmurHash3's 64-bit finalizer (an avalanche mix)."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@njit(cache=True, nogil=True, inline="always")
def _ngram_hash(window, ngram):
    """Order-dependent mix of the n word hashes in `window` (missing words are 0), top 32 bits."""
    c = window[0] * NGRAM_MULTS[0] * _GOLDEN
    for k in range(1, ngram):
        c = (c ^ (window[k] * NGRAM_MULTS[k % 8])) * _GOLDEN
    return np.uint32(fmix64(c) >> np.uint64(32))


@njit(cache=True, nogil=True)
def shingle_kernel(data, offsets, fold, ngram, out, counts):
    """Shingles of documents data[offsets[d]:offsets[d + 1]] (UTF-8 bytes) into `out`, their number per
    document into `counts`; returns the number written.

    A byte is mapped through `fold` first; a word is a maximal run of bytes that do not map to a space,
    hashed by FNV-1a then fmix64. Every window of `ngram` consecutive words is one shingle; a document
    with fewer words (but at least one) gives one shingle of all of them; one with none gives none.
    `out` must hold (bytes + 1) // 2 + documents values: a shingle ends a word, a word and its space
    take two bytes, and a short document adds one."""
    window = np.zeros(ngram, dtype=np.uint64)
    pos = 0
    for d in range(len(offsets) - 1):
        start, words = pos, 0
        i, end = offsets[d], offsets[d + 1]
        while i < end:
            while i < end and fold[data[i]] == SPACE:  # the spaces before a word
                i += 1
            if i == end:
                break
            h = _FNV_OFFSET
            while i < end:  # the word
                b = fold[data[i]]
                if b == SPACE:
                    break
                h = (h ^ np.uint64(b)) * _FNV_PRIME
                i += 1
            if words < ngram:
                window[words] = fmix64(h)
            else:
                for k in range(ngram - 1):
                    window[k] = window[k + 1]
                window[ngram - 1] = fmix64(h)
            words += 1
            if words >= ngram:
                out[pos] = _ngram_hash(window, ngram)
                pos += 1
        if 0 < words < ngram:
            for k in range(words, ngram):
                window[k] = 0
            out[pos] = _ngram_hash(window, ngram)
            pos += 1
        counts[d] = pos - start
    return pos


@njit(cache=True, nogil=True)
def tag_kernel(shingles, counts, out):
    """out[i] = document << 32 | shingle for every shingle, so one sort orders them by document, then value."""
    pos = 0
    for d in range(len(counts)):
        tag = np.uint64(d) << np.uint64(32)
        for _ in range(counts[d]):
            out[pos] = tag | np.uint64(shingles[pos])
            pos += 1


@njit(cache=True, nogil=True)
def distinct_kernel(keys, values, counts):
    """From sorted (document << 32 | shingle) keys: each document's distinct shingles into `values`, their
    number into `counts` (zeroed by the caller); returns the number of values written."""
    w = 0
    for i in range(len(keys)):
        if i == 0 or keys[i] != keys[i - 1]:
            values[w] = np.uint32(keys[i] & np.uint64(0xFFFFFFFF))
            counts[keys[i] >> np.uint64(32)] += 1
            w += 1
    return w


@njit(cache=True, nogil=True)
def intersect_kernel(values, starts, sizes, a, b, out):
    """out[i] = |set a[i] & set b[i]|, each set the sorted distinct values[starts[x]: starts[x] + sizes[x]].
    A branch-free merge: one step per element of either set, whichever is smaller moves on."""
    for i in range(len(a)):
        p, p_end = starts[a[i]], starts[a[i]] + sizes[a[i]]
        q, q_end = starts[b[i]], starts[b[i]] + sizes[b[i]]
        common = 0
        while p < p_end and q < q_end:
            x, y = values[p], values[q]
            common += x == y
            p += x <= y
            q += y <= x
        out[i] = common


def warm_intersect() -> None:
    """Load the merge kernel (from numba's cache, or compile it once) for the argument types verify.py passes."""
    empty = np.zeros(0, dtype=np.int64)
    intersect_kernel(np.zeros(0, dtype=np.uint32), empty, empty, empty, empty, np.empty(0, dtype=np.int64))
