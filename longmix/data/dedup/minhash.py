"""Vectorized MinHash signatures and LSH band keys for a batch of documents.

Shingles are word n-grams of the normalized text (lowercase, punctuation folded to spaces).
Word hashing, n-gram combination and the permutations all run as numpy array operations over
the whole batch; the permutations, the pre-mix and the bands x rows choice come from datasketch
(scheme "affine32"), so a signature here equals datasketch's MinHash of the same shingle hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from datasketch.minhash import _fmix

_U64 = np.uint64
_WORD_BASE = _U64(0x100000001B3)  # FNV prime as the polynomial base for word hashing
_NGRAM_MULTS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB],
    dtype=np.uint64,
)
_BLOCK_ELEMENTS = 1 << 19  # shingles x permutations per block: 2 MB of uint32, stays in cache


@dataclass(frozen=True)
class LshParams:
    num_perm: int
    bands: int
    rows: int
    ngram: int
    seed: int


def lsh_params(threshold: float, num_perm: int, ngram: int, seed: int,
               bands: int | None = None, rows: int | None = None) -> LshParams:
    """Bands x rows from datasketch's optimal-parameter routine unless both are given."""
    if bands is None or rows is None:
        bands, rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
    if bands * rows > num_perm:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {num_perm}")
    return LshParams(num_perm=num_perm, bands=bands, rows=rows, ngram=ngram, seed=seed)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def _fmix64(x: np.ndarray) -> np.ndarray:
    return _fmix(x, 64)


def shingle_text(texts: pa.Array) -> pa.Array:
    """Lowercase, fold every run of non-word characters to one space and split: list<string> of words.

    Words are Unicode letters, marks, digits and '_' (RE2's \\w is ASCII-only, so they are spelled out).
    Splitting on single spaces after folding avoids `utf8_split_whitespace`, which returned different
    words for the same text depending on earlier calls in the process (pyarrow 26).
    """
    lowered = pc.utf8_lower(texts)
    folded = pc.replace_substring_regex(lowered, pattern=r"[^\p{L}\p{M}\p{N}_]+", replacement=" ")
    return pc.split_pattern(pc.utf8_trim(folded, characters=" "), pattern=" ")


def _word_hashes(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial hash of each word's UTF-8 bytes (mod 2^64) then a 64-bit avalanche, and word lengths."""
    words = words.cast(pa.large_string()) if pa.types.is_string(words.type) else words
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    _, offsets_buf, data_buf = words.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[words.offset: words.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]: offsets[-1]].astype(np.uint64)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    ends = starts + lengths
    # Exponent of each byte = its distance to the end of its word.
    word_of_byte = np.repeat(np.arange(n), lengths)
    exponent = ends[word_of_byte] - 1 - np.arange(len(data))
    powers = _pow_table(int(lengths.max()))
    weighted = data * powers[exponent]
    # Differences of a wrapping prefix sum give each word's sum, empty words included (sum 0).
    prefix = np.concatenate([[_U64(0)], np.cumsum(weighted, dtype=np.uint64)])
    hashed = prefix[ends] - prefix[starts]
    return _fmix64(hashed + lengths.astype(np.uint64)), lengths


@lru_cache(maxsize=4)
def _pow_table_cached(size: int) -> np.ndarray:
    powers = np.full(size, _WORD_BASE, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)  # wraps mod 2^64 by design


def _pow_table(max_len: int) -> np.ndarray:
    size = 1 << max(6, int(max_len - 1).bit_length())  # power-of-two sizes keep the cache small
    return _pow_table_cached(size)


def _combine(terms: list[np.ndarray]) -> np.ndarray:
    """Order-dependent 64-bit mix of n word hashes (one array per position in the n-gram)."""
    with np.errstate(over="ignore"):
        combined = terms[0] * _NGRAM_MULTS[0] * _U64(0x9E3779B97F4A7C15)
        for k in range(1, len(terms)):
            combined = (combined ^ (terms[k] * _NGRAM_MULTS[k % len(_NGRAM_MULTS)])) * _U64(0x9E3779B97F4A7C15)
    return combined


def shingle_hashes(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every word n-gram, flattened, plus per-document offsets into them.

    A document with fewer than `ngram` words (but at least one) yields one shingle of all its words;
    a document with no words yields none.
    """
    word_lists = shingle_text(texts)
    n_docs = len(word_lists)
    per_doc = pc.list_value_length(word_lists).fill_null(0).to_numpy(zero_copy_only=False)
    # Hash each distinct word once: a batch has far fewer distinct words than words.
    encoded = pc.dictionary_encode(pc.list_flatten(word_lists))
    word_ids = encoded.indices.to_numpy(zero_copy_only=False)
    dict_h, dict_len = _word_hashes(encoded.dictionary)
    h, lengths = dict_h[word_ids], dict_len[word_ids]
    doc_of_word = np.repeat(np.arange(n_docs), per_doc)
    nonempty = lengths > 0  # splitting an empty text yields one empty "word"
    h, doc_of_word = h[nonempty], doc_of_word[nonempty]
    n_words = len(h)
    word_offsets = np.concatenate([[0], np.cumsum(np.bincount(doc_of_word, minlength=n_docs))]).astype(np.int64)
    doc_end = word_offsets[1:][doc_of_word] if n_words else np.zeros(0, dtype=np.int64)

    # Combined hash of the window starting at each word. Shifted views give every full window at once;
    # the few windows that run past their document's end (short documents) are redone with clipping.
    idx = np.arange(n_words)
    padded = np.concatenate([h, np.zeros(ngram, dtype=np.uint64)])
    combined = _combine([padded[k: k + n_words] for k in range(ngram)])
    clipped = np.flatnonzero(idx + ngram > doc_end)
    if len(clipped):
        terms = []
        for k in range(ngram):
            pos = clipped + k
            terms.append(np.where(pos < doc_end[clipped], padded[np.minimum(pos, n_words)], _U64(0)))
        combined[clipped] = _combine(terms)
    doc_words = np.diff(word_offsets)
    # A window is a shingle if it is full, or if it is the whole of a short document.
    full = (idx + ngram) <= doc_end
    short_doc_first = (doc_words[doc_of_word] < ngram) & (idx == word_offsets[:-1][doc_of_word])
    keep = full | short_doc_first
    shingles = (_fmix64(combined[keep]) >> _U64(32)).astype(np.uint32)
    counts = np.bincount(doc_of_word[keep], minlength=n_docs)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return shingles, offsets


def signatures(shingles: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int,
               used: int | None = None) -> np.ndarray:
    """MinHash signatures [n_docs, used] (uint32) with the first `used` of datasketch's `num_perm`
    permutations (LSH reads only bands x rows of them); docs with no shingles stay at 2^32-1."""
    a, b = _permutations(num_perm, seed)
    a, b = a[:used or num_perm], b[:used or num_perm]
    num_perm = len(a)
    n_docs = len(offsets) - 1
    sig = np.full((n_docs, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(shingles) == 0:
        return sig
    hv = _fmix(shingles.astype(np.uint32), 32)
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    # Small cache-resident blocks, computed in place: about 5x faster than one big temporary.
    block = max(1, _BLOCK_ELEMENTS // num_perm)
    buf = np.empty((block, num_perm), dtype=np.uint32)
    for lo in range(0, len(hv), block):
        hi = min(lo + block, len(hv))
        phv = buf[: hi - lo]
        np.multiply(hv[lo:hi, None], a[None, :], out=phv)  # uint32 wrap-around is the intended mod 2^32
        phv += b[None, :]
        docs = doc_of[lo:hi]
        seg_starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        mins = np.minimum.reduceat(phv, seg_starts, axis=0)
        seg_docs = docs[seg_starts]
        sig[seg_docs] = np.minimum(sig[seg_docs], mins)
    return sig


def band_keys(sig: np.ndarray, params: LshParams) -> np.ndarray:
    """One 64-bit key per band [n_docs, bands]: documents sharing a key in any band are candidates."""
    n = sig.shape[0]
    keys = np.empty((n, params.bands), dtype=np.uint64)
    wide = sig.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(params.bands):
            acc = np.full(n, _U64(j + 1) * _U64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for c in range(params.rows):
                acc = _fmix64(acc ^ wide[:, j * params.rows + c])
            keys[:, j] = acc
    return keys


def batch_band_keys(texts: pa.Array, params: LshParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band keys, signatures (bands x rows values) and shingle counts (0: never a candidate) of a batch."""
    shingles, offsets = shingle_hashes(texts, params.ngram)
    sig = signatures(shingles, offsets, params.num_perm, params.seed, params.bands * params.rows)
    return band_keys(sig, params), sig, np.diff(offsets)
