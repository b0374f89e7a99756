"""Hugging Face `datasets` folders as inputs (`format: hf`).

Three layouts: a `Dataset.save_to_disk` folder (state.json lists Arrow IPC stream files), a
`DatasetDict.save_to_disk` folder (dataset_dict.json, one such folder per split) and Parquet files in the Hub or
`datasets` cache layout (a tree of *.parquet beside README.md, .gitattributes, ...). A folder's data files are
listed by `hf_data_files` (paths relative to the folder, one ingest task each) and read by `read_hf`; the
rows go through the same record function as Parquet (records.table_record).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow as pa

from longmix.core.errors import UserError
from longmix.data.ingest.records import Bad, Good, batch_records, missing_column, safe_relative

STATE, DATASET_DICT = "state.json", "dataset_dict.json"
_EXPECTED = (f"expected {STATE} (Dataset.save_to_disk), {DATASET_DICT} (DatasetDict.save_to_disk) or *.parquet "
             "files (the Hub layout)")
# Hub file names carry their split: train-00000-of-00002.parquet, test.parquet, validation-part1.parquet.
_SPLIT_NAME = re.compile(r"^([A-Za-z0-9_]+?)(?:-\d+-of-\d+)?(?:[-.][^/]*)?\.parquet$")
_SHARDED = re.compile(r"^([A-Za-z0-9_]+)-\d+-of-\d+\.parquet$")
# Folder names the Hub reads as splits (datasets' own keywords), e.g. default/train/0000.parquet.
_SPLIT_DIRS = {"train", "training", "test", "testing", "eval", "evaluation", "validation", "valid", "dev"}


def is_hf_folder(path: Path) -> bool:
    """A save_to_disk folder: state.json with its data files, or dataset_dict.json with its splits."""
    return _json_key(path / STATE, "_data_files") or _json_key(path / DATASET_DICT, "splits")


def _json_key(path: Path, key: str) -> bool:
    if not path.is_file() or path.stat().st_size > 16 << 20:
        return False
    try:
        obj = json.loads(path.read_bytes())
    except ValueError:
        return False
    return isinstance(obj, dict) and key in obj


def _state_files(folder: Path, prefix: str) -> list[str]:
    where = folder / STATE
    try:
        state = json.loads(where.read_bytes())
        entries = state["_data_files"]
        names = [e["filename"] for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"'{where}': not a datasets state.json (no _data_files list of filenames: {exc})") from None
    out = []
    for name in names:
        rel = safe_relative(folder, name, STATE)
        if not (folder / rel).is_file():
            raise UserError(f"'{where}' lists {rel}, which is missing; is the save_to_disk folder complete?")
        out.append(prefix + rel)
    if not out:
        raise UserError(f"'{where}' lists no data files")
    return out


def _file_splits(rel: str) -> set[str]:
    """The splits a Parquet file's path names: its file name (train-00000-of-00002.parquet) or a folder."""
    parts = PurePosixPath(rel).parts
    out = {p for p in parts[:-1] if p in _SPLIT_DIRS}
    if m := _SHARDED.match(parts[-1]):
        out.add(m.group(1))
    elif (m := _SPLIT_NAME.match(parts[-1])) and m.group(1) in _SPLIT_DIRS:
        out.add(m.group(1))
    return out


def _snapshot(root: Path) -> str:
    """In the Hub cache (datasets--org--name/ with blobs/, refs/, snapshots/<commit>/), the snapshot that
    refs/main names (or the only one), relative to `root`; "" for any other folder."""
    snaps = sorted(p.name for p in (root / "snapshots").iterdir() if p.is_dir()) if (root / "snapshots").is_dir() \
        else []
    if not snaps or not (root / "blobs").is_dir():
        return ""
    ref = root / "refs" / "main"
    commit = ref.read_text().strip() if ref.is_file() else snaps[0] if len(snaps) == 1 else None
    if commit not in snaps:
        raise UserError(f"'{root}': a Hub cache folder with snapshots {', '.join(snaps)} and no refs/main naming "
                        "one of them; name the snapshot's folder")
    return f"snapshots/{commit}/"


def _parquet_files(root: Path, split: str) -> list[str]:
    prefix = _snapshot(root)
    base = root / prefix
    files = sorted(prefix + p.relative_to(base).as_posix() for p in base.rglob("*.parquet") if p.is_file() and not
                   any(part.startswith(".") for part in p.relative_to(base).parts))
    if not files:
        raise UserError(f"folder '{root}' is no Hugging Face dataset folder: {_EXPECTED}")
    named = {rel: _file_splits(rel[len(prefix):]) for rel in files}
    chosen = [rel for rel in files if split in named[rel] or split in PurePosixPath(rel[len(prefix):]).parts[:-1]]
    if chosen:
        return chosen
    available = sorted(set().union(*named.values()))
    if available:
        raise UserError(f"'{root}': no split '{split}' among its Parquet files (splits: {', '.join(available)}); "
                        "set `split:` for this source")
    return files  # no file names a split: the folder is one split


def hf_data_files(root: Path, split: str = "train") -> list[str]:
    """The data files of `split` (Arrow or Parquet), relative to `root`, in reading order."""
    if (root / DATASET_DICT).is_file():
        try:
            splits = json.loads((root / DATASET_DICT).read_bytes())["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"'{root / DATASET_DICT}': not a datasets dataset_dict.json ({exc})") from None
        if split not in splits:
            raise UserError(f"'{root}': no split '{split}' (splits: {', '.join(map(str, splits))}); set `split:` "
                            "for this source")
        sub = safe_relative(root, split, DATASET_DICT)
        if "/" in sub or not (root / sub / STATE).is_file():
            raise UserError(f"'{root}': split '{split}' has no folder with a {STATE}")
        return _state_files(root / sub, sub + "/")
    if (root / STATE).is_file():
        return _state_files(root, "")
    return _parquet_files(root, split)


def read_arrow_stream(path: Path, text_field: str, id_field: str | None, cap: int) -> Iterator[Good | Bad]:
    """An Arrow IPC stream file (what save_to_disk writes), memory-mapped and read batch by batch."""
    name = str(path)
    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as exc:
        yield Bad("unreadable_file", f"not a readable Arrow stream file: {exc}", name, -1)
        return
    with source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowException, OSError) as exc:
            yield Bad("unreadable_file", f"not a readable Arrow stream file: {exc}", name, -1)
            return
        if text_field not in reader.schema.names:
            raise UserError(missing_column(name, text_field, reader.schema.names))
        row = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                yield Bad("truncated_file", f"Arrow stream unreadable after row {row}: {exc}", name, row)
                return
            yield from batch_records(batch, text_field, id_field, name, row, cap)
            row += batch.num_rows


def read_hf(root: Path, text_field: str, id_field: str | None, cap: int, split: str = "train",
            files: list[str] | None = None) -> Iterator[Good | Bad]:
    """`files` of the folder (all of the split's when None): Arrow stream files or Parquet files."""
    from longmix.data.ingest.readers import read_parquet

    for rel in files if files is not None else hf_data_files(root, split):
        path = root / safe_relative(root, rel, "the task")
        if rel.endswith(".parquet"):
            yield from read_parquet(path, text_field, id_field, cap)
        else:
            yield from read_arrow_stream(path, text_field, id_field, cap)
