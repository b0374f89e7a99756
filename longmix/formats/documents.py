"""The document-shard contract (Parquet, zstd) and the quarantine file format, with atomic writers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longmix.core.atomic import atomic_path

DOC_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("text", pa.large_string()),
    ("n_chars", pa.int32()),
    ("meta", pa.string()),
    ("content_hash", pa.string()),
])

QUARANTINE_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("origin_file", pa.string()),
    ("origin_pos", pa.int64()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("raw", pa.large_binary()),
])

_ROW_GROUP_ROWS = 8192


_FREE_TEXT = {"text", "meta", "raw", "detail"}  # free text: unique values, no dictionary, no min/max


COMPRESSIONS = ("zstd", "lz4", "none")  # of document shards: recipe `documents.compression`


def write_table(path: Path, table: pa.Table, compression: str = "zstd") -> int:
    """Write one Parquet file atomically (zstd unless told); returns its size in bytes. Free-text columns skip
    the dictionary attempt and the min/max statistics: both cost time (15% of a shard's write) and buy
    nothing."""
    small = [c for c in table.column_names if c not in _FREE_TEXT]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression, row_group_size=_ROW_GROUP_ROWS, use_dictionary=small,
                       write_statistics=small)
    return path.stat().st_size


@contextmanager
def table_stream(path: Path, schema: pa.Schema, compression: str = "zstd") -> Iterator[Callable[[pa.Table], None]]:
    """Write one Parquet file atomically from tables given in parts (yields `add(part)`), with write_table's
    options and row groups: the bytes are the same however the rows were split into parts, and only one
    row group is held at a time."""
    small = [c for c in schema.names if c not in _FREE_TEXT]
    pending: list[pa.Table] = []
    wrote = False
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression=compression, use_dictionary=small,
                              write_statistics=small) as writer:
            def flush(least: int) -> None:
                nonlocal wrote
                table = pa.concat_tables(pending).combine_chunks() if pending else schema.empty_table()
                pending.clear()
                while table.num_rows >= least and table.num_rows:
                    writer.write_table(table.slice(0, _ROW_GROUP_ROWS), row_group_size=_ROW_GROUP_ROWS)
                    table = table.slice(_ROW_GROUP_ROWS)
                    wrote = True
                if table.num_rows:
                    pending.append(table)

            def add(part: pa.Table) -> None:
                pending.append(part.select(schema.names).cast(schema))
                if sum(t.num_rows for t in pending) >= _ROW_GROUP_ROWS:
                    flush(_ROW_GROUP_ROWS)

            yield add
            flush(1)
            if not wrote:  # write_table writes one empty row group for no rows: so does the stream
                writer.write_table(schema.empty_table())


class ShardWriter:
    """Rolls document rows into numbered Parquet parts of at most ~`shard_bytes` of text each."""

    def __init__(self, root: Path, rel_stem: str, shard_bytes: int, schema: pa.Schema = DOC_SCHEMA,
                 compression: str = "zstd") -> None:
        self.root, self.rel_stem, self.shard_bytes, self.schema = root, rel_stem, shard_bytes, schema
        self.compression = compression
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.outputs: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], nbytes: int) -> None:
        self._rows.append(row)
        self._bytes += nbytes
        if self._bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._write(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows, self._bytes = [], 0

    def _write(self, table: pa.Table) -> None:
        rel = f"{self.rel_stem}-{len(self.outputs):04d}.parquet"
        size = write_table(self.root / rel, table, self.compression)
        self.outputs.append({"path": rel, "rows": table.num_rows, "bytes": size})


def write_quarantine(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    rows = list(rows)
    if not rows:
        return 0
    write_table(path, pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA))
    return len(rows)


