"""Tokenizer training and batch encoding into the tokenized-docs contract.

Long documents are cut into pieces of about ``chunk_chars`` characters at safe boundaries, the pieces
of a whole batch go through one ``encode_batch_fast`` call (so they spread over the Rust threads), and
each document's pieces are concatenated again. Work per call is bounded by the piece size, so time is
linear in the document length even for pathological inputs (one giant pre-token, a tokenizer with no
pre-tokenizer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from longmix.core.atomic import atomic_path

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
DEFAULT_CHUNK_CHARS = 32_768

TOKENIZED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("n_tokens", pa.int32()),
        ("input_ids", pa.large_list(pa.uint32())),
    ]
)

# A lone newline between non-space characters ends a pre-token for both the GPT-2 and the Llama-3 style
# regexes, so cutting right after it leaves the tokenization unchanged. A run of whitespace is not safe:
# at the end of a piece the whole run becomes one pre-token, in context the last character splits off.
_NEWLINE_CUT = re.compile(r"(?<=\S)\n(?=\S)")
# Fallback: before a lone space between non-space characters ("foo| bar"); in both regex families the
# space opens the next pre-token and no pre-token ends with a space that follows a non-space.
_SPACE_CUT = re.compile(r"(?<=\S) (?=\S)")


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | Path | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE with the <s>, </s>, <pad> special tokens; optionally save tokenizer.json."""
    tok = Tokenizer(models.BPE())
    # No prefix space: a prefix would be added at every chunk start and break chunked == whole encoding.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if out_path is not None:
        save_tokenizer(tok, out_path)
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write tokenizer.json atomically (temp file in the same folder, then os.replace)."""
    with atomic_path(path) as tmp:
        tok.save(str(tmp))


def split_text(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``chunk_chars`` characters at safe boundaries.

    Each cut is searched in the second half of the window: first right after a lone newline between
    non-space characters, then before a lone space between non-space characters, else a hard cut at the window
    edge (only for text with no such spot in half a window, e.g. base64 blobs, where a token or two
    around the cut may differ from whole-document encoding).
    """
    if chunk_chars < 2:
        raise ValueError(f"chunk_chars must be at least 2, got {chunk_chars}")
    n = len(text)
    if n <= chunk_chars:
        return [text]
    pieces = []
    start = 0
    while n - start > chunk_chars:
        lo, hi = start + chunk_chars // 2, start + chunk_chars
        cut = _last_cut(_NEWLINE_CUT, text, lo, hi, offset=1)
        if cut is None:
            cut = _last_cut(_SPACE_CUT, text, lo, hi, offset=0)
        if cut is None:
            cut = hi
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _last_cut(pattern: re.Pattern[str], text: str, lo: int, hi: int, offset: int) -> int | None:
    """Position of the last match of ``pattern`` in text[lo:hi) plus ``offset``, or None."""
    last = None
    # endpos=hi+1 lets the lookahead see the character just after the window.
    for m in pattern.finditer(text, lo, min(hi + 1, len(text))):
        pos = m.start() + offset
        if pos <= hi:
            last = pos
    return last


def encode_texts(
    tok: Tokenizer,
    texts: Sequence[str],
    *,
    bos_id: int | None = None,
    eos_id: int | None = None,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode documents to one flat uint32 id array plus int64 offsets (len(texts) + 1).

    Special tokens come only from ``bos_id``/``eos_id``: the tokenizer's own post-processor is bypassed
    (``add_special_tokens=False``) so a Llama tokenizer.json does not add a second BOS.
    """
    pieces: list[str] = []
    pieces_per_doc = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        split = split_text(text, chunk_chars)
        pieces.extend(split)
        pieces_per_doc[i] = len(split)
    # encode_batch_fast skips offset tracking, which we never use. len(encoding) needs no id list, so each
    # piece's ids become a Python list once, streamed into the flat array.
    encodings = tok.encode_batch_fast(pieces, add_special_tokens=False)
    piece_lens = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.uint32, count=int(piece_lens.sum()))
    piece_doc = np.repeat(np.arange(len(texts)), pieces_per_doc)
    doc_lens = np.bincount(piece_doc, weights=piece_lens, minlength=len(texts)).astype(np.int64)
    n_extra = int(bos_id is not None) + int(eos_id is not None)
    if n_extra == 0:
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(doc_lens, out=offsets[1:])
        return flat, offsets
    return _add_specials(flat, doc_lens, bos_id, eos_id)


def _add_specials(
    flat: np.ndarray, doc_lens: np.ndarray, bos_id: int | None, eos_id: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Insert BOS before and/or EOS after every document, vectorized."""
    n_docs = len(doc_lens)
    has_bos, has_eos = bos_id is not None, eos_id is not None
    new_lens = doc_lens + int(has_bos) + int(has_eos)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(new_lens, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint32)
    body = np.ones(len(out), dtype=bool)
    if has_bos:
        out[offsets[:-1]] = bos_id
        body[offsets[:-1]] = False
    if has_eos:
        out[offsets[1:] - 1] = eos_id
        body[offsets[1:] - 1] = False
    out[body] = flat
    return out, offsets


def encode_table(
    tok: Tokenizer,
    docs: pa.Table,
    *,
    bos_id: int | None = None,
    eos_id: int | None = None,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> pa.Table:
    """Tokenize a documents table (id, source, text) into the tokenized-docs contract."""
    for col in ("id", "source", "text"):
        if col not in docs.column_names:
            raise ValueError(f"documents table has no '{col}' column (columns: {docs.column_names})")
    texts = docs.column("text").to_pylist()
    flat, offsets = encode_texts(tok, texts, bos_id=bos_id, eos_id=eos_id, chunk_chars=chunk_chars)
    n_tokens = np.diff(offsets)
    if len(n_tokens) and int(n_tokens.max()) > np.iinfo(np.int32).max:
        raise ValueError("a document has more than 2^31 tokens; n_tokens is int32 by contract")
    input_ids = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat, pa.uint32()))
    return pa.Table.from_arrays(
        [
            docs.column("id").cast(pa.string()),
            docs.column("source").cast(pa.string()),
            pa.array(n_tokens.astype(np.int32), pa.int32()),
            input_ids,
        ],
        schema=TOKENIZED_SCHEMA,
    )
