"""The decisions file of a global step (exact or near dedup): only the rows that do not survive,
as (shard, row, action, reason, detail) with action "drop" or "quarantine"."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longmix.formats.documents import write_table

DECISION_SCHEMA = pa.schema([
    ("shard", pa.int32()), ("row", pa.int64()), ("action", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()),
])


def write_decisions(path: Path, rows: pa.Table) -> None:
    write_table(path, rows.select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA))


def read_decisions(path: str | Path, shard: int) -> pa.Table:
    """The decisions of one input shard (a pushed-down filter: the file is read once per shard)."""
    return pq.read_table(path, filters=[("shard", "=", shard)])
