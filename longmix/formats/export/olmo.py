"""A mix as OLMo-core's token files: per manifest shard, `part-NNNNN.npy` (the token ids as a raw array, no
header: OLMo-core and Dolma open them with `np.memmap(path, dtype)`) and `part-NNNNN.csv.gz` (one `start,end`
line per document, the boundaries OLMo-core reads with `iter_document_indices(path, use_array_if_local=False)`).

One document per segment of the packed rows, padding left out. The metadata file is what makes the boundaries
exact: OLMo-core can also infer them from EOS tokens, which is right only when every document ends with EOS
(longmix's tokenize stage appends it unless `tokenizer.eos: false`, and a document split across rows by the
pack stage ends without it).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.atomic import atomic_path
from longmix.formats.export.shard_docs import ShardDocs
from longmix.formats.manifest import Manifest


class OlmoExport:
    name = "olmo"
    dtypes = ("uint16", "uint32", "uint64")  # OLMo-core's MemMapDType, smallest first

    def __init__(self, work: Path, manifest: Manifest, card: dict[str, Any]) -> None:
        pass

    def shard_files(self, i: int, n: int) -> list[str]:
        return [f"part-{i:05d}.npy", f"part-{i:05d}.csv.gz"]

    def write_shard(self, docs: ShardDocs, i: int, n: int, out: Path, dtype: np.dtype) -> None:
        with atomic_path(out / f"part-{i:05d}.npy") as tmp:
            docs.tokens.astype(dtype).tofile(tmp)
        ends = np.cumsum(docs.doc_lens)
        lines = "".join(f"{a},{b}\n" for a, b in zip((ends - docs.doc_lens).tolist(), ends.tolist(), strict=True))
        with atomic_path(out / f"part-{i:05d}.csv.gz") as tmp, open(tmp, "wb") as raw:
            # mtime 0 and no name in the header: the same mix gives the same bytes
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(lines.encode())

    def finish(self, out: Path, n: int, dtype: np.dtype) -> list[str]:
        return []

    def cleanup(self) -> None:
        pass
