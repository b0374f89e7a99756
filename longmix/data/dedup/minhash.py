"""Vectorized MinHash signatures and LSH band keys for a batch of documents.

Shingles are word n-grams of the normalized text (lowercase, punctuation folded to spaces), hashed to
32 bits. Word hashing (polars' string hash) and n-gram combination run as array operations over the
whole batch; the signatures come from rensa (a Rust MinHash: unbiased, about 25x faster here than the numpy
permutations it replaced, measured in docs/performance.md). Bands x rows are chosen for recall: the
candidate pairs are verified on their exact shingle sets afterwards (near.py), so a false positive costs
only time while a false negative is a lost duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rensa

_U64 = np.uint64
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


def _fold_table() -> bytes:
    """ASCII letters, digits and '_' lowercased, other ASCII bytes to spaces, bytes >= 0x80 unchanged."""
    table = bytearray(b" " * 128 + bytes(range(128, 256)))
    for c in range(128):
        if chr(c).isalnum() or chr(c) == "_":
            table[c] = ord(chr(c).lower())
    return bytes(table)


_FOLD = _fold_table()
_NON_ASCII_NON_WORD = r"[^\x00-\x7f\p{L}\p{M}\p{N}]+"
_WORD_CHARS = r"[^\p{L}\p{M}\p{N}_]+"


def _words_unicode(texts: pa.Array) -> pa.Array:
    """The reference normalization, one regex over all characters (about 3x slower than shingle_text)."""
    lowered = pc.utf8_lower(texts)
    folded = pc.replace_substring_regex(lowered, pattern=_WORD_CHARS, replacement=" ")
    return pc.split_pattern(pc.utf8_trim(folded, characters=" "), pattern=" ")


def shingle_text(texts: pa.Array) -> pa.Array:
    """Lowercase, fold every run of non-word characters to spaces and split: list<string> of words.

    Words are Unicode letters, marks, digits and '_' (RE2's \\w is ASCII-only, so they are spelled out).
    Equal to _words_unicode, faster: ASCII bytes are folded by one bytes.translate over the batch's
    buffer, and the regex only looks for runs of non-ASCII non-word characters, which are rare. The split
    is `ascii_split_whitespace` on text whose only whitespace left is ASCII spaces (`utf8_split_whitespace`
    returned different words for the same text depending on earlier calls in the process, pyarrow 26).
    """
    texts = texts.cast(pa.large_string())
    # bytes.translate lowercases ASCII letters itself: Unicode lowercasing runs on non-ASCII documents only.
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(texts), True))
    if pc.any(non_ascii).as_py():
        texts = pc.replace_with_mask(texts, non_ascii, pc.utf8_lower(pc.filter(texts, non_ascii)))
    n = len(texts)
    validity, offsets_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[texts.offset: texts.offset + n + 1]
    data = bytes(memoryview(data_buf)[offsets[0]: offsets[-1]]) if data_buf is not None else b""
    folded = pa.LargeStringArray.from_buffers(n, pa.py_buffer((offsets - offsets[0]).tobytes()),
                                              pa.py_buffer(data.translate(_FOLD)), validity, texts.null_count)
    if pc.any(non_ascii).as_py():  # the regex runs on the non-ASCII documents only (translate keeps them so)
        fixed = pc.replace_substring_regex(pc.filter(folded, non_ascii), pattern=_NON_ASCII_NON_WORD,
                                           replacement=" ")
        folded = pc.replace_with_mask(folded, non_ascii, fixed)
    return pc.ascii_split_whitespace(folded)


def word_hashes(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every word (polars' string hash, one pass in Rust: 4x faster than hashing the
    distinct words of a dictionary encoding) and the words' byte lengths. polars keeps the hash stable
    within a version only, so the near-dedup settings hash includes polars' version."""
    import polars as pl

    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    hashed = pl.from_arrow(words).hash(seed=0x5EED).to_numpy()
    return hashed.astype(np.uint64, copy=False), pc.binary_length(words).to_numpy(zero_copy_only=False)


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
    return shingles_of_words(shingle_text(texts), ngram)


def shingles_of_words(word_lists: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """shingle_hashes of texts already split into words (list<string>, one list per document)."""
    n_docs = len(word_lists)
    per_doc = pc.list_value_length(word_lists).fill_null(0).to_numpy(zero_copy_only=False)
    h, lengths = word_hashes(pc.list_flatten(word_lists))
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


def _long_doc_shingles(text: str, ngram: int, piece_words: int) -> np.ndarray:
    """Shingles of one long document, hashed in pieces of `piece_words` words that overlap by ngram - 1
    words, so the workspace stays bounded while every n-gram is still seen (some twice: harmless, as
    MinHash and the shingle set count each distinct shingle once)."""
    words = shingle_text(pa.array([text], type=pa.large_string())).values
    words = words.filter(pc.greater(pc.utf8_length(words), 0))
    n, parts = len(words), []
    for start in range(0, max(n, 1), piece_words):
        if start and start + ngram > n:
            break  # its words are all in the previous piece's overlap
        piece = words.slice(start, min(piece_words + ngram - 1, n - start))
        parts.append(shingles_of_words(pa.ListArray.from_arrays(pa.array([0, len(piece)], pa.int32()),
                                                                piece), ngram)[0])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def shingle_groups(texts: pa.Array, ngram: int, batch_chars: int = 32 << 20, long_chars: int = 4 << 20,
                   piece_words: int = 1 << 18) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """shingle_hashes in consecutive groups of documents, so memory stays bounded: at most `batch_chars`
    characters per group, and a document over `long_chars` alone, hashed in pieces (_long_doc_shingles)."""
    texts = texts.cast(pa.large_string())
    lengths = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False)
    lo = 0
    while lo < len(texts):
        if lengths[lo] > long_chars:
            sh = _long_doc_shingles(texts[lo].as_py(), ngram, piece_words)
            yield sh, np.array([0, len(sh)], dtype=np.int64)
            lo += 1
            continue
        hi, total = lo + 1, lengths[lo]
        while hi < len(texts) and lengths[hi] <= long_chars and total + lengths[hi] <= batch_chars:
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
    """Each document's distinct shingles, sorted: (values, per-document counts)."""
    if len(offsets) == 2:  # one (maybe long) document: sort its 32-bit values, no 64-bit tagging
        values = np.sort(shingles)
        values = values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
        return values, np.array([len(values)], dtype=np.int64)
    doc = np.repeat(np.arange(len(offsets) - 1, dtype=np.uint64), np.diff(offsets))
    keys = np.sort((doc << _U64(32)) | shingles.astype(np.uint64))  # numpy's unique hashes first: 60x slower
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    counts = np.bincount((keys >> _U64(32)).astype(np.int64), minlength=len(offsets) - 1)
    return (keys & _U64(0xFFFFFFFF)).astype(np.uint32), counts


def batch_band_keys(texts: pa.Array, params: LshParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Band keys, the shingle sets (sorted values and counts) and shingle counts (0: never a candidate),
    computed group by group (shingle_groups) so a long document's workspace is its own only."""
    keys, values, set_sizes, counts = [], [], [], []
    for shingles, offsets in shingle_groups(texts, params.ngram):
        sig = signatures(shingles, offsets, params.bands * params.rows, params.seed)
        keys.append(band_keys(sig, params))
        v, n = shingle_sets(shingles, offsets)
        values.append(v)
        set_sizes.append(n)
        counts.append(np.diff(offsets))
    if not keys:
        return (np.zeros((0, params.bands), dtype=np.uint64), np.zeros(0, dtype=np.uint32),
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return np.concatenate(keys), np.concatenate(values), np.concatenate(set_sizes), np.concatenate(counts)
