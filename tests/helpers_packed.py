"""Packed rows read back in tests: the document segments they hold."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longmix.formats.packed_rows import PAD_SOURCE, PackedRows


def segments(rows: PackedRows) -> Iterator[tuple[np.ndarray, int]]:
    """(tokens, source index) of every non-padding segment, in row order."""
    for r in range(len(rows)):
        row = rows.row(r)
        pos = 0
        for n, s in zip(row["doc_lens"], row["doc_sources"], strict=True):
            if s != PAD_SOURCE:
                yield row["input_ids"][pos : pos + n], int(s)
            pos += n
