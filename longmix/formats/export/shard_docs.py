"""A packed shard as what every export writes: its real tokens (padding left out), the documents' lengths
and sources, and how many documents and tokens each row holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longmix.formats.packed_rows import PAD_SOURCE
from longmix.formats.packed_shards import read_rows


@dataclass
class ShardDocs:
    tokens: np.ndarray  # uint32, the rows' real tokens back to back
    doc_lens: np.ndarray  # int64, one per document (a packed segment), in row order
    doc_sources: np.ndarray  # int16, aligned with doc_lens
    row_docs: np.ndarray  # int64 (rows,), documents per row
    row_tokens: np.ndarray  # int64 (rows,), real tokens per row

    @property
    def rows(self) -> int:
        return len(self.row_docs)

    def row_slices(self) -> tuple[np.ndarray, np.ndarray]:
        """Start offsets of each row in `tokens` and of each row's first document in `doc_lens` (n + 1 each)."""
        tok = np.zeros(self.rows + 1, np.int64)
        np.cumsum(self.row_tokens, out=tok[1:])
        doc = np.zeros(self.rows + 1, np.int64)
        np.cumsum(self.row_docs, out=doc[1:])
        return tok, doc


def shard_docs(path: Path, seq_len: int) -> ShardDocs:
    """Vectorized over the shard: the padding of a row is its last segment, so a row's real tokens lead."""
    rows = read_rows(path, seq_len)
    real = (seq_len - rows.pad).astype(np.int64)
    keep_tok = np.arange(seq_len)[None, :] < real[:, None]
    keep_seg = rows.seg_sources != PAD_SOURCE
    row_of_seg = np.repeat(np.arange(len(rows)), np.diff(rows.seg_offsets))
    return ShardDocs(tokens=np.ascontiguousarray(rows.input_ids[keep_tok]),
                     doc_lens=rows.seg_lens[keep_seg].astype(np.int64),
                     doc_sources=rows.seg_sources[keep_seg],
                     row_docs=np.bincount(row_of_seg[keep_seg], minlength=len(rows)).astype(np.int64),
                     row_tokens=real)
