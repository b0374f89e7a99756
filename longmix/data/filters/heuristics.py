"""Heuristic document filters, each one small and named, measured a batch of documents at a time.

A heuristic is (name, measure, bound): `measure` maps a `TextBatch` to one float per document and the
document is dropped when that value is below (`min_*`) or above (`max_*`) the recipe's parameter of the
same name; the name is also the drop reason. Measures run on Arrow arrays (RE2 regexes, dictionary
encoding, numpy), not Python loops over characters, so long documents cost little more than their bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Line ends counted as "ends in punctuation" (C4/FineWeb-style terminal marks, closing quotes included).
_TERMINAL = r"[.!?…\"'”’»。！？]$"
# Gopher's bullet lines: a bullet glyph followed by a space, after the line's leading whitespace.
_BULLET = r"^[-*+•‣▪◦●○·–][ \t]"
# Large odd multipliers for hashing word-id n-grams into one uint64 (see TextBatch.ngram_dup_frac).
_NGRAM_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                        0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3,
                        0x1D8E4E27C47D124F, 0xFF51AFD7ED558CCD], dtype=np.uint64)
MAX_NGRAM = len(_NGRAM_MULT)


@cache
def _bmp_classes() -> np.ndarray:
    """0 = whitespace, 1 = letter or digit (str.isalnum), 2 = symbol, for every code point below 0x10000."""
    chars = [chr(c) for c in range(0x10000)]
    return np.array([0 if ch.isspace() else 1 if ch.isalnum() else 2 for ch in chars], dtype=np.uint8)


def char_class_counts(text: str) -> np.ndarray:
    """(whitespace, alnum, symbol) character counts, by Python's own str predicates; numpy over UTF-32
    is ~10x faster than counting with regexes (every character is a match there)."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = _bmp_classes()
    cls = table[np.minimum(cps, 0xFFFF)]
    astral = np.flatnonzero(cps > 0xFFFF)
    if len(astral):  # rare (emoji, historic scripts): classify each distinct one
        for cp in np.unique(cps[astral]).tolist():
            ch = chr(cp)
            cls[astral[cps[astral] == cp]] = 0 if ch.isspace() else 1 if ch.isalnum() else 2
    return np.bincount(cls, minlength=3)


def _per_doc(parents: np.ndarray, n_docs: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(parents, weights=weights, minlength=n_docs).astype(np.float64)


def repeats(keys: np.ndarray) -> np.ndarray:
    """True where a key already occurred earlier in the array (every occurrence after the first)."""
    _, first = np.unique(keys, return_index=True)
    dup = np.ones(len(keys), dtype=bool)
    dup[first] = False
    return dup


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


class TextBatch:
    """Per-batch intermediate arrays (words, non-empty lines), computed once and shared by the measures."""

    def __init__(self, texts: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        self.texts = texts.cast(pa.large_string())
        self.n = len(texts)

    @cached_property
    def char_classes(self) -> np.ndarray:
        """(n, 3): whitespace, alnum and symbol characters per document."""
        counts = [char_class_counts(t) for t in self.texts.to_pylist()]
        return np.array(counts, dtype=np.float64).reshape(-1, 3)

    # -- words: whitespace-separated tokens -------------------------------------------------------
    @cached_property
    def _words(self) -> tuple[pa.Array, np.ndarray]:
        lists = pc.utf8_split_whitespace(self.texts)
        flat, parents = pc.list_flatten(lists), pc.list_parent_indices(lists)
        keep = pc.greater(pc.utf8_length(flat), 0)  # the split leaves empty strings at the edges
        return flat.filter(keep), parents.filter(keep).to_numpy()

    @cached_property
    def word_lens(self) -> np.ndarray:
        return pc.utf8_length(self._words[0]).to_numpy().astype(np.float64)

    @cached_property
    def n_words(self) -> np.ndarray:
        return _per_doc(self._words[1], self.n)

    @cached_property
    def word_chars(self) -> np.ndarray:
        return _per_doc(self._words[1], self.n, self.word_lens)

    # -- lines: non-empty after trimming ----------------------------------------------------------
    @cached_property
    def _lines(self) -> tuple[pa.Array, np.ndarray]:
        lists = pc.split_pattern(self.texts, "\n")
        flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
        keep = pc.greater(pc.utf8_length(flat), 0)
        return flat.filter(keep), pc.list_parent_indices(lists).filter(keep).to_numpy()

    @cached_property
    def n_lines(self) -> np.ndarray:
        return _per_doc(self._lines[1], self.n)

    def lines_matching(self, regex: str) -> np.ndarray:
        lines, parents = self._lines
        hit = pc.match_substring_regex(lines, regex).to_numpy(zero_copy_only=False)
        return _per_doc(parents[hit], self.n)

    @cached_property
    def dup_lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(duplicate lines, chars in duplicate lines, chars in all lines) per document.

        A duplicate is any occurrence after a line's first within the same document (exact match
        after trimming): dictionary ids are exact, and (doc, id) pairs make the key per document."""
        lines, parents = self._lines
        lens = pc.utf8_length(lines).to_numpy().astype(np.float64)
        if len(lines) == 0:
            zero = np.zeros(self.n)
            return zero, zero, zero
        ids = pc.dictionary_encode(lines).indices.to_numpy().astype(np.int64)
        dup = repeats(parents.astype(np.int64) * (int(ids.max()) + 1) + ids)
        return (_per_doc(parents[dup], self.n), _per_doc(parents[dup], self.n, lens[dup]),
                _per_doc(parents, self.n, lens))

    def ngram_dup_frac(self, n: int) -> np.ndarray:
        """Share of word characters covered by word n-grams seen earlier in the same document (Gopher).

        Word ids are exact (dictionary encoding); an n-gram is hashed from its ids and its document
        into one uint64, so two different n-grams would have to collide in 64 bits to be confused."""
        words, parents = self._words
        if len(words) < n:
            return np.zeros(self.n)
        ids = pc.dictionary_encode(words).indices.to_numpy().astype(np.uint64)
        m = len(ids) - n + 1
        with np.errstate(over="ignore"):  # wrap-around is the hash
            h = parents[:m].astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
            for j in range(n):
                h = h + ids[j: j + m] * _NGRAM_MULT[j]
        inside = parents[:m] == parents[n - 1:]  # windows crossing a document boundary don't count
        starts = np.flatnonzero(inside)
        dup_starts = starts[repeats(h[starts])]
        # difference array: +1 where a duplicate n-gram starts, -1 past its end; covered where the sum > 0
        cover = np.bincount(dup_starts, minlength=len(ids) + 1) - np.bincount(dup_starts + n, minlength=len(ids) + 1)
        covered = np.cumsum(cover[:-1]) > 0
        return _ratio(_per_doc(parents[covered], self.n, self.word_lens[covered]), self.word_chars)


@dataclass(frozen=True)
class Heuristic:
    name: str  # the recipe parameter and the drop reason
    measure: Callable[[TextBatch, int], np.ndarray]  # (batch, dup_ngram_n) -> value per document
    bound: str  # "min": drop when value < parameter; "max": drop when value > parameter
    doc: str


def _chars(b: TextBatch, ngram_n: int) -> np.ndarray:
    return pc.utf8_length(b.texts).to_numpy().astype(np.float64)


def _n_words(b: TextBatch, ngram_n: int) -> np.ndarray:
    return b.n_words


def _mean_word_len(b: TextBatch, ngram_n: int) -> np.ndarray:
    return _ratio(b.word_chars, b.n_words)


def _symbol_ratio(b: TextBatch, ngram_n: int) -> np.ndarray:
    alnum, symbols = b.char_classes[:, 1], b.char_classes[:, 2]
    # a document of symbols only gets +inf: it trips any finite bound
    return np.divide(symbols, alnum, out=np.where(symbols > 0, np.inf, 0.0), where=alnum > 0)


def _bullet_line_frac(b: TextBatch, ngram_n: int) -> np.ndarray:
    return _ratio(b.lines_matching(_BULLET), b.n_lines)


def _punct_line_frac(b: TextBatch, ngram_n: int) -> np.ndarray:
    return _ratio(b.lines_matching(_TERMINAL), b.n_lines)


def _dup_line_frac(b: TextBatch, ngram_n: int) -> np.ndarray:
    return _ratio(b.dup_lines[0], b.n_lines)


def _dup_line_char_frac(b: TextBatch, ngram_n: int) -> np.ndarray:
    _, dup_chars, all_chars = b.dup_lines
    return _ratio(dup_chars, all_chars)


def _dup_ngram_frac(b: TextBatch, ngram_n: int) -> np.ndarray:
    return b.ngram_dup_frac(ngram_n)


# Evaluation order = report order; the first heuristic a document trips is its drop reason.
HEURISTICS: list[Heuristic] = [
    Heuristic("min_chars", _chars, "min", "characters in the document"),
    Heuristic("max_chars", _chars, "max", "characters in the document"),
    Heuristic("min_words", _n_words, "min", "whitespace-separated words"),
    Heuristic("max_words", _n_words, "max", "whitespace-separated words"),
    Heuristic("min_mean_word_len", _mean_word_len, "min", "mean characters per word"),
    Heuristic("max_mean_word_len", _mean_word_len, "max", "mean characters per word"),
    Heuristic("max_symbol_ratio", _symbol_ratio, "max",
              "symbol characters (not str.isalnum, not whitespace) per letter or digit"),
    Heuristic("max_bullet_line_frac", _bullet_line_frac, "max", "share of non-empty lines starting with a bullet"),
    Heuristic("min_punct_line_frac", _punct_line_frac, "min",
              "share of non-empty lines ending in terminal punctuation"),
    Heuristic("max_dup_line_frac", _dup_line_frac, "max", "share of non-empty lines repeating an earlier line"),
    Heuristic("max_dup_line_char_frac", _dup_line_char_frac, "max",
              "share of line characters in lines repeating an earlier line"),
    Heuristic("max_dup_ngram_frac", _dup_ngram_frac, "max",
              "share of word characters inside a word n-gram (n = dup_ngram_n) seen earlier"),
]
BY_NAME = {h.name: h for h in HEURISTICS}


def trips(value: np.ndarray, bound: str, limit: np.ndarray) -> np.ndarray:
    """Which documents a heuristic drops; `limit` is NaN where the heuristic is off for that document."""
    with np.errstate(invalid="ignore"):
        out = value < limit if bound == "min" else value > limit
    return out & ~np.isnan(limit)
