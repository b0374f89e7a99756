"""Packing real tokenized documents (Python stdlib files): tokens in = tokens out, spans, sources."""

from __future__ import annotations

import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers_packed import segments

from longmix.data.pack.packing import STRATEGIES, PackStats, TokenBatch, append_eos, pack
from longmix.data.tokenize.encode import encode_table, train_bpe
from longmix.formats.packed_rows import PackedRows
from longmix.formats.packed_shards import check_rows

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEQ_LEN = 4096
EOS, PAD = 1, 2


@pytest.fixture(scope="module")
def docs() -> TokenBatch:
    """66 stdlib modules (1 MB), from a few dozen tokens to tens of thousands, in three sources."""
    by_size = sorted(STDLIB.glob("*.py"), key=lambda f: (f.stat().st_size, f.name))
    files = by_size[:120:2] + by_size[120::8]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    tok = train_bpe(texts[::3], vocab_size=2000)
    table = encode_table(tok, pa.table({"id": [f.name for f in files], "source": ["py"] * len(files), "text": texts}))
    return TokenBatch.from_arrow(table.column("input_ids"), np.arange(len(files)) % 3)


def batches(docs: TokenBatch, size: int):
    for a in range(0, len(docs), size):
        b = min(a + size, len(docs))
        yield TokenBatch(
            docs.values[docs.offsets[a] : docs.offsets[b]], docs.offsets[a : b + 1] - docs.offsets[a], docs.sources[a:b]
        )


def run(docs: TokenBatch, strategy: str, size: int = 16, **kw) -> tuple[PackedRows, PackStats]:
    stats = PackStats(strategy=strategy, seq_len=SEQ_LEN)
    blocks = list(pack(batches(docs, size), SEQ_LEN, strategy, pad_id=PAD, eos_id=EOS, stats=stats, **kw))
    return PackedRows.concat(blocks, SEQ_LEN), stats


def docs_with_eos(docs: TokenBatch) -> list[np.ndarray]:
    d = append_eos(docs, EOS)
    return [d.values[a:b] for a, b in zip(d.offsets[:-1], d.offsets[1:], strict=True)]


def test_real_corpus_has_short_and_long_docs(docs: TokenBatch) -> None:
    lens = docs.lengths
    assert lens.min() < SEQ_LEN // 16 and lens.max() > 4 * SEQ_LEN


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rows_keep_the_shard_invariants(docs: TokenBatch, strategy: str) -> None:
    rows, stats = run(docs, strategy)
    assert rows.input_ids.shape == (len(rows), SEQ_LEN) and rows.input_ids.dtype == np.uint32
    assert check_rows(rows, SEQ_LEN, n_sources=3) is None  # spans sum to seq_len, pad segment last
    assert stats.rows == len(rows)
    assert stats.tokens + stats.pad_tokens == len(rows) * SEQ_LEN
    pad_mask = np.arange(SEQ_LEN) >= SEQ_LEN - rows.pad[:, None]
    assert np.all(rows.input_ids[pad_mask] == PAD)
    assert 0 <= stats.padding_share < 1


def test_concat_round_trips_the_token_stream(docs: TokenBatch) -> None:
    rows, stats = run(docs, "concat")
    expected = docs_with_eos(docs)
    stream = np.concatenate([t for t, _ in segments(rows)])
    np.testing.assert_array_equal(stream, np.concatenate(expected))
    # Every document boundary is a segment boundary, and each segment carries its document's source.
    seg_ends = set(np.cumsum([len(t) for t, _ in segments(rows)]).tolist())
    doc_ends = np.cumsum([len(d) for d in expected])
    assert set(doc_ends.tolist()) <= seg_ends
    doc_of_pos = np.repeat(np.arange(len(expected)), [len(d) for d in expected])
    pos = 0
    for tokens, src in segments(rows):
        assert src == docs.sources[doc_of_pos[pos]]
        pos += len(tokens)
    assert stats.pad_tokens == rows.pad[-1] and np.all(rows.pad[:-1] == 0)  # only the last row pads
    assert stats.docs_truncated == 0 and stats.tokens == sum(len(d) for d in expected)
    # A document is split when it crosses a row edge.
    starts = doc_ends - [len(d) for d in expected]
    assert stats.docs_split == int(np.sum(starts // SEQ_LEN != (doc_ends - 1) // SEQ_LEN))


def test_best_fit_round_trips_documents_as_chunks(docs: TokenBatch) -> None:
    rows, stats = run(docs, "best_fit", window=64)
    expected = Counter()
    for d, s in zip(docs_with_eos(docs), docs.sources.tolist(), strict=True):
        for a in range(0, len(d), SEQ_LEN):
            expected[(d[a : a + SEQ_LEN].tobytes(), s)] += 1
    got = Counter((t.tobytes(), s) for t, s in segments(rows))
    assert got == expected  # every piece once, with its source, nothing truncated
    assert stats.docs_truncated == 0 and stats.tokens_dropped == 0
    assert stats.docs_split == int(np.sum(docs.lengths + 1 > SEQ_LEN))


def test_best_fit_beats_concat_on_splits_and_pad_on_waste(docs: TokenBatch) -> None:
    _, concat = run(docs, "concat")
    _, best = run(docs, "best_fit", window=256)
    _, padded = run(docs, "pad")
    assert best.docs_split < concat.docs_split
    assert best.padding_share < 0.1 < padded.padding_share
    assert best.tokens == concat.tokens > padded.tokens  # best_fit loses nothing, pad truncates


def test_pad_strategy_truncates_long_documents(docs: TokenBatch) -> None:
    rows, stats = run(docs, "pad")
    expected = [d for d in docs_with_eos(docs) if len(d)]
    assert len(rows) == len(expected)
    for r, d in enumerate(expected):
        n = min(len(d), SEQ_LEN)
        np.testing.assert_array_equal(rows.input_ids[r, :n], d[:n])
        assert rows.row(r)["doc_lens"][0] == n
    long = [len(d) for d in expected if len(d) > SEQ_LEN]
    assert stats.docs_truncated == len(long) > 0
    assert stats.tokens_dropped == sum(n - SEQ_LEN for n in long)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rows_do_not_depend_on_batch_boundaries(docs: TokenBatch, strategy: str) -> None:
    a, _ = run(docs, strategy, size=1, window=32)
    b, _ = run(docs, strategy, size=1000, window=32)
    for field in ("input_ids", "seg_lens", "seg_sources", "seg_offsets", "pad"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_best_fit_streams_with_bounded_open_bins(docs: TokenBatch) -> None:
    stats = PackStats(strategy="best_fit", seq_len=SEQ_LEN)
    gen = pack(batches(docs, 8), SEQ_LEN, "best_fit", pad_id=PAD, eos_id=EOS, window=16, max_open=4, stats=stats)
    first = next(gen)  # rows come out before the input is exhausted
    assert len(first) > 0 and stats.docs < len(docs)
    rows = PackedRows.concat([first, *gen], SEQ_LEN)
    assert check_rows(rows, SEQ_LEN, 3) is None
    assert sum(len(t) for t, _ in segments(rows)) == stats.doc_tokens


def test_empty_documents_make_no_segments() -> None:
    batch = TokenBatch.from_arrays([np.array([], np.uint32), np.arange(5, 10), np.array([], np.uint32)], [0, 1, 2])
    for strategy in STRATEGIES:
        rows = PackedRows.concat(list(pack([batch], 4, strategy, pad_id=0)), 4)
        assert check_rows(rows, 4, 3) is None
        assert 0 not in rows.seg_lens.tolist()


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="choose one of concat, best_fit, pad"):
        list(pack([], 8, "greedy", pad_id=0))  # type: ignore[arg-type]
