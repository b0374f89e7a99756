"""A mix as a Hugging Face `datasets` folder: Parquet shards under `data/` and a dataset card (`README.md`)
whose `configs` block names them, so `datasets.load_dataset(folder, split="train")` reads it and the folder
can be pushed to the Hub as it is.

Per row (padding left out): `input_ids`, `position_ids` (restarting at 0 with each document, what per-document
attention needs), `segment_lengths` (the documents' lengths, summing to the row's length) and
`segment_sources` (each document's source name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longmix.core.atomic import atomic_path
from longmix.formats.export.shard_docs import ShardDocs
from longmix.formats.manifest import Manifest
from longmix.formats.packed_rows import ranges


def _lists(values: np.ndarray | pa.Array, counts: np.ndarray) -> pa.ListArray:
    """Flat values cut into one list per row, `counts[r]` values for row r."""
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values if isinstance(values, pa.Array) else pa.array(values))


class HfExport:
    name = "hf"
    dtypes = ("int32", "int64", "uint16", "uint32")  # int32 first: what HF collators expect

    def __init__(self, work: Path, manifest: Manifest, card: dict[str, Any]) -> None:
        self.sources = manifest.sources
        self.card = card

    def shard_files(self, i: int, n: int) -> list[str]:
        return [f"data/train-{i:05d}-of-{n:05d}.parquet"]

    def write_shard(self, docs: ShardDocs, i: int, n: int, out: Path, dtype: np.dtype) -> None:
        names = pa.array(self.sources).take(pa.array(docs.doc_sources.astype(np.int64)))
        table = pa.table({
            "input_ids": _lists(docs.tokens.astype(dtype), docs.row_tokens),
            "position_ids": _lists(ranges(docs.doc_lens).astype(np.int32), docs.row_tokens),
            "segment_lengths": _lists(docs.doc_lens.astype(np.int32), docs.row_docs),
            "segment_sources": _lists(names, docs.row_docs),
        })
        with atomic_path(out / self.shard_files(i, n)[0]) as tmp:
            pq.write_table(table, tmp, compression="zstd")

    def finish(self, out: Path, n: int, dtype: np.dtype) -> list[str]:
        lineage = json.dumps(self.card, indent=2)
        text = (
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n\n"
            "# A longmix mix\n\nPacked training rows exported by `longmix export-data --to hf`. Each row holds "
            "`input_ids`, `position_ids` (restarting at 0 with each document), `segment_lengths` (the documents' "
            "lengths) and `segment_sources`; padding is left out. Load it with "
            "`datasets.load_dataset(\"<this folder>\", split=\"train\")`.\n\n"
            f"## Lineage\n\n```json\n{lineage}\n```\n")
        with atomic_path(out / "README.md") as tmp:
            tmp.write_text(text)
        return ["README.md"]

    def cleanup(self) -> None:
        pass
