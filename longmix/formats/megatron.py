"""A mix as Megatron's indexed dataset (`<prefix>.bin` + `<prefix>.idx`), the format Megatron-LM, NeMo and
Megatron-Bridge train from, so their own samplers and document masks see longmix's documents.

Layout (Megatron-core `indexed_dataset.py`, version 1): the index starts with b"MMIDIDX\\x00\\x00", the version
(<Q 1), the token dtype's code (<B), the sequence count (<Q) and the document-index count (<Q), then the sequence
lengths (int32), the byte offset of each sequence in the .bin (int64), and the document indices (int64: 0, then
the sequence count after each document). The .bin holds the tokens back to back.

One Megatron sequence and document per segment of the packed rows, padding left out. A document longer than the
sequence length was split across rows by the pack stage, and the rows are shuffled, so its pieces arrive as
separate documents: the boundaries Megatron sees are the ones longmix trained with.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.atomic import atomic_path
from longmix.formats.manifest import Manifest
from longmix.formats.packed_rows import PAD_SOURCE
from longmix.formats.packed_shards import read_rows

HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.uint16: 8}


def token_dtype(vocab_size: int) -> type[np.integer]:
    """Megatron's own rule: uint16 below 65,500 ids, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def write_indexed(manifest_path: Path, manifest: Manifest, prefix: Path,
                  say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write `<prefix>.bin`, `<prefix>.idx` and the lineage sidecar `<prefix>.longmix.json`, each whole or not at
    all; returns the summary (documents, tokens, dtype)."""
    dtype = token_dtype(manifest.tokenizer.vocab_size)
    lengths: list[np.ndarray] = []
    sources: list[np.ndarray] = []
    prefix.parent.mkdir(parents=True, exist_ok=True)
    bin_path = prefix.with_name(prefix.name + ".bin")
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as out:
        for entry in manifest.shards:
            rows = read_rows(manifest_path.parent / entry.path, manifest.seq_len)
            for r in range(len(rows)):
                seg = rows.row(r)
                keep = seg["doc_sources"] != PAD_SOURCE
                real = int(seg["doc_lens"][keep].sum())  # padding is the last segment: the real ones lead
                out.write(np.ascontiguousarray(seg["input_ids"][:real]).astype(dtype).tobytes())
                lengths.append(seg["doc_lens"][keep].astype(np.int32))
                sources.append(seg["doc_sources"][keep].astype(np.int16))
    seq_lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    pointers = np.zeros(len(seq_lens), np.int64)
    np.cumsum(seq_lens[:-1].astype(np.int64) * np.dtype(dtype).itemsize, out=pointers[1:])
    idx_path = prefix.with_name(prefix.name + ".idx")
    with atomic_path(idx_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(HEADER + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype]))
            f.write(struct.pack("<Q", len(seq_lens)) + struct.pack("<Q", len(seq_lens) + 1))
            f.write(seq_lens.tobytes() + pointers.tobytes() + np.arange(len(seq_lens) + 1, dtype=np.int64).tobytes())
    per_source = np.bincount(np.concatenate(sources).astype(np.int64), minlength=len(manifest.sources)) \
        if sources else np.zeros(len(manifest.sources), np.int64)
    summary = {"format": "megatron-indexed/1", "documents": int(len(seq_lens)), "tokens": int(seq_lens.sum()),
               "dtype": np.dtype(dtype).name, "documents_by_source": dict(zip(manifest.sources,
                                                                            per_source.tolist(), strict=True)),
               "manifest": str(manifest_path), "lineage": lineage(manifest)}
    with atomic_path(prefix.with_name(prefix.name + ".longmix.json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    for path in (bin_path, idx_path):
        say(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return summary


def lineage(manifest: Manifest) -> dict[str, Any]:
    """What an export carries of where its tokens came from."""
    mix = manifest.mix or {}
    return {"sources": manifest.sources, "shares": mix.get("sources"), "seed": manifest.lineage.seed,
            "tokenizer_sha256": manifest.tokenizer.sha256, "vocab_size": manifest.tokenizer.vocab_size,
            "recipe_sha256": manifest.lineage.recipe_sha256, "seq_len": manifest.seq_len}
