"""Packing tokenized documents into rows of exactly ``seq_len`` tokens.

Three strategies, all streaming over ``TokenBatch``es and all giving the same rows whatever the batch
boundaries (so output depends only on the document order):

- ``concat``: documents back to back, cut every seq_len tokens; a document crossing a cut is *split*
  (its tail starts the next row without its context). Only the last row is padded.
- ``best_fit``: documents longer than seq_len are split into seq_len chunks plus a remainder, then the
  pieces are placed by best-fit-decreasing ("Fewer Truncations Improve Language Modeling", Ding et al.
  2024) inside a window of ``window`` pieces; bins still open after a window carry over to the next one,
  at most ``max_open`` of them (the fullest are closed first), so memory is bounded.
- ``pad``: one document per row, truncated to seq_len (the tail is dropped), padded to seq_len.

Every row carries its segments: ``doc_lens`` (summing to seq_len, with a trailing padding segment when
``pad`` > 0) and ``doc_sources`` (the source index per segment, ``PAD_SOURCE`` for padding).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from longmix.formats.packed_rows import PAD_SOURCE, PackedRows, ranges

Strategy = Literal["concat", "best_fit", "pad"]
STRATEGIES: tuple[str, ...] = ("concat", "best_fit", "pad")
DEFAULT_WINDOW = 8192


@dataclass
class TokenBatch:
    """Documents as one flat uint32 token array, int64 offsets (n + 1) and an int16 source per doc."""

    values: np.ndarray
    offsets: np.ndarray
    sources: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.uint32)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.sources = np.asarray(self.sources, dtype=np.int16)
        if self.offsets.ndim != 1 or len(self.offsets) != len(self.sources) + 1:
            raise ValueError("TokenBatch needs len(offsets) == len(sources) + 1")
        if len(self.offsets) and (self.offsets[0] != 0 or self.offsets[-1] != len(self.values)):
            raise ValueError("TokenBatch offsets must start at 0 and end at len(values)")

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray) -> TokenBatch:
        """The documents at ``idx`` (repeats allowed), in that order: how a mix plan's sample order is read."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        gather = np.repeat(self.offsets[:-1][idx], lens) + ranges(lens)
        return TokenBatch(self.values[gather], offsets, self.sources[idx])

    @classmethod
    def from_arrays(cls, docs: Sequence[np.ndarray], sources: Sequence[int] | np.ndarray) -> TokenBatch:
        lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        values = np.concatenate(docs).astype(np.uint32) if docs else np.zeros(0, np.uint32)
        return cls(values, offsets, np.asarray(sources))

    @classmethod
    def from_arrow(cls, input_ids: pa.Array | pa.ChunkedArray, sources: np.ndarray) -> TokenBatch:
        """From a (large_)list<uint32> column of tokenized docs; zero-copy for a single chunk."""
        if isinstance(input_ids, pa.ChunkedArray):
            input_ids = input_ids.combine_chunks()
        offsets = input_ids.offsets.to_numpy().astype(np.int64)
        values = input_ids.values.to_numpy()[offsets[0] : offsets[-1]]
        return cls(values, offsets - offsets[0], sources)


@dataclass
class PackStats:
    strategy: str
    seq_len: int
    docs: int = 0
    doc_tokens: int = 0  # tokens offered, EOS included
    rows: int = 0
    tokens: int = 0  # non-padding tokens written
    pad_tokens: int = 0
    docs_split: int = 0  # documents spread over more than one row
    docs_truncated: int = 0  # documents that lost tokens (pad strategy, concat with drop_last)
    tokens_dropped: int = 0

    @property
    def padding_share(self) -> float:
        total = self.rows * self.seq_len
        return self.pad_tokens / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "padding_share": self.padding_share}

    def _count_rows(self, rows: PackedRows) -> None:
        self.rows += len(rows)
        pad = int(rows.pad.sum())
        self.pad_tokens += pad
        self.tokens += len(rows) * self.seq_len - pad


def pack(
    batches: Iterable[TokenBatch],
    seq_len: int,
    strategy: Strategy,
    *,
    pad_id: int,
    eos_id: int | None = None,
    window: int = DEFAULT_WINDOW,
    max_open: int | None = None,
    drop_last: bool = False,
    stats: PackStats | None = None,
) -> Iterator[PackedRows]:
    """Pack documents into rows of exactly seq_len tokens; ``stats`` (if given) is filled in as it goes.

    ``eos_id``, when set, is appended to every document before packing (leave it None when the
    tokenize stage already added EOS). ``window``/``max_open`` bound best_fit's memory; ``drop_last``
    drops concat's final partial row instead of padding it.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown packing strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    st = stats if stats is not None else PackStats(strategy=strategy, seq_len=seq_len)
    if strategy == "concat":
        packer: _Packer = _ConcatPacker(seq_len, pad_id, st, drop_last)
    elif strategy == "best_fit":
        packer = _BestFitPacker(seq_len, pad_id, st, window, max_open if max_open is not None else window)
    else:
        packer = _PadPacker(seq_len, pad_id, st)
    for batch in batches:
        if eos_id is not None:
            batch = append_eos(batch, eos_id)
        st.docs += len(batch)
        st.doc_tokens += len(batch.values)
        for rows in packer.add(batch):
            st._count_rows(rows)
            yield rows
    for rows in packer.finish():
        st._count_rows(rows)
        yield rows


def append_eos(batch: TokenBatch, eos_id: int) -> TokenBatch:
    """The same documents with ``eos_id`` appended to each, vectorized."""
    n = len(batch)
    offsets = batch.offsets + np.arange(n + 1, dtype=np.int64)
    values = np.empty(len(batch.values) + n, dtype=np.uint32)
    is_eos = np.zeros(len(values), dtype=bool)
    is_eos[offsets[1:] - 1] = True
    values[is_eos] = eos_id
    values[~is_eos] = batch.values
    return TokenBatch(values, offsets, batch.sources)


class _Packer(Protocol):
    def add(self, batch: TokenBatch) -> Iterator[PackedRows]: ...

    def finish(self) -> Iterator[PackedRows]: ...


class _ConcatPacker:
    """Keeps fewer than seq_len tokens between batches: the pieces of the unfinished last row."""

    def __init__(self, seq_len: int, pad_id: int, stats: PackStats, drop_last: bool) -> None:
        self.L, self.pad_id, self.stats, self.drop_last = seq_len, pad_id, stats, drop_last
        self.carry = np.zeros(0, np.uint32)
        self.carry_lens = np.zeros(0, np.int64)
        self.carry_src = np.zeros(0, np.int16)
        self.carry_uid = np.zeros(0, np.int64)
        self.next_uid = 0
        self.last_split_uid = -1  # a carried tail must not count as split twice

    def add(self, batch: TokenBatch) -> Iterator[PackedRows]:
        L = self.L
        n = len(batch)
        stream = np.concatenate([self.carry, batch.values])
        lens = np.concatenate([self.carry_lens, batch.lengths])
        srcs = np.concatenate([self.carry_src, batch.sources])
        uids = np.concatenate([self.carry_uid, np.arange(self.next_uid, self.next_uid + n)])
        self.next_uid += n
        ends = np.cumsum(lens)
        starts = ends - lens
        cut = (len(stream) // L) * L
        if cut:
            crossing = (lens > 0) & (starts < cut) & (starts // L != (ends - 1) // L)
            new = uids[crossing] > self.last_split_uid
            self.stats.docs_split += int(np.count_nonzero(new))
            if np.any(crossing):
                self.last_split_uid = max(self.last_split_uid, int(uids[crossing].max()))
            yield _cut_rows(stream[:cut], ends, srcs, L)
        tail = ends > cut
        self.carry = stream[cut:]
        self.carry_lens = ends[tail] - np.maximum(starts[tail], cut)
        self.carry_src, self.carry_uid = srcs[tail], uids[tail]

    def finish(self) -> Iterator[PackedRows]:
        if len(self.carry) == 0:
            return
        if self.drop_last:
            self.stats.tokens_dropped += len(self.carry)
            self.stats.docs_truncated += int(np.count_nonzero(self.carry_lens))
            return
        keep = self.carry_lens > 0
        lens, srcs = self.carry_lens[keep], self.carry_src[keep]
        yield _rows_from_bins([[self.carry]], [lens], [srcs], self.L, self.pad_id)


def _cut_rows(stream: np.ndarray, piece_ends: np.ndarray, piece_src: np.ndarray, L: int) -> PackedRows:
    """Rows from a stream whose length is a multiple of L, with segments at piece ends and row edges."""
    n_rows = len(stream) // L
    cut = n_rows * L
    row_edges = np.arange(1, n_rows + 1, dtype=np.int64) * L
    bounds = np.union1d(piece_ends[(piece_ends > 0) & (piece_ends <= cut)], row_edges)
    seg_starts = np.concatenate([[0], bounds[:-1]])
    seg_lens = (bounds - seg_starts).astype(np.int32)
    seg_src = piece_src[np.searchsorted(piece_ends, seg_starts, side="right")]
    seg_offsets = np.searchsorted(seg_starts, np.arange(n_rows + 1, dtype=np.int64) * L).astype(np.int64)
    return PackedRows(
        input_ids=stream.reshape(n_rows, L),
        seg_lens=seg_lens,
        seg_sources=seg_src.astype(np.int16),
        seg_offsets=seg_offsets,
        pad=np.zeros(n_rows, np.int32),
    )


class _PadPacker:
    def __init__(self, seq_len: int, pad_id: int, stats: PackStats) -> None:
        self.L, self.pad_id, self.stats = seq_len, pad_id, stats

    def add(self, batch: TokenBatch) -> Iterator[PackedRows]:
        L = self.L
        lens = batch.lengths
        keep = lens > 0  # an empty document makes no row
        starts, lens, srcs = batch.offsets[:-1][keep], lens[keep], batch.sources[keep]
        n = len(lens)
        if n == 0:
            return
        used = np.minimum(lens, L)
        over = lens > L
        self.stats.docs_truncated += int(np.count_nonzero(over))
        self.stats.tokens_dropped += int((lens[over] - L).sum())
        rows = np.full((n, L), self.pad_id, dtype=np.uint32)
        mask = np.arange(L) < used[:, None]
        # Row-major order of `mask` is document order, so the gather index is each doc's start + position.
        gather = np.repeat(starts, used) + ranges(used)
        rows[mask] = batch.values[gather]
        pad = (L - used).astype(np.int32)
        n_seg = 1 + (pad > 0)
        seg_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_seg, out=seg_offsets[1:])
        seg_lens = np.empty(int(seg_offsets[-1]), dtype=np.int32)
        seg_src = np.empty(len(seg_lens), dtype=np.int16)
        seg_lens[seg_offsets[:-1]] = used
        seg_src[seg_offsets[:-1]] = srcs
        pad_pos = seg_offsets[:-1][pad > 0] + 1
        seg_lens[pad_pos] = pad[pad > 0]
        seg_src[pad_pos] = PAD_SOURCE
        yield PackedRows(rows, seg_lens, seg_src, seg_offsets, pad)

    def finish(self) -> Iterator[PackedRows]:
        return iter(())


class _BestFitPacker:
    """Best-fit-decreasing over windows of pieces, with open bins kept in a list sorted by free space."""

    def __init__(self, seq_len: int, pad_id: int, stats: PackStats, window: int, max_open: int) -> None:
        if window < 1 or max_open < 1:
            raise ValueError("best_fit window and max_open must be at least 1")
        self.L, self.pad_id, self.stats = seq_len, pad_id, stats
        self.window, self.max_open = window, max_open
        self.pending: list[tuple[np.ndarray, int]] = []  # (tokens view, source) not yet placed
        self.bins: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        self.free: dict[int, int] = {}
        # Sorted keys free * 2^32 + bin id: bisect finds the tightest bin that still fits.
        self.keys: list[int] = []
        self.next_bin = 0

    def add(self, batch: TokenBatch) -> Iterator[PackedRows]:
        L = self.L
        lens = batch.lengths
        self.stats.docs_split += int(np.count_nonzero(lens > L))
        values, offsets, sources = batch.values, batch.offsets, batch.sources.tolist()
        for i in np.flatnonzero(lens > 0).tolist():
            a, b = int(offsets[i]), int(offsets[i + 1])
            src = sources[i]
            for s in range(a, b, L):
                self.pending.append((values[s : min(s + L, b)], src))
            while len(self.pending) >= self.window:
                chunk, self.pending = self.pending[: self.window], self.pending[self.window :]
                rows = self._place(chunk)
                if rows is not None:
                    yield rows

    def finish(self) -> Iterator[PackedRows]:
        closed = []
        if self.pending:
            closed = self._place_window(self.pending)
            self.pending = []
        # Everything still open is closed, fullest first, for a deterministic order.
        for key in self.keys:
            closed.append(key & 0xFFFFFFFF)
        self.keys = []
        if closed:
            yield self._emit(closed)

    def _place(self, chunk: list[tuple[np.ndarray, int]]) -> PackedRows | None:
        closed = self._place_window(chunk)
        # Bound memory: close the fullest bins (least free space) beyond max_open.
        excess = len(self.keys) - self.max_open
        if excess > 0:
            closed.extend(key & 0xFFFFFFFF for key in self.keys[:excess])
            del self.keys[:excess]
        return self._emit(closed) if closed else None

    def _place_window(self, chunk: list[tuple[np.ndarray, int]]) -> list[int]:
        L = self.L
        sizes = np.fromiter((len(t) for t, _ in chunk), dtype=np.int64, count=len(chunk))
        closed: list[int] = []
        for j in np.argsort(-sizes, kind="stable").tolist():
            tokens, src = chunk[j]
            size = len(tokens)
            pos = bisect.bisect_left(self.keys, size << 32) if size < L else len(self.keys)
            if pos < len(self.keys):
                key = self.keys.pop(pos)
                bin_id = key & 0xFFFFFFFF
                free = (key >> 32) - size
            else:
                bin_id = self.next_bin
                self.next_bin = (self.next_bin + 1) & 0xFFFFFFFF
                self.bins[bin_id] = ([], [])
                free = L - size
            # Copy so a long-lived open bin does not pin a whole input batch in memory.
            self.bins[bin_id][0].append(tokens.copy() if free else tokens)
            self.bins[bin_id][1].append(src)
            if free == 0:
                closed.append(bin_id)
            else:
                bisect.insort(self.keys, (free << 32) | bin_id)
        return closed

    def _emit(self, bin_ids: list[int]) -> PackedRows:
        parts, lens, srcs = [], [], []
        for bin_id in bin_ids:
            toks, src = self.bins.pop(bin_id)
            parts.append(toks)
            lens.append(np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks)))
            srcs.append(np.asarray(src, dtype=np.int16))
        return _rows_from_bins(parts, lens, srcs, self.L, self.pad_id)


def _rows_from_bins(
    parts: list[list[np.ndarray]], lens: list[np.ndarray], srcs: list[np.ndarray], L: int, pad_id: int
) -> PackedRows:
    """Rows from per-row token pieces, padded at the end to L."""
    n = len(parts)
    rows = np.full((n, L), pad_id, dtype=np.uint32)
    pad = np.empty(n, dtype=np.int32)
    seg_lens, seg_src, n_seg = [], [], np.empty(n, dtype=np.int64)
    for r in range(n):
        used = int(lens[r].sum())
        if used:
            rows[r, :used] = np.concatenate(parts[r]) if len(parts[r]) > 1 else parts[r][0]
        pad[r] = L - used
        if pad[r]:
            seg_lens.append(np.append(lens[r], pad[r]))
            seg_src.append(np.append(srcs[r], np.int16(PAD_SOURCE)))
        else:
            seg_lens.append(lens[r])
            seg_src.append(srcs[r])
        n_seg[r] = len(seg_lens[-1])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_seg, out=offsets[1:])
    return PackedRows(
        input_ids=rows,
        seg_lens=np.concatenate(seg_lens).astype(np.int32),
        seg_sources=np.concatenate(seg_src).astype(np.int16),
        seg_offsets=offsets,
        pad=pad,
    )
