"""SFT examples (token ids + loss mask + source) packed into rows of exactly ``seq_len`` tokens with their mask.

Every example is one segment of its row (document masking keeps examples from attending to each other); an
example is never split nor truncated: one longer than seq_len is dropped and counted (``too_long``), since a cut
conversation loses either its question or its answer. Layout:

- short examples (at most ``long_threshold`` tokens; all of them when it is None) are placed best-fit-decreasing
  over the whole set (``data/pack/packing.py``'s best-fit packer, run on token *positions* so the masks follow);
- long examples are padded alone, one per row (``long: pad``, the paper's layout), or join the best-fit pool
  (``long: best_fit``).

Rows are then put in a seeded random order: best-fit closes its fullest rows first, and training should not see
rows sorted by fullness. The padding segment is last with source PAD_SOURCE; the pad id is the tokenizer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from longmix.data.pack.packing import PackStats, TokenBatch, pack
from longmix.formats.packed_rows import PackedRows

LongLayout = Literal["pad", "best_fit"]
_PAD_POSITION = np.iinfo(np.uint32).max  # the packer's pad id when packing positions: never a real position


@dataclass(frozen=True)
class SftExample:
    ids: np.ndarray  # uint32
    loss_mask: np.ndarray  # uint8, aligned with ids, 0 at position 0
    source: int


@dataclass
class SftPackStats:
    seq_len: int
    layout: str
    examples: int = 0  # examples packed
    short_examples: int = 0
    long_examples: int = 0
    too_long: int = 0  # dropped: longer than seq_len
    no_target: int = 0  # dropped: the loss mask counts none of its tokens
    example_tokens: int = 0
    rows: int = 0
    pad_tokens: int = 0
    loss_tokens: int = 0

    @property
    def padding_share(self) -> float:
        total = self.rows * self.seq_len
        return self.pad_tokens / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.layout, **asdict(self), "tokens": self.example_tokens,
                "padding_share": self.padding_share}


def layout_name(long: LongLayout, long_threshold: int | None) -> str:
    """The packing as the manifest records it (SftInfo.packing)."""
    if long_threshold is None or long == "best_fit":
        return "best_fit"
    return f"short (<= {long_threshold} tokens): best_fit, long: pad"


def pack_sft(examples: Sequence[SftExample], seq_len: int, *, pad_id: int, seed: int, long: LongLayout = "pad",
             long_threshold: int | None = None, stats: SftPackStats | None = None) -> PackedRows:
    """All ``examples`` that fit, packed into masked rows in a seeded order (see the module docstring)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    st = stats if stats is not None else SftPackStats(seq_len, layout_name(long, long_threshold))
    lens = np.fromiter((len(e.ids) for e in examples), dtype=np.int64, count=len(examples))
    fits = lens <= seq_len
    # position 0 is never a target (nothing predicts it), whatever the mask says there
    targets = np.fromiter((int(e.loss_mask[1:].sum()) for e in examples), dtype=np.int64, count=len(examples))
    st.too_long += int(np.count_nonzero(~fits))
    st.no_target += int(np.count_nonzero(fits & (targets == 0)))
    keep = np.flatnonzero(fits & (targets > 0))
    threshold = seq_len if long_threshold is None or long == "best_fit" else long_threshold
    is_long = lens[keep] > threshold
    short_idx, long_idx = keep[~is_long], keep[is_long]
    st.short_examples += len(short_idx)
    st.long_examples += len(long_idx)
    st.examples += len(keep)
    st.example_tokens += int(lens[keep].sum())

    stream_ids, stream_mask, starts = _streams(examples, keep, lens)
    blocks = []
    for idx, strategy in ((short_idx, "best_fit"), (long_idx, "pad")):
        if len(idx) == 0:
            continue
        positions = TokenBatch.from_arrays(
            [np.arange(starts[i], starts[i] + lens[i], dtype=np.uint32) for i in idx.tolist()],
            np.asarray([examples[i].source for i in idx.tolist()], dtype=np.int16))
        inner = PackStats(strategy=strategy, seq_len=seq_len)
        window = max(len(idx), 1)  # the whole set at once: best-fit-decreasing over every example
        blocks.extend(pack([positions], seq_len, strategy, pad_id=int(_PAD_POSITION), window=window,  # type: ignore[arg-type]
                           max_open=window, stats=inner))
    if not blocks:
        return PackedRows.concat([], seq_len)
    rows = PackedRows.concat(blocks, seq_len)
    rows = _resolve(rows, stream_ids, stream_mask, pad_id)
    rows = rows.take(np.random.default_rng([seed, 0x5346]).permutation(len(rows)))
    st.rows += len(rows)
    st.pad_tokens += int(rows.pad.sum())
    st.loss_tokens += int(rows.loss_mask.sum(dtype=np.int64))
    return rows


def _streams(examples: Sequence[SftExample], keep: np.ndarray, lens: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept examples' ids and masks back to back, and each example's start in that stream (-1: not kept)."""
    starts = np.full(len(examples), -1, dtype=np.int64)
    starts[keep] = np.concatenate([[0], np.cumsum(lens[keep])[:-1]]) if len(keep) else []
    ids = [examples[i].ids for i in keep.tolist()]
    masks = [examples[i].loss_mask for i in keep.tolist()]
    stream_mask = np.concatenate(masks).astype(np.uint8) if masks else np.zeros(0, np.uint8)
    stream_mask[starts[keep]] = 0
    return (np.concatenate(ids).astype(np.uint32) if ids else np.zeros(0, np.uint32),
            stream_mask, starts)


def _resolve(rows: PackedRows, stream_ids: np.ndarray, stream_mask: np.ndarray, pad_id: int) -> PackedRows:
    """Rows of stream positions as rows of token ids with their loss mask; padding gets pad_id and mask 0."""
    pos = rows.input_ids
    real = pos != _PAD_POSITION
    ids = np.full(pos.shape, pad_id, dtype=np.uint32)
    mask = np.zeros(pos.shape, dtype=np.uint8)
    ids[real] = stream_ids[pos[real]]
    mask[real] = stream_mask[pos[real]]
    return PackedRows(ids, rows.seg_lens, rows.seg_sources, rows.seg_offsets, rows.pad, mask)
