"""Texts from files: the one reader for every tool that wants documents' plain texts rather than a stage's
shards (tokenizer and quality-classifier training, the synthetic corpora, evaluation haystacks and fillers).
Inputs are expanded and read as ingest reads them (`readers.expand_input`, `readers.read_records`), so a
file or folder means the same thing everywhere; unreadable records are skipped."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from longmix.data.ingest.readers import Good, expand_input, read_records


def read_texts(paths: Iterable[Path], text_field: str = "text", id_field: str | None = None, cap: int = 64 << 20,
               fmt: str = "auto") -> Iterator[tuple[str, str]]:
    """(id, text) of every readable record of ``paths`` (files or folders), in order; a record without an id
    is named ``<file name>:<record number>``. ``cap``: the longest record, in bytes; ``fmt``: the format, when
    the caller knows it (auto: by name and folder layout, as ingest decides)."""
    for path in paths:
        for f, f_fmt in expand_input(path, fmt):
            for k, rec in enumerate(read_records(f, f_fmt, text_field, id_field, cap)):
                if isinstance(rec, Good):
                    yield rec.id or f"{Path(f).name}:{k}", rec.text
