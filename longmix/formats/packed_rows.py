"""Packed rows in memory: the training rows of a packed shard with their document segments.

Segment arrays are flat with per-row offsets; a row's padding, when present, is its last segment, with
source PAD_SOURCE. SFT rows also carry a per-token loss mask (which tokens are targets); pretraining rows have
none, and every target but padding and document starts counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD_SOURCE = -1


@dataclass
class PackedRows:
    """A block of packed rows; segment arrays are flat with per-row offsets."""

    input_ids: np.ndarray  # (n, seq_len) uint32
    seg_lens: np.ndarray  # int32, all segments of all rows
    seg_sources: np.ndarray  # int16, aligned with seg_lens
    seg_offsets: np.ndarray  # int64 (n + 1), row r owns segments seg_offsets[r]:seg_offsets[r + 1]
    pad: np.ndarray  # (n,) int32
    # (n, seq_len) uint8 or None: 1 where predicting token t (from t-1) counts in the loss; always 0 on padding
    # and on the first token of each segment. Only SFT shards have one (the loss mode decided it when packing).
    loss_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pad)

    def row(self, r: int) -> dict[str, Any]:
        a, b = self.seg_offsets[r], self.seg_offsets[r + 1]
        return {
            "input_ids": self.input_ids[r],
            "doc_lens": self.seg_lens[a:b],
            "doc_sources": self.seg_sources[a:b],
            "pad": int(self.pad[r]),
            **({"loss_mask": self.loss_mask[r]} if self.loss_mask is not None else {}),
        }

    def take(self, idx: np.ndarray) -> PackedRows:
        """The rows at ``idx``, in that order (a copy)."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = np.diff(self.seg_offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        gather = np.repeat(self.seg_offsets[:-1][idx], counts) + ranges(counts)
        return PackedRows(
            input_ids=self.input_ids[idx],
            seg_lens=self.seg_lens[gather],
            seg_sources=self.seg_sources[gather],
            seg_offsets=offsets,
            pad=self.pad[idx],
            loss_mask=None if self.loss_mask is None else self.loss_mask[idx],
        )

    @staticmethod
    def concat(blocks: Sequence[PackedRows], seq_len: int) -> PackedRows:
        if not blocks:
            return empty_rows(seq_len)
        masked = {b.loss_mask is not None for b in blocks}
        if len(masked) > 1:
            raise ValueError("cannot concatenate rows with and without a loss mask")
        seg_counts = np.concatenate([np.diff(b.seg_offsets) for b in blocks])
        offsets = np.zeros(len(seg_counts) + 1, dtype=np.int64)
        np.cumsum(seg_counts, out=offsets[1:])
        return PackedRows(
            input_ids=np.concatenate([b.input_ids for b in blocks]),
            seg_lens=np.concatenate([b.seg_lens for b in blocks]),
            seg_sources=np.concatenate([b.seg_sources for b in blocks]),
            seg_offsets=offsets,
            pad=np.concatenate([b.pad for b in blocks]),
            loss_mask=np.concatenate([b.loss_mask for b in blocks]) if masked == {True} else None,
        )

def ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(k) for every k in lengths, vectorized."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def empty_rows(seq_len: int) -> PackedRows:
    return PackedRows(
        input_ids=np.zeros((0, seq_len), np.uint32),
        seg_lens=np.zeros(0, np.int32),
        seg_sources=np.zeros(0, np.int16),
        seg_offsets=np.zeros(1, np.int64),
        pad=np.zeros(0, np.int32),
    )
