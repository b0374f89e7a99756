"""Streaming readers for raw inputs: JSONL (plain, .gz, .zst), Parquet, and folders of text files; Hugging Face
datasets folders (hf.py) and MDS folders (mds.py) beside them. `expand_input` and `read_records` are the one
way in for every format.

Readers never raise on a bad record: they yield `Bad` with the origin and raw bytes, and the
ingest stage sends it to quarantine. Memory stays bounded by one record (capped) at a time.
"""

from __future__ import annotations

import io
import json
import stat
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from longmix.core.errors import UserError
from longmix.core.storage import is_uri, open_input_file, open_input_stream
from longmix.data.ingest.hf import hf_data_files, is_hf_folder, read_hf
from longmix.data.ingest.mds import is_mds_folder, mds_shards, read_mds
from longmix.data.ingest.records import Bad, Good, batch_records, missing_column

_READ_CHUNK = 1 << 20


def _name(path: Path | str) -> str:
    return path.rsplit("/", 1)[-1].lower() if is_uri(path) else Path(path).name.lower()


def folder_format(path: Path) -> str:
    """hf (a datasets save_to_disk folder), mds (an MDS index.json) or text."""
    return "hf" if is_hf_folder(path) else "mds" if is_mds_folder(path) else "text"


def detect_format(path: Path | str) -> str:
    name = _name(path)
    if not is_uri(path) and Path(path).is_dir():
        return folder_format(Path(path))
    if name.endswith(".parquet"):
        return "parquet"
    for ext in (".jsonl", ".json", ".ndjson"):
        if name.endswith(ext) or name.endswith(ext + ".gz") or name.endswith(ext + ".zst") or \
                name.endswith(ext + ".zstd"):
            return "jsonl"
    if name.endswith((".txt", ".md", ".py", ".rst")):
        return "text"
    raise UserError(f"cannot tell the format of '{path}': set `format:` (jsonl, parquet, text, hf or mds) for "
                    "its source")


class _TruncatedInput(Exception):
    """The compressed stream ended before its end marker."""


# A compressed input is inflated a bounded piece at a time: a 1 MB gzip of one repeated byte is a 1 GiB line,
# and memory must follow max_doc_bytes, not the input. zlib takes an output limit; zstandard's decompressobj
# takes none, so it is fed slices of input small enough that even its densest blocks (run-length blocks,
# 128 KiB from 4 bytes) give at most 16 MiB per slice.
_OUT_LIMIT = _READ_CHUNK
_ZSTD_SLICE = 512


def _inflate_gzip(dobj: Any, data: memoryview) -> tuple[bytes, memoryview]:
    out = dobj.decompress(data, _OUT_LIMIT)
    return out, memoryview(dobj.unconsumed_tail)


def _inflate_zstd(dobj: Any, data: memoryview) -> tuple[bytes, memoryview]:
    return dobj.decompress(data[:_ZSTD_SLICE]), data[_ZSTD_SLICE:]


def _decompressed_chunks(raw: io.BufferedReader, new_decompressor: Callable[[], Any],
                         inflate: Callable[[Any, memoryview], tuple[bytes, memoryview]]) -> Iterator[bytes]:
    """Decompress every member/frame of a gzip or zstd file in bounded pieces; a cut inside one raises at the
    end, after everything readable before the cut has been yielded."""
    dobj = new_decompressor()
    in_member = False
    while read := raw.read(_READ_CHUNK):
        rest, more_out = memoryview(read), True
        while len(rest) or more_out:
            try:
                out, rest = inflate(dobj, rest)
            except (zlib.error, zstandard.ZstdError) as exc:
                raise _TruncatedInput(f"corrupt compressed data: {exc}") from exc
            in_member = True
            more_out = len(out) >= _OUT_LIMIT  # zlib may still hold output for input it already took
            if out:
                yield out
            if dobj.eof:  # the next member (gzip) or frame (zstd) starts in the unused bytes
                rest = memoryview(dobj.unused_data + bytes(rest))
                dobj = new_decompressor()
                in_member = more_out = False
    if in_member:
        raise _TruncatedInput("compressed stream ended before its end marker")


def _plain_chunks(stream: io.BufferedIOBase) -> Iterator[bytes]:
    while chunk := stream.read(_READ_CHUNK):
        yield chunk


def _byte_chunks(path: Path | str) -> Iterator[bytes]:
    name = _name(path)
    with open_input_stream(path) as raw:
        if name.endswith(".gz"):
            yield from _decompressed_chunks(raw, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), _inflate_gzip)
        elif name.endswith((".zst", ".zstd")):
            yield from _decompressed_chunks(raw, lambda: zstandard.ZstdDecompressor().decompressobj(),
                                          _inflate_zstd)
        else:
            yield from _plain_chunks(raw)


def _lines(path: Path | str, cap: int) -> Iterator[tuple[int, bytes, bool] | _TruncatedInput]:
    """(line number, bytes without newline, oversized?) per line; an oversized line keeps its first
    `cap` bytes only. A truncated stream ends with the _TruncatedInput and the partial line is yielded
    as the exception's `partial` attribute."""
    buf = bytearray()
    lineno = 0
    oversized = False
    try:
        for chunk in _byte_chunks(path):
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl >= 0 and not buf and not oversized and nl - start <= cap:  # a whole line: one copy
                    lineno += 1
                    yield lineno, chunk[start:nl], False
                    start = nl + 1
                    continue
                piece = chunk[start:] if nl < 0 else chunk[start:nl]
                if not oversized:
                    room = cap + 1 - len(buf)
                    buf += piece[:room]
                    oversized = len(buf) > cap
                if nl < 0:
                    break
                lineno += 1
                yield lineno, bytes(buf[:cap]), oversized
                buf.clear()
                oversized = False
                start = nl + 1
    except _TruncatedInput as exc:
        exc.partial = bytes(buf)  # type: ignore[attr-defined]
        exc.lineno = lineno + 1  # type: ignore[attr-defined]
        yield exc
        return
    if buf or oversized:
        lineno += 1
        yield lineno, bytes(buf[:cap]), oversized


def read_jsonl(path: Path | str, text_field: str, id_field: str | None, cap: int) -> Iterator[Good | Bad]:
    name = str(path)
    for item in _lines(path, cap):
        if isinstance(item, _TruncatedInput):
            partial = getattr(item, "partial", b"")
            yield Bad("truncated_file", f"input ends early: {item}", name, getattr(item, "lineno", -1), partial)
            return
        lineno, raw, oversized = item
        if oversized:
            yield Bad("too_large", f"line longer than max_doc_bytes={cap}; first {cap} bytes kept", name,
                      lineno, raw)
            continue
        if not raw.strip():
            continue  # blank lines separate nothing in JSONL; they are not records
        yield _parse_json_record(raw, text_field, id_field, name, lineno)


def _maybe_lossy(value: Any) -> bool:
    """orjson reads an integer beyond 64 bits as a float where the standard library keeps it exact."""
    if isinstance(value, float):
        return not -(2 ** 63) <= value < 2 ** 64
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    for v in value:
        if type(v) is not str and type(v) is not int and _maybe_lossy(v):
            return True
    return False


def _parse_json_record(raw: bytes, text_field: str, id_field: str | None, name: str, lineno: int) -> Good | Bad:
    # orjson (3x faster) reads every well-formed line; whatever it refuses or may read lossily goes to the
    # standard library, which decides exactly as before and names the problem.
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if obj is None or _maybe_lossy(obj):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Bad("invalid_utf8", str(exc), name, lineno, raw)
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            return Bad("invalid_json", str(exc)[:200], name, lineno, raw)
    if not isinstance(obj, dict):
        return Bad("not_an_object", f"JSON {type(obj).__name__}, expected an object", name, lineno, raw)
    if text_field not in obj or obj[text_field] is None:
        return Bad("missing_text", f"no '{text_field}' field", name, lineno, raw)
    text = obj.pop(text_field)
    if not isinstance(text, str):
        return Bad("text_not_string", f"'{text_field}' is {type(text).__name__}", name, lineno, raw)
    doc_id = obj.pop(id_field, None) if id_field else None
    return Good(text, None if doc_id is None else str(doc_id), obj, name, lineno, len(raw))


def read_parquet(path: Path | str, text_field: str, id_field: str | None, cap: int) -> Iterator[Good | Bad]:
    name = str(path)
    try:
        pf = pq.ParquetFile(open_input_file(path))
    except (pa.ArrowException, OSError) as exc:
        yield Bad("unreadable_file", f"not a readable Parquet file: {exc}", name, -1)
        return
    if text_field not in pf.schema_arrow.names:
        raise UserError(missing_column(name, text_field, pf.schema_arrow.names))
    row = 0
    for rg in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(rg)
        except (pa.ArrowException, OSError) as exc:
            n = pf.metadata.row_group(rg).num_rows
            yield Bad("corrupt_row_group", f"row group {rg} ({n} rows) unreadable: {exc}", name, row)
            row += n
            continue
        yield from batch_records(table, text_field, id_field, name, row, cap)
        row += table.num_rows


def read_text_files(root: Path, files: list[str], cap: int) -> Iterator[Good | Bad]:
    """One document per file; its id is the path relative to the source folder."""
    for rel in files:
        path = root / rel
        name = str(path)
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(cap + 1)
        if size > cap:
            yield Bad("too_large", f"{size} bytes > max_doc_bytes={cap}; first {cap} kept", name, -1, raw[:cap])
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Bad("invalid_utf8", str(exc), name, -1, raw)
            continue
        yield Good(text, rel, {}, name, -1, size)


def list_text_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_records(path: Path | str, fmt: str, text_field: str = "text", id_field: str | None = None,
                 cap: int = 64 << 20, files: list[str] | None = None, split: str = "train",
                 detokenizer: str | None = None) -> Iterator[Good | Bad]:
    """The one entry point by format: JSONL (plain or compressed), Parquet, text files (a folder's files,
    `files` of it when given; a single text file on its own), a Hugging Face datasets folder (`split` of it;
    `files` of that when given) or an MDS folder (`files`: some of its shards; `detokenizer`: the
    tokenizer.json of pre-tokenized shards). JSONL and Parquet may be object-store URIs."""
    if fmt == "jsonl":
        return read_jsonl(path, text_field, id_field, cap)
    if fmt == "parquet":
        return read_parquet(path, text_field, id_field, cap)
    if is_uri(path):
        raise UserError(f"'{path}': {fmt} inputs must be local folders; store JSONL or Parquet objects instead")
    path = Path(path)
    if fmt == "hf":
        return read_hf(path, text_field, id_field, cap, split, files)
    if fmt == "mds":
        return read_mds(path, text_field, id_field, cap, detokenizer, files)
    if path.is_dir():
        return read_text_files(path, files if files is not None else list_text_files(path), cap)
    return read_text_files(path.parent, [path.name], cap)


_DATA_SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson"), "parquet": (".parquet",)}


def data_format(path: Path | str) -> str | None:
    """jsonl or parquet by the file's name (compressed JSONL included), else None."""
    name = _name(path)
    if name.endswith(".parquet"):
        return "parquet"
    for ext in _DATA_SUFFIXES["jsonl"]:
        if name.endswith((ext, ext + ".gz", ext + ".zst", ext + ".zstd")):
            return "jsonl"
    return None


def expand_input(path: Path | str, fmt: str = "auto", split: str = "train") -> list[tuple[Path | str, str]]:
    """An input as (path, format) pairs, decided the same way everywhere (ingest, dedup, tokenizer and
    classifier training). A file: itself. A folder: a Hugging Face datasets folder or an MDS folder when `fmt`
    says so, or (auto) when it holds state.json / dataset_dict.json / an MDS index.json: itself, its layout
    (and `split`) checked here; else its JSONL/Parquet files, each on its own, when it holds only those; one
    text folder (every file a document) when it holds none or `fmt` is text; a folder that mixes both is
    refused rather than guessed. An object-store URI is one object."""
    if is_uri(path):
        if fmt in ("hf", "mds"):
            raise UserError(f"'{path}': {fmt} inputs must be local folders")
        return [(path, detect_format(path) if fmt == "auto" else fmt)]
    if path.exists() and not path.is_dir() and not path.is_file():
        kind = "a FIFO" if stat.S_ISFIFO(path.stat().st_mode) else \
            "a character device" if stat.S_ISCHR(path.stat().st_mode) else "not a regular file"
        raise UserError(f"input '{path}' is {kind}: reading it may never end; longmix reads files and folders")
    if not path.is_dir():
        if fmt in ("hf", "mds") and path.exists():
            raise UserError(f"input '{path}' is a file; format {fmt} reads a folder (name the dataset's folder)")
        return [(path, detect_format(path) if fmt == "auto" else fmt)]
    if fmt == "auto" and (found := folder_format(path)) != "text":
        fmt = found
    if fmt in ("hf", "mds"):
        input_files(path, fmt, split)  # the layout, the split and the names the metadata lists, checked now
        return [(path, fmt)]
    if fmt == "text":
        return [(path, "text")]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts)]
    data = [(p, data_format(p)) for p in files]
    tabular = [(p, f) for p, f in data if f is not None and (fmt == "auto" or f == fmt)]
    others = [p for p, f in data if f is None]
    if tabular and others:
        shown = ", ".join(str(p.relative_to(path)) for p in others[:3]) + (" ..." if len(others) > 3 else "")
        raise UserError(f"folder '{path}' mixes JSONL/Parquet files with {len(others)} other file(s) ({shown}); "
                        f"name the data files with a glob (e.g. '{path}/*.jsonl') or set format: text (format: hf for "
                        "a Hugging Face dataset folder)")
    if fmt in ("jsonl", "parquet") and not tabular:
        raise UserError(f"folder '{path}' holds no {fmt} files")
    return tabular or [(path, "text")]


def input_files(path: Path | str, fmt: str, split: str = "train") -> list[str] | None:
    """The files of a folder input, relative to it, that ingest hands to its tasks (`files` of read_records):
    a text folder's files, a datasets folder's data files of `split`, an MDS folder's shards. None: the input
    is read whole (a file, an object)."""
    if is_uri(path) or not Path(path).is_dir():
        return None
    if fmt == "text":
        return list_text_files(Path(path))
    if fmt == "hf":
        return hf_data_files(Path(path), split)
    if fmt == "mds":
        return [s.file for s in mds_shards(Path(path))]
    return None
