"""Rows handed from one step's tasks to the next step's tasks, so no process gathers them all.

A task writes its rows in one Arrow IPC file sorted by the destination they go to (`write_routed`: a
document range for near dedup, a (source, bucket) cell or a shard for the mix) and returns the offsets of
each destination's rows; the next step's task for destination r reads its slice of every such file
(`slices_for`, `read_slices`), memory-mapped, so it holds its own rows only. The driver keeps the offsets:
(destinations + 1) integers per file. Documents are global indices 0..docs-1 in shard order, split into
equal ranges by `range_bounds`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from longmix.formats.ipc import read_ipc, write_ipc


def range_bounds(docs: int, ranges: int) -> np.ndarray:
    """The first document of each of `ranges` equal ranges, and `docs` at the end."""
    return np.array([r * docs // ranges for r in range(ranges + 1)], dtype=np.int64)


def range_of(docs: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The range each document falls in."""
    return np.searchsorted(bounds, docs, side="right") - 1


def write_routed(path: Path, table: pa.Table, dest: np.ndarray, ranges: int) -> list[int]:
    """Write the rows sorted by their range (`dest`, stable: rows keep their order within a range); the
    returned offsets put range r's rows at offsets[r]:offsets[r + 1]."""
    order = np.argsort(dest, kind="stable")
    write_ipc(path, table.take(pa.array(order)))
    counts = np.bincount(dest, minlength=ranges) if len(dest) else np.zeros(ranges, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()


def slices_for(files: list[Path], offsets: list[list[int]], r: int) -> tuple[list[Path], list[int], list[int]]:
    """Range r's rows in routed files: (files, starts, stops), empty slices left out."""
    out = [(f, o[r], o[r + 1]) for f, o in zip(files, offsets, strict=True) if o[r + 1] > o[r]]
    return [f for f, _, _ in out], [a for _, a, _ in out], [b for _, _, b in out]


def read_slices(files: list[str], starts: list[int], stops: list[int], schema: pa.Schema) -> pa.Table:
    """The rows of the given slices, in order, as one table."""
    parts = [read_ipc(Path(f)).slice(a, b - a) for f, a, b in zip(files, starts, stops, strict=True)]
    return pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()
