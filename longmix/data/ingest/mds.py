"""MosaicML streaming (MDS) folders as inputs (`format: mds`).

A folder holds index.json and the shards it lists (shard.00000.mds, or compressed: shard.00000.mds.zstd ...);
a merged folder (streaming's merge_index) lists shards in subfolders, and a folder with no index.json of its
own is read through the top-most index.json files below it. Each shard is read with streaming's own reader;
a compressed one is first decompressed into a temporary folder (never beside the data) that goes right after.

Text MDS: the `text_field` column is the text, the id column the id, the other columns go to meta (the same
record function as Parquet). Pre-tokenized MDS (an `input_ids` column and no text column, as ProLong publishes
its data): each (start, end) span of the `indices` column, or the whole row without one, is one document,
decoded with the source's `detokenizer` (the tokenizer.json that made the ids), id `shard:row:k`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.core.streaming_import import import_streaming_module
from longmix.data.ingest.records import Bad, Good, missing_column, safe_relative, table_record

INDEX = "index.json"
TOKENS, SPANS = "input_ids", "indices"
_RAW_NAME = "shard.mds"  # what a decompressed shard is called inside its temporary folder


@dataclass(frozen=True)
class Shard:
    file: str  # the file read, relative to the root: the raw shard, or its compressed form when only that exists
    folder: str  # the folder of the index.json that lists it, relative to the root ("" for the root's own)
    entry: dict[str, Any]  # its index.json entry
    compressed: bool = False  # `file` is the compressed form (only that exists)

    @property
    def name(self) -> str:
        """The raw shard's path relative to the root: the first part of pre-tokenized documents' ids."""
        return str(PurePosixPath(self.folder, self.entry["raw_data"]["basename"]))

    @property
    def columns(self) -> list[str]:
        return list(self.entry.get("column_names") or [])


def _load_index(path: Path) -> dict[str, Any] | None:
    if not path.is_file() or path.stat().st_size > 256 << 20:
        return None
    try:
        obj = json.loads(path.read_bytes())
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("shards"), list) and "version" in obj else None


def is_mds_folder(path: Path) -> bool:
    """A folder with an MDS index.json of its own (what `format: auto` recognizes)."""
    return _load_index(path / INDEX) is not None


def _index_folders(root: Path) -> list[str]:
    if (root / INDEX).is_file():
        return [""]
    found = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob(INDEX)
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    top = [f for f in found if not any(f.startswith(o + "/") for o in found if o != f)]
    if not top:
        raise UserError(f"folder '{root}' is no MDS folder: expected {INDEX} and the shards it lists (e.g. "
                        "shard.00000.mds), in it or in its subfolders")
    return top


def mds_shards(root: Path) -> list[Shard]:
    """Every shard the folder's index.json (or its subfolders' top-most ones) lists, in index order."""
    out: list[Shard] = []
    for folder in _index_folders(root):
        where = root / folder / INDEX
        index = _load_index(where)
        if index is None:
            raise UserError(f"'{where}' is not an MDS index (a JSON object with a list of shards)")
        for i, entry in enumerate(index["shards"]):
            if not isinstance(entry, dict) or entry.get("format") != "mds" or not isinstance(
                    entry.get("raw_data"), dict):
                kind = entry.get("format") if isinstance(entry, dict) else type(entry).__name__
                raise UserError(f"'{where}': shard {i} is '{kind}', not an MDS shard; longmix reads MDS shards")
            raw = safe_relative(root / folder, entry["raw_data"].get("basename"), INDEX)
            zipped = entry.get("zip_data") or {}
            packed = safe_relative(root / folder, zipped["basename"], INDEX) if zipped.get("basename") else None
            prefix = f"{folder}/" if folder else ""
            if (root / folder / raw).is_file():
                out.append(Shard(prefix + raw, folder, entry))
            elif packed and (root / folder / packed).is_file():
                out.append(Shard(prefix + packed, folder, entry, compressed=True))
            else:
                raise UserError(f"'{where}' lists {raw}{f' ({packed})' if packed else ''}, which is missing")
    return out


def check_mds(root: Path, text_field: str, detokenizer: str | None) -> list[Shard]:
    """Before any work: every shard has the text column, or token ids and a `detokenizer` to turn them back
    into text; no column is pickled (reading pickle runs code: streaming refuses it by default too). Returns
    the shards."""
    shards = mds_shards(root)
    for shard in shards:
        cols = shard.columns
        encodings = dict(zip(cols, shard.entry.get("column_encodings") or [], strict=False))
        unsafe = [c for c, e in encodings.items() if e == "pkl"]
        if unsafe:
            raise UserError(f"'{root / shard.file}': column '{unsafe[0]}' is pickled (pkl), and unpickling runs "
                            "code; longmix does not read it")
        if text_field in cols:
            continue
        if TOKENS not in cols:
            raise UserError(missing_column(str(root / shard.file), text_field, cols))
        if detokenizer is None:
            raise UserError(f"'{root}': pre-tokenized MDS ({TOKENS}, no '{text_field}' column): set `detokenizer:` "
                            "to the tokenizer.json that made the ids")
    return shards


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _detokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises its own Exception subclass for a bad file
        raise UserError(f"detokenizer '{path}' does not load: {str(exc).splitlines()[0][:200]}") from None


def _spans(sample: dict[str, Any], tok: Any, shard: Shard, name: str, row: int, cap: int) -> Iterator[Good | Bad]:
    """One pre-tokenized row -> one document per (start, end) span of `indices` (end exclusive)."""
    ids = np.asarray(sample[TOKENS]).reshape(-1)
    n = len(ids)
    meta = json.loads(json.dumps({k: _plain(v) for k, v in sample.items() if k not in (TOKENS, SPANS)},
                                 default=str))
    spans = np.asarray(sample[SPANS]) if sample.get(SPANS) is not None else np.array([[0, n]])
    if spans.size and (spans.ndim != 2 or spans.shape[1] != 2):
        yield Bad("bad_span", f"'{SPANS}' has shape {spans.shape}, expected (n, 2) (start, end) pairs", name, row,
                  json.dumps({"row": row, SPANS: spans.tolist()}).encode())
        return
    for k, (start, end) in enumerate(spans.reshape(-1, 2).tolist()):
        if not 0 <= start <= end <= n:
            yield Bad("bad_span", f"span {k} ({start}, {end}) is outside the row's {n} tokens", name, row,
                      json.dumps({"row": row, "span": k, "start": start, "end": end, "tokens": n}).encode())
            continue
        text = tok.decode(ids[start:end].tolist(), skip_special_tokens=False)
        encoded = text.encode("utf-8", "surrogatepass")
        if len(encoded) > cap:
            yield Bad("too_large", f"{len(encoded)} bytes > max_doc_bytes={cap}; first {cap} kept", name, row,
                      encoded[:cap])
            continue
        yield Good(text, f"{shard.name}:{row}:{k}", dict(meta), name, row, len(encoded))


def _read_shard(root: Path, shard: Shard, text_field: str, id_field: str | None, cap: int,
                tok: Any) -> Iterator[Good | Bad]:
    fmt = import_streaming_module("streaming.base.format")
    name = str(root / shard.file)
    entry, dirname, tmp = shard.entry, str(root / shard.folder), None
    try:
        if shard.compressed:
            compression = import_streaming_module("streaming.base.compression")
            tmp = tempfile.mkdtemp(prefix="longmix-mds-")
            try:
                data = compression.decompress(entry.get("compression"), (root / shard.file).read_bytes())
            except Exception as exc:  # each codec raises its own error for corrupt input
                yield Bad("unreadable_file", f"shard does not decompress ({entry.get('compression')}): {exc}",
                          name, -1)
                return
            Path(tmp, _RAW_NAME).write_bytes(data)
            del data
            entry = {**entry, "raw_data": {**entry["raw_data"], "basename": _RAW_NAME}, "zip_data": None,
                     "compression": None}
            dirname = tmp
        try:
            reader = fmt.reader_from_json(dirname, None, entry)
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise UserError(f"'{root / shard.folder / INDEX}': shard entry for {shard.file} is unreadable: "
                            f"{exc}") from None
        pretokenized = text_field not in reader.column_names
        for row in range(reader.samples):
            try:
                data = reader.get_sample_data(row)
            except (IndexError, ValueError, OSError) as exc:
                yield Bad("corrupt_record", f"sample {row} unreadable: {exc}", name, row)
                continue
            try:
                sample = reader.decode_sample(data)
            except UnicodeDecodeError as exc:
                yield Bad("invalid_utf8", str(exc), name, row, data)
                continue
            except (IndexError, ValueError, TypeError) as exc:
                yield Bad("corrupt_record", f"sample {row} does not decode: {exc}", name, row, data)
                continue
            if pretokenized:
                yield from _spans(sample, tok, shard, name, row, cap)
            else:
                yield table_record({k: _plain(v) for k, v in sample.items()}, text_field, id_field, name, row, cap)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def read_mds(root: Path, text_field: str, id_field: str | None, cap: int, detokenizer: str | None = None,
             files: list[str] | None = None) -> Iterator[Good | Bad]:
    """The shards named by `files` (Shard.file values; all when None), in order."""
    shards = check_mds(root, text_field, detokenizer)
    if files is not None:
        by_file = {s.file: s for s in shards}
        missing = [f for f in files if f not in by_file]
        if missing:
            raise UserError(f"'{root}': {INDEX} lists no shard {missing[0]}")
        shards = [by_file[f] for f in files]
    tok = None
    for shard in shards:
        if tok is None and text_field not in shard.columns:
            tok = _detokenizer(str(detokenizer))
        yield from _read_shard(root, shard, text_field, id_field, cap, tok)
