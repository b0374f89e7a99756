"""A mix as MosaicML streaming (MDS) shards, written by mosaicml-streaming's own `MDSWriter`: the format
ProLong's trainer and many long-data papers read with `streaming.StreamingDataset`.

Columns per row (padding left out), named as ProLong's data collator reads them (princeton-nlp/ProLong,
`training/dataset.py`): `input_ids`, and `indices`, the (start, end) token span of each document in the row,
which its collator turns into `seq_lengths` for per-document attention. Beside them `length` (the row's token
count, which ProLong's length sorting also reads) and `doc_sources` (each document's source index in the
lineage's `sources`).

Each manifest shard becomes one MDS folder `shard-NNNNN/` (written in the progress folder, then renamed into
place); the finish step merges their `index.json` files into the root's with streaming's `merge_index`, the
layout streaming documents for partitioned writers.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.streaming_import import import_streaming_module
from longmix.formats.export.shard_docs import ShardDocs
from longmix.formats.manifest import Manifest


@contextmanager
def _quiet() -> Iterator[None]:
    """streaming logs routine warnings on the root logger ("Directory ... exists", "A temporary folder is
    created"): they are not the user's concern, and the export prints its own line per file."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class MdsExport:
    name = "mds"
    dtypes = ("uint16", "uint32", "int64")

    def __init__(self, work: Path, manifest: Manifest, card: dict[str, Any]) -> None:
        self.tmp = work / "tmp"
        self.writer = import_streaming_module("streaming.base.format.mds.writer").MDSWriter  # fails before work

    def shard_files(self, i: int, n: int) -> list[str]:
        return [f"shard-{i:05d}/"]

    def write_shard(self, docs: ShardDocs, i: int, n: int, out: Path, dtype: np.dtype) -> None:
        tmp = self.tmp / f"shard-{i:05d}"
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed run left
        columns = {"input_ids": f"ndarray:{dtype.name}", "indices": "ndarray:uint32", "length": "int",
                   "doc_sources": "ndarray:int16"}
        tok, doc = docs.row_slices()
        tokens = docs.tokens.astype(dtype)
        with _quiet(), self.writer(out=str(tmp), columns=columns, compression=None, size_limit=1 << 27) as w:
            for r in range(docs.rows):
                lens = docs.doc_lens[doc[r]:doc[r + 1]]
                ends = np.cumsum(lens)
                w.write({"input_ids": tokens[tok[r]:tok[r + 1]],
                         "indices": np.stack([ends - lens, ends], axis=1).astype(np.uint32),
                         "length": int(docs.row_tokens[r]),
                         "doc_sources": docs.doc_sources[doc[r]:doc[r + 1]]})
        final = out / f"shard-{i:05d}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def finish(self, out: Path, n: int, dtype: np.dtype) -> list[str]:
        merge_index = import_streaming_module("streaming.base.util").merge_index
        with _quiet():
            merge_index([str(out / f"shard-{i:05d}" / "index.json") for i in range(n)], str(out), keep_local=True)
        return ["index.json"]

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
