"""`longmix export-data`: a verified mix written in another trainer's format, a manifest shard at a time.

Every output file appears whole (temp file, then rename). A shard's files are followed by a marker in the
export's progress folder (`.longmix-export/`), so a rerun after a kill keeps the finished shards and redoes
the rest; the finish step (index files) runs when every shard is done, and the lineage sidecar
(`longmix-export.json`) is written last, which marks the export complete. A folder that holds another
manifest's or format's export, or files longmix did not write, is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from longmix.core.atomic import remove_stale_temps, write_json
from longmix.core.errors import UserError
from longmix.core.storage import Mirror, is_uri
from longmix.formats.export.dtypes import token_dtype
from longmix.formats.export.shard_docs import ShardDocs, shard_docs
from longmix.formats.manifest import Manifest

SIDECAR = "longmix-export.json"
WORK = ".longmix-export"
FORMATS = ("mds", "megatron", "hf", "olmo")


class Exporter(Protocol):
    """What each format module provides (made with the progress folder, the manifest and the lineage)."""

    name: str
    dtypes: tuple[str, ...]

    def shard_files(self, i: int, n: int) -> list[str]: ...
    def write_shard(self, docs: ShardDocs, i: int, n: int, out: Path, dtype: np.dtype) -> None: ...
    def finish(self, out: Path, n: int, dtype: np.dtype) -> list[str]: ...
    def cleanup(self) -> None: ...


def lineage(manifest: Manifest, manifest_sha256: str) -> dict[str, Any]:
    """What an export carries of where its tokens came from."""
    mix = manifest.mix or {}
    return {"sources": manifest.sources, "shares": _shares(mix),
            "seed": manifest.lineage.seed, "tokenizer_sha256": manifest.tokenizer.sha256,
            "vocab_size": manifest.tokenizer.vocab_size, "bos_id": manifest.tokenizer.bos_id,
            "eos_id": manifest.tokenizer.eos_id, "recipe_sha256": manifest.lineage.recipe_sha256,
            "seq_len": manifest.seq_len, "manifest_sha256": manifest_sha256}


def _shares(mix: dict[str, Any]) -> dict[str, float] | None:
    """Achieved share of tokens per source, from the mix report's cells."""
    cells = mix.get("cells") or []
    total = sum(c.get("achieved_tokens", 0) for c in cells)
    if not total:
        return None
    out: dict[str, float] = {}
    for c in cells:
        out[c["source"]] = out.get(c["source"], 0.0) + c["achieved_tokens"] / total
    return {k: round(v, 6) for k, v in out.items()}


def exporter_class(fmt: str) -> type:
    """The class that writes `fmt` (each module imports its format's library only when it is made)."""
    from longmix.formats.export.hf import HfExport
    from longmix.formats.export.mds import MdsExport
    from longmix.formats.export.megatron import MegatronExport
    from longmix.formats.export.olmo import OlmoExport

    classes = {"mds": MdsExport, "megatron": MegatronExport, "hf": HfExport, "olmo": OlmoExport}
    if fmt not in classes:
        raise UserError(f"unknown export format '{fmt}' (choose from {', '.join(FORMATS)})")
    return classes[fmt]


def _claim(out: Path, identity: dict[str, Any]) -> None:
    """Refuse a folder that holds anything but this very export (finished or in progress)."""
    mine = out / WORK / "export.json"
    if mine.is_file():
        held = json.loads(mine.read_text())
        if held != identity:
            raise UserError(f"{out} holds an export of another mix or format ({held.get('format')}, manifest "
                            f"sha256 {str(held.get('manifest_sha256'))[:12]}); export into a new folder")
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no longmix export; export into a new or empty folder")
    write_json(mine, identity)


def export_mix(manifest_path: Path, manifest: Manifest, fmt: str, output: str, dtype_name: str = "auto",
               say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write the (verified) mix at `manifest_path` as `fmt` into `output` (a folder or a store URI); returns the
    summary that the sidecar holds."""
    dtype = token_dtype(fmt, exporter_class(fmt).dtypes, dtype_name, manifest.tokenizer.vocab_size)  # before writing
    mirror = Mirror(output) if is_uri(output) else None
    if mirror is not None:
        mirror.check_writable()
        if mirror.listing() and not mirror.listing(WORK):
            raise UserError(f"{output} is not empty and holds no longmix export; export into a new prefix")
        mirror.pull_missing("")  # a resumed export continues from what the store holds
    out = mirror.local if mirror is not None else Path(output)
    manifest_sha = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    identity = {"format": fmt, "dtype": dtype.name, "manifest_sha256": manifest_sha}
    work = out / WORK
    info = lineage(manifest, manifest_sha)
    exporter: Exporter = exporter_class(fmt)(work, manifest, info)  # a missing library fails here, before writing
    if (out / SIDECAR).is_file() and (work / "export.json").is_file():
        _claim(out, identity)
        exporter.cleanup()  # in case a kill came between the sidecar and the cleanup
        say(f"{output} already holds this export; nothing to write")
        return json.loads((out / SIDECAR).read_text())
    _claim(out, identity)
    remove_stale_temps(out)
    n = len(manifest.shards)
    per_source = np.zeros(len(manifest.sources), np.int64)
    totals = {"rows": 0, "documents": 0, "tokens": 0}
    started, written_tokens = time.monotonic(), 0
    todo_tokens = sum(e.tokens for i, e in enumerate(manifest.shards) if not (work / f"shard-{i:05d}.json").exists())
    for i, entry in enumerate(manifest.shards):
        marker = work / f"shard-{i:05d}.json"
        files = ", ".join(str(out / f) for f in exporter.shard_files(i, n))
        if marker.is_file():
            stats = json.loads(marker.read_text())
            say(f"[{i + 1}/{n}] kept {files} (written by an earlier run)")
        else:
            docs = shard_docs(manifest_path.parent / entry.path, manifest.seq_len)
            exporter.write_shard(docs, i, n, out, dtype)
            stats = {"rows": docs.rows, "documents": len(docs.doc_lens), "tokens": len(docs.tokens),
                     "documents_by_source": np.bincount(docs.doc_sources.astype(np.int64),
                                                        minlength=len(manifest.sources)).tolist()}
            write_json(marker, stats)
            written_tokens += stats["tokens"]
            rate = written_tokens / max(time.monotonic() - started, 1e-9)
            eta = (todo_tokens - written_tokens) / rate if rate else 0.0
            say(f"[{i + 1}/{n}] wrote {files} ({stats['documents']:,} documents, {stats['tokens']:,} tokens; "
                f"{rate:,.0f} tokens/s, ETA {eta:,.0f} s)")
        for k in totals:
            totals[k] += stats[k]
        per_source += np.asarray(stats["documents_by_source"], np.int64)
    for name in exporter.finish(out, n, dtype):
        say(f"wrote {out / name} ({(out / name).stat().st_size:,} bytes)")
    summary = {"format": fmt, "dtype": dtype.name, **totals,
               "documents_by_source": dict(zip(manifest.sources, per_source.tolist(), strict=True)),
               "manifest": str(manifest_path), "lineage": info}
    write_json(out / SIDECAR, summary)  # last: the export is complete
    exporter.cleanup()
    if mirror is not None:
        mirror.push_missing("", last=(SIDECAR,))
    return summary
