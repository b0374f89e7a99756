"""Arrow IPC files as longmix writes them (tokenized documents, the mix plan): uncompressed, one record batch
per file (or per part, `ipc_parts`), so a reader memory-maps it and copies nothing until a column is
touched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def ipc_parts(path: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """Write one IPC file atomically from tables given in parts (yields `add(part)`), one record batch a part:
    a file too big for one process's memory, read like any other (`read_ipc`: its columns come chunked)."""
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            yield lambda part: writer.write_table(part.select(schema.names).cast(schema).combine_chunks(),
                                                  max_chunksize=max(part.num_rows, 1))
