"""MinHash signatures and LSH band keys for a batch of documents.

Shingles are word n-grams of the normalized text (lowercase, punctuation folded to spaces), hashed to
32 bits by one compiled pass over the bytes (kernels.py); the few non-ASCII documents are
lowercased and folded by pyarrow first. The signatures come from rensa (a Rust MinHash: unbiased, about
25x faster here than the numpy permutations it replaced, measured in docs/performance.md), computed on
each document's distinct shingles. Bands x rows are chosen for recall: the candidate pairs are verified on
their exact shingle sets afterwards (near.py), so a false positive costs only time while a false negative
is a lost duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rensa

# The shingle hash's definition (kernels.py); the near-dedup settings hash includes it, so shingles of
# two definitions never meet in one clustering. 1: polars' string hash of pyarrow-split words.
SHINGLE_VERSION = 2

_U64 = np.uint64


@dataclass(frozen=True)
class LshParams:
    num_perm: int
    bands: int
    rows: int
    ngram: int
    seed: int


def candidate_probability(similarity, bands: int, rows: int):
    """Chance that two documents of this Jaccard similarity share at least one LSH band key."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def choose_bands_rows(threshold: float, num_perm: int, recall: float, margin: float = 0.05) -> tuple[int, int]:
    """The bands x rows (bands * rows <= num_perm) with the fewest expected false candidates (area under
    the S-curve below the threshold) among those where a pair at `threshold + margin` is a candidate
    with probability >= `recall`; if none reaches it, the one that comes closest."""
    at = min(threshold + margin, 1.0)
    grid = np.linspace(0.0, threshold, 2001)
    best, best_key = (1, 1), None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        p_at = candidate_probability(at, bands, rows)
        false_area = float(np.trapezoid(candidate_probability(grid, bands, rows), grid))
        key = (p_at < recall, -p_at if p_at < recall else false_area)
        if best_key is None or key < best_key:
            best, best_key = (bands, rows), key
    return best


def lsh_params(threshold: float, num_perm: int, ngram: int, seed: int, bands: int | None = None,
               rows: int | None = None, recall: float = 0.995) -> LshParams:
    """Bands x rows chosen for `recall` at threshold + 0.05 (choose_bands_rows) unless both are given."""
    if bands is None or rows is None:
        bands, rows = choose_bands_rows(threshold, num_perm, recall)
    if bands * rows > num_perm:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {num_perm}")
    return LshParams(num_perm=num_perm, bands=bands, rows=rows, ngram=ngram, seed=seed)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (an avalanche mix), wrapping mod 2^64."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(33))
        x = x * _U64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> _U64(33))
        x = x * _U64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> _U64(33))


def _fold_table() -> np.ndarray:
    """ASCII letters, digits and '_' lowercased, other ASCII bytes to spaces, bytes >= 0x80 unchanged."""
    table = bytearray(b" " * 128 + bytes(range(128, 256)))
    for c in range(128):
        if chr(c).isalnum() or chr(c) == "_":
            table[c] = ord(chr(c).lower())
    return np.frombuffer(bytes(table), dtype=np.uint8)


_FOLD = _fold_table()
_NON_ASCII_NON_WORD = r"[^\x00-\x7f\p{L}\p{M}\p{N}]+"
_WORD_CHARS = r"[^\p{L}\p{M}\p{N}_]+"


def _words_unicode(texts: pa.Array) -> pa.Array:
    """The reference normalization, one regex over all characters (about 3x slower than shingle_text)."""
    lowered = pc.utf8_lower(texts)
    folded = pc.replace_substring_regex(lowered, pattern=_WORD_CHARS, replacement=" ")
    return pc.split_pattern(pc.utf8_trim(folded, characters=" "), pattern=" ")


def prepare_non_ascii(texts: pa.Array) -> pa.LargeStringArray:
    """Texts whose non-ASCII documents are lowercased and have their runs of non-ASCII non-word characters
    turned into spaces; ASCII bytes are left to the byte fold (_FOLD), which lowercases letters and maps
    every other ASCII non-word byte to a space. After both, words are the runs of non-space bytes.

    Words are Unicode letters, marks, digits and '_' (RE2's \\w is ASCII-only, so they are spelled out).
    The regex runs on non-ASCII documents only: they are rare, and a regex costs ~20 ns per character."""
    texts = texts.cast(pa.large_string())
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(texts), True))
    if not pc.any(non_ascii).as_py():
        return texts
    fixed = pc.replace_substring_regex(pc.utf8_lower(pc.filter(texts, non_ascii)), pattern=_NON_ASCII_NON_WORD,
                                       replacement=" ")
    return pc.replace_with_mask(texts, non_ascii, fixed)


def shingle_text(texts: pa.Array) -> pa.Array:
    """The words shingle_hashes sees, as list<string> per document (equal to _words_unicode): for tests and
    the quality benchmark; shingling itself never builds word strings."""
    texts = prepare_non_ascii(texts)
    n = len(texts)
    validity, offsets_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[texts.offset: texts.offset + n + 1]
    data = bytes(memoryview(data_buf)[offsets[0]: offsets[-1]]) if data_buf is not None else b""
    folded = pa.LargeStringArray.from_buffers(n, pa.py_buffer((offsets - offsets[0]).tobytes()),
                                              pa.py_buffer(data.translate(_FOLD.tobytes())), validity,
                                              texts.null_count)
    return pc.ascii_split_whitespace(folded)


def shingle_hashes(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every word n-gram, flattened, plus per-document offsets into them.

    A document with fewer than `ngram` words (but at least one) yields one shingle of all its words;
    a document with no words yields none. The words are shingle_text's; the loop is compiled
    (kernels.py)."""
    from longmix.data.dedup.kernels import shingle_kernel  # numba: imported by the workers that shingle

    texts = prepare_non_ascii(texts)
    n = len(texts)
    _, offsets_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[texts.offset: texts.offset + n + 1]
    if texts.null_count:  # a null text has no words (its offsets span nothing)
        offsets = offsets.copy()
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, dtype=np.uint8)
    out = np.empty((int(offsets[-1] - offsets[0]) + 1) // 2 + n + 1, dtype=np.uint32)  # untouched pages cost nothing
    counts = np.empty(n, dtype=np.int64)
    total = shingle_kernel(data, np.ascontiguousarray(offsets), _FOLD, ngram, out, counts)
    return out[:total], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def rensa_version() -> int:
    return int(rensa.RMinHash.ALGORITHM_VERSION)


def signatures(shingles: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures [n_docs, num_perm] (uint32), from rensa; docs with no shingles are all 2^32-1."""
    n_docs = len(offsets) - 1
    if n_docs == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        shingles.astype(np.uint64), offsets.astype(np.uint64), num_perm, seed)
    sig = np.array(matrix.to_rows(), dtype=np.uint32).reshape(n_docs, num_perm)
    sig[np.diff(offsets) == 0] = np.iinfo(np.uint32).max
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


def shingle_groups(texts: pa.Array, ngram: int, batch_bytes: int = 32 << 20,
                   long_bytes: int = 4 << 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """shingle_hashes in consecutive groups of documents, so memory stays bounded: at most `batch_bytes`
    of text per group, and a document over `long_bytes` alone (its workspace is its own shingles, 4 bytes
    per word at most)."""
    texts = texts.cast(pa.large_string())
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset: texts.offset + len(texts) + 1]
    lengths = np.diff(offsets)  # UTF-8 bytes, straight from the offsets (a null text spans none)
    lo = 0
    while lo < len(texts):
        hi, total = lo + 1, lengths[lo]
        while hi < len(texts) and lengths[lo] <= long_bytes and lengths[hi] <= long_bytes and \
                total + lengths[hi] <= batch_bytes:
            total += lengths[hi]
            hi += 1
        yield shingle_hashes(texts.slice(lo, hi - lo), ngram)
        lo = hi


def doc_shingles(texts: pa.Array, ngram: int, **limits: int) -> tuple[np.ndarray, np.ndarray]:
    """shingle_hashes of a batch computed group by group (shingle_groups), joined."""
    parts, counts = [], []
    for sh, off in shingle_groups(texts, ngram, **limits):
        parts.append(sh)
        counts.append(np.diff(off))
    shingles = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    all_counts = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return shingles, np.concatenate([[0], np.cumsum(all_counts)]).astype(np.int64)


def shingle_sets(shingles: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingles, sorted: (values, per-document counts). One numpy sort of
    (document << 32 | shingle) keys (numpy's vectorized sort beats a sort per document), tagging and
    splitting in compiled single passes."""
    from longmix.data.dedup.kernels import distinct_kernel, tag_kernel

    n_docs = len(offsets) - 1
    if n_docs == 1:  # one (maybe long) document: sort its 32-bit values, no 64-bit tagging
        values = np.sort(shingles)
        values = values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
        return values, np.array([len(values)], dtype=np.int64)
    keys = np.empty(len(shingles), dtype=np.uint64)
    tag_kernel(shingles, np.diff(offsets), keys)
    keys.sort()
    values = np.empty(len(keys), dtype=np.uint32)
    counts = np.zeros(n_docs, dtype=np.int64)
    return values[: distinct_kernel(keys, values, counts)], counts


def batch_band_keys(texts: pa.Array, params: LshParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Band keys, the shingle sets (sorted values and counts) and shingle counts (0: never a candidate),
    computed group by group (shingle_groups) so a long document's workspace is its own only."""
    keys, values, set_sizes, counts = [], [], [], []
    for shingles, offsets in shingle_groups(texts, params.ngram):
        v, n = shingle_sets(shingles, offsets)
        # MinHash over the distinct shingles equals MinHash over all of them, with fewer values to hash.
        sig = signatures(v, np.concatenate([[0], np.cumsum(n)]).astype(np.int64), params.bands * params.rows,
                         params.seed)
        keys.append(band_keys(sig, params))
        values.append(v)
        set_sizes.append(n)
        counts.append(np.diff(offsets))
    if not keys:
        return (np.zeros((0, params.bands), dtype=np.uint64), np.zeros(0, dtype=np.uint32),
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return np.concatenate(keys), np.concatenate(values), np.concatenate(set_sizes), np.concatenate(counts)
