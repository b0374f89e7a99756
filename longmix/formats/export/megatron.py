"""A mix as Megatron's indexed dataset (`mix.bin` + `mix.idx`), the format Megatron-LM, NeMo and
Megatron-Bridge train from, so their own samplers and document masks see longmix's documents.

Layout (Megatron-core `indexed_dataset.py`, version 1): the index starts with b"MMIDIDX\\x00\\x00", the version
(<Q 1), the token dtype's code (<B), the sequence count (<Q) and the document-index count (<Q), then the sequence
lengths (int32), the byte offset of each sequence in the .bin (int64), and the document indices (int64: 0, then
the sequence count after each document). The .bin holds the tokens back to back.

One Megatron sequence and document per segment of the packed rows, padding left out. A document longer than the
sequence length was split across rows by the pack stage, and the rows are shuffled, so its pieces arrive as
separate documents: the boundaries Megatron sees are the ones longmix trained with.

Each manifest shard becomes a part (tokens and lengths) in the export's progress folder; the finish step joins
the parts into one prefix, which is what Megatron's `--data-path` takes.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.atomic import atomic_path
from longmix.formats.export.shard_docs import ShardDocs
from longmix.formats.manifest import Manifest

HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint16": 8}
PREFIX = "mix"


class MegatronExport:
    name = "megatron"
    dtypes = ("uint16", "int32", "int64")

    def __init__(self, work: Path, manifest: Manifest, card: dict[str, Any]) -> None:
        self.parts = work / "parts"  # inside the export's progress folder

    def shard_files(self, i: int, n: int) -> list[str]:
        return [f"{PREFIX}.bin (part {i + 1} of {n})"]

    def write_shard(self, docs: ShardDocs, i: int, n: int, out: Path, dtype: np.dtype) -> None:
        with atomic_path(self.parts / f"{i:05d}.bin") as tmp:
            docs.tokens.astype(dtype).tofile(tmp)
        with atomic_path(self.parts / f"{i:05d}.lens") as tmp:
            docs.doc_lens.astype(np.int32).tofile(tmp)

    def finish(self, out: Path, n: int, dtype: np.dtype) -> list[str]:
        bin_path, idx_path = out / f"{PREFIX}.bin", out / f"{PREFIX}.idx"
        with atomic_path(bin_path) as tmp, open(tmp, "wb") as dst:
            for i in range(n):
                with open(self.parts / f"{i:05d}.bin", "rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        lens = np.concatenate([np.fromfile(self.parts / f"{i:05d}.lens", np.int32) for i in range(n)]) \
            if n else np.zeros(0, np.int32)
        pointers = np.zeros(len(lens), np.int64)
        np.cumsum(lens[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
        with atomic_path(idx_path) as tmp, open(tmp, "wb") as f:
            f.write(HEADER + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype.name]))
            f.write(struct.pack("<Q", len(lens)) + struct.pack("<Q", len(lens) + 1))
            f.write(lens.tobytes() + pointers.tobytes() + np.arange(len(lens) + 1, dtype=np.int64).tobytes())
        return [bin_path.name, idx_path.name]

    def cleanup(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
