"""What a reader yields per record (`Good` or `Bad`), and the one record function of every table-like input
(Parquet, Hugging Face Arrow files, MDS samples): text column, id column, the other columns to `meta`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from longmix.core.errors import UserError


@dataclass
class Good:
    text: str
    id: str | None
    meta: dict[str, Any]
    origin_file: str
    origin_pos: int
    raw_bytes: int

    @property
    def origin(self) -> str:
        return f"{self.origin_file}:{self.origin_pos}" if self.origin_pos >= 0 else self.origin_file


@dataclass
class Bad:
    reason: str
    detail: str
    origin_file: str
    origin_pos: int  # 1-based line for JSONL, 0-based row for Parquet, Arrow and MDS, -1 for a whole file
    raw: bytes = field(repr=False, default=b"")


def table_record(rec: dict, text_field: str, id_field: str | None, name: str, row: int, cap: int) -> Good | Bad:
    """One row as a dict (its values plain Python): the text column (str, or bytes that must be UTF-8) checked
    against the cap, the id column as a string, every other column to meta."""
    text = rec.pop(text_field)
    raw_repr = json.dumps({text_field: text if not isinstance(text, bytes) else None, **rec}, default=str)
    raw = text if isinstance(text, bytes) else raw_repr.encode("utf-8", "surrogatepass")
    if text is None:
        return Bad("missing_text", f"'{text_field}' is null", name, row, raw)
    if isinstance(text, bytes):
        if len(text) > cap:
            return Bad("too_large", f"{len(text)} bytes > max_doc_bytes={cap}; first {cap} kept", name, row,
                       text[:cap])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Bad("invalid_utf8", str(exc), name, row, raw)
    if not isinstance(text, str):
        return Bad("text_not_string", f"'{text_field}' is {type(text).__name__}", name, row, raw)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > cap:
        return Bad("too_large", f"{size} bytes > max_doc_bytes={cap}; first {cap} kept", name, row,
                   text.encode("utf-8", "surrogatepass")[:cap])
    doc_id = rec.pop(id_field, None) if id_field else None
    meta = json.loads(json.dumps(rec, default=str))
    return Good(text, None if doc_id is None else str(doc_id), meta, name, row, size)


_SLICE_ROWS = 256  # rows turned into Python objects at a time: memory follows a slice, not a row group


def batch_records(batch: pa.RecordBatch | pa.Table, text_field: str, id_field: str | None, name: str, first_row: int,
                  cap: int) -> Iterator[Good | Bad]:
    """Every row of an Arrow batch or table through `table_record`, numbered from `first_row`."""
    row = first_row
    for start in range(0, batch.num_rows, _SLICE_ROWS):
        for rec in batch.slice(start, _SLICE_ROWS).to_pylist():
            yield table_record(rec, text_field, id_field, name, row, cap)
            row += 1


def missing_column(name: str, text_field: str, columns: list[str]) -> str:
    return (f"{name}: no column '{text_field}' (columns: {', '.join(columns)}); set `text_field:` for this "
            "source")


def safe_relative(root: Path, name: object, what: str) -> str:
    """A file name from a dataset's own metadata, as a relative POSIX path inside `root`: an absolute name or
    one with `..` is refused before anything is read."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise UserError(f"'{root}': {what} names the file {name!r}, which is not a relative path; refused")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise UserError(f"'{root}': {what} names the file '{name}' outside the folder; refused, nothing read")
    return str(pure)
