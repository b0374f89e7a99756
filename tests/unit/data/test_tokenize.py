"""Tokenizer training, loading and chunked batch encoding on Python stdlib source text."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from longmix.data.tokenize.encode import (
    SPECIAL_TOKENS,
    TOKENIZED_SCHEMA,
    encode_table,
    encode_texts,
    split_text,
    train_bpe,
)
from longmix.formats.tokenizer_files import load_tokenizer, special_ids

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(n: int, start: int = 0) -> list[str]:
    files = sorted(STDLIB.glob("*.py"))[start : start + n]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(stdlib_texts(30), vocab_size=1000, out_path=path)
    return path


@pytest.fixture(scope="module")
def tok(tok_path: Path):
    return load_tokenizer(tok_path)


def whole(tok, text: str) -> list[int]:
    return tok.encode_batch_fast([text], add_special_tokens=False)[0].ids


def test_trained_tokenizer_has_specials_and_round_trips(tok, tok_path: Path) -> None:
    assert tok_path.is_file()
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert 300 < tok.get_vocab_size() <= 1000
    ids = special_ids(tok)
    assert (ids.bos_id, ids.eos_id, ids.pad_id) == (0, 1, 2)
    text = stdlib_texts(1, start=40)[0]  # a file the tokenizer was not trained on
    assert tok.decode(whole(tok, text)) == text  # byte-level BPE is lossless
    # Learned merges compress source code well below one token per byte.
    assert len(whole(tok, text)) < 0.5 * len(text.encode())


def test_pad_falls_back_to_eos(tok) -> None:
    ids = special_ids(tok, pad="<no-such-token>")
    assert ids.pad_id == ids.eos_id == 1


def test_load_missing_tokenizer_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")


def test_encode_table_follows_the_contract(tok) -> None:
    texts = stdlib_texts(5, start=30) + [""]
    docs = pa.table({"id": [f"d{i}" for i in range(len(texts))], "source": ["py"] * len(texts), "text": texts})
    out = encode_table(tok, docs, bos_id=0, eos_id=1)
    assert out.schema.equals(TOKENIZED_SCHEMA)
    assert out.column("id").to_pylist() == docs.column("id").to_pylist()
    lists = out.column("input_ids").to_pylist()
    assert out.column("n_tokens").to_pylist() == [len(x) for x in lists]
    for text, ids in zip(texts, lists, strict=True):
        assert ids == [0, *whole(tok, text), 1]
    assert lists[-1] == [0, 1]  # an empty document still gets its specials


def test_encode_without_specials_and_bos_only(tok) -> None:
    texts = stdlib_texts(3, start=35)
    flat, offsets = encode_texts(tok, texts)
    assert flat.dtype == np.uint32 and offsets.dtype == np.int64
    assert [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == [
        whole(tok, t) for t in texts
    ]
    flat_b, offsets_b = encode_texts(tok, texts, bos_id=0)
    assert np.array_equal(np.diff(offsets_b), np.diff(offsets) + 1)
    assert np.all(flat_b[offsets_b[:-1]] == 0)


def test_chunked_equals_whole_on_ordinary_documents(tok) -> None:
    # Tiny chunks force hundreds of cuts per file; every cut must be at a pre-token boundary.
    texts = stdlib_texts(40, start=30)
    flat, offsets = encode_texts(tok, texts, chunk_chars=1000)
    assert sum(len(split_text(t, 1000)) for t in texts) > 500
    for i, text in enumerate(texts):
        assert flat[offsets[i] : offsets[i + 1]].tolist() == whole(tok, text), f"document {i} differs"


def test_split_text_bounds_every_piece() -> None:
    text = "".join(stdlib_texts(100))
    assert len(text) > 2_000_000
    pieces = split_text(text, 32_768)
    assert "".join(pieces) == text
    assert max(map(len, pieces)) <= 32_768
    # Each cut lies in the second half of its window, so the piece count is linear in the length.
    assert len(pieces) <= 2 * len(text) // 32_768 + 1


def test_multi_megabyte_document_is_chunked_and_exact(tok) -> None:
    big = "".join(stdlib_texts(80))
    assert len(big) > 2_000_000
    flat, offsets = encode_texts(tok, [big], bos_id=0, eos_id=1)
    assert len(split_text(big)) > 50
    assert flat[0] == 0 and flat[-1] == 1
    assert np.array_equal(flat[1:-1], np.asarray(whole(tok, big), dtype=np.uint32))
    assert offsets.tolist() == [0, len(flat)]


def test_text_without_whitespace_is_hard_cut_and_lossless(tok) -> None:
    blob = "abcdefgh0123" * 40_000  # 480 KB, one giant pre-token
    pieces = split_text(blob, 32_768)
    assert all(len(p) == 32_768 for p in pieces[:-1])
    flat, _ = encode_texts(tok, [blob])
    assert tok.decode(flat.tolist()) == blob
    # A hard cut can only change tokens next to it: the count stays within a few per cut.
    assert abs(len(flat) - len(whole(tok, blob))) <= 2 * len(pieces)
