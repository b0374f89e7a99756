"""Arrow IPC files as longmix writes them (tokenized documents, the mix plan): one uncompressed record
batch per file, so a reader memory-maps it and copies nothing until a column is touched."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from longmix.core.atomic import atomic_path


def write_ipc(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks(), max_chunksize=max(table.num_rows, 1))


def read_ipc(path: Path, columns: list[str] | None = None) -> pa.Table:
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return table.select(columns) if columns else table
