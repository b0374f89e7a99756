"""Evaluation documents: records from JSONL or tokenized shards, sampled and cut to length (models are
loaded by longmix.models.loading)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"data '{path}' not found")
    if path.is_file() and path.suffix == ".json":  # a mix manifest: its packed shards
        from longmix.formats.manifest import load_manifest

        return [path.parent / s.path for s in load_manifest(path).shards]
    if path.is_file():
        return [path]
    found = sorted(p for p in path.rglob("*") if p.is_file() and (".jsonl" in p.name or p.suffix == ".arrow"))
    if not found:
        raise UserError(f"no .jsonl or .arrow files under '{path}'")
    return found


def _packed_documents(f: Path, table: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Every real document segment of a packed shard's rows (the padding tail left out), as trained."""
    for r, (ids, lens, pad) in enumerate(zip(table.column("input_ids").to_pylist(),
                                             table.column("doc_lens").to_pylist(),
                                             table.column("pad").to_pylist(), strict=True)):
        ends = np.cumsum(lens)
        n = len(lens) - (1 if pad else 0)
        for k in range(n):
            yield f"{f.name}:{r}:{k}", np.asarray(ids[int(ends[k]) - lens[k] : int(ends[k])], dtype=np.int64)


def iter_records(paths: list[Path], text_field: str = "text") -> Iterator[tuple[str, str | np.ndarray]]:
    """(id, text) from JSONL; (id, token ids) from tokenized Arrow IPC shards (their BOS/EOS included), and
    from a mix's packed shards or manifest (each document segment of each row)."""
    from longmix.data.ingest.texts import read_texts
    from longmix.formats.ipc import read_ipc

    for path in paths:
        for f in _files(path):
            if f.suffix == ".arrow":
                table = read_ipc(f)
                if "doc_lens" in table.column_names:
                    yield from _packed_documents(f, table)
                    continue
                if "input_ids" not in table.column_names or "id" not in table.column_names:
                    raise UserError(f"'{f}' is neither a tokenized shard (id, input_ids) nor a packed shard "
                                    "(input_ids, doc_lens)")
                for rid, ids in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist(),
                                    strict=True):
                    yield str(rid), np.asarray(ids, dtype=np.int64)
                continue
            yield from read_texts([f], text_field, "id", 256 << 20, fmt="jsonl")


def seeded_texts(paths: list[Path], seed: int, chars: int) -> tuple[list[str], int]:
    """The non-empty texts of a corpus in a seeded order, as few as reach ``chars`` characters (all of a
    smaller corpus), and how many characters they hold: the filler of probes and RULER haystacks."""
    texts = [t for _, t in iter_records(paths) if isinstance(t, str) and t.strip()]
    random.Random(seed).shuffle(texts)
    out, total = [], 0
    for t in texts:
        if total >= chars:
            break
        out.append(t)
        total += len(t)
    return out, total


def encode(tok: Any, text: str, n_tokens: int, bos_id: int | None) -> np.ndarray:
    """The first ``n_tokens`` ids of ``text`` (BOS first, as in training). Only a prefix of a long text is
    tokenized; 12 characters a token is far beyond any BPE's ratio, and a cut only touches the last tokens."""
    head = text[: n_tokens * 12]
    ids = tok.encode(head, add_special_tokens=False).ids
    if len(ids) + 1 < n_tokens and len(head) < len(text):
        ids = tok.encode(text, add_special_tokens=False).ids
    ids = ([bos_id] if bos_id is not None else []) + ids
    return np.asarray(ids[:n_tokens], dtype=np.int64)


def sample_documents(paths: list[Path], tok: Any, bos_id: int | None, min_len: int, max_len: int,
                     max_docs: int | None, seed: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``max_docs`` documents of at least ``min_len`` tokens, in a seeded random order, cut to
    ``max_len``. Every document starts at its own beginning: nothing is packed."""
    records = list(iter_records(paths))
    random.Random(seed).shuffle(records)
    out = []
    for rid, content in records:
        ids = content[:max_len] if isinstance(content, np.ndarray) else encode(tok, content, max_len, bos_id)
        if len(ids) >= min_len:
            out.append((rid, ids))
            if max_docs and len(out) >= max_docs:
                break
    if not out:
        raise UserError(f"no document with at least {min_len} tokens in {', '.join(map(str, paths))}")
    return out
