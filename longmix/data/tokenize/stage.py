"""Tokenize stage: document shards -> tokenized-doc shards (Arrow IPC, memory-mappable), one task per shard."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from longmix.atomic import atomic_path
from longmix.config import Recipe
from longmix.data.packed_shards import sha256_file
from longmix.data.tokenize import encode_table, load_tokenizer, own_settings, special_ids, tokenizer_file
from longmix.errors import UserError
from longmix.pipeline.runner import StageContext
from longmix.pipeline.stats import Counts
from longmix.pipeline.tasks import Task

STAGE = "tokenize"


@lru_cache(maxsize=2)
def _cached_tokenizer(path: str, sha256: str) -> Tokenizer:
    return load_tokenizer(path)


def tokenize_task(*, in_path: str, out_dir: str, rel_path: str, tokenizer: str, tokenizer_sha256: str,
                  bos_id: int | None, eos_id: int | None, chunk_chars: int) -> dict[str, Any]:
    tok = _cached_tokenizer(tokenizer, tokenizer_sha256)
    docs = pq.read_table(in_path, columns=["id", "source", "text"])
    table = encode_table(tok, docs, bos_id=bos_id, eos_id=eos_id, chunk_chars=chunk_chars)
    counts = Counts()
    text_bytes = pc.binary_length(docs.column("text").cast(pa.large_binary())).to_numpy()
    for src, nb in zip(docs.column("source").to_pylist(), text_bytes, strict=True):
        counts.saw(src, int(nb))
        counts.keep(src, int(nb))
    out_path = Path(out_dir) / rel_path
    write_ipc(out_path, table)
    tokens = int(np.sum(table.column("n_tokens").to_numpy(), dtype=np.int64))
    return counts.to_dict(outputs=[{"path": rel_path, "rows": table.num_rows, "bytes": out_path.stat().st_size,
                                    "tokens": tokens}])


def write_ipc(path: Path, table: pa.Table) -> None:
    """One uncompressed record batch per file, so readers memory-map it zero-copy."""
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks(), max_chunksize=max(table.num_rows, 1))


def read_ipc(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Memory-mapped read: nothing is copied until a column is touched."""
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return table.select(columns) if columns else table


@dataclass(frozen=True)
class TokenizerChoice:
    """The recipe's tokenizer, resolved: the tokenizer.json, the special tokens by name, and the ids that
    tokenize adds to each document (None: not added) and that pack pads with."""

    path: Path
    bos_token: str
    eos_token: str
    pad_token: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int


def tokenizer_ids(recipe: Recipe) -> TokenizerChoice:
    """The recipe's tokenizer with every unset field taken from the tokenizer's own settings; a missing file or
    token is a recipe error."""
    cfg = recipe.tokenizer
    assert cfg is not None
    path = tokenizer_file(recipe.resolve(cfg.path))
    if not path.is_file():
        hint = "import a checkpoint with `longmix model import`" if path.name == "tokenizer.json" and \
            path.parent.is_dir() and path.parent != recipe.resolve(".") else "train one with `longmix tokenizer train`"
        raise UserError(f"tokenizer '{path}' not found ({hint})")
    own = own_settings(path)
    bos_token = cfg.bos_token or own.bos_token or "<s>"
    eos_token = cfg.eos_token or own.eos_token or "</s>"
    pad_token = cfg.pad_token or own.pad_token or "<pad>"
    add_bos = cfg.bos if cfg.bos is not None else (own.add_bos_token if own.add_bos_token is not None else True)
    ids = special_ids(load_tokenizer(path), bos_token, eos_token, pad_token)
    for flag, wanted, name, value in (("bos", add_bos, bos_token, ids.bos_id), ("eos", cfg.eos, eos_token, ids.eos_id)):
        if wanted and value is None:
            raise UserError(f"tokenizer {path} has no {name!r} token; set tokenizer.{flag}_token or {flag}: false")
    pad = ids.pad_id if ids.pad_id is not None else ids.eos_id
    if pad is None:
        raise UserError(f"tokenizer {path} has neither a pad nor an EOS token; set tokenizer.pad_token")
    return TokenizerChoice(path, bos_token, eos_token, pad_token, ids.bos_id if add_bos else None,
                           ids.eos_id if cfg.eos else None, pad)


def run(ctx: StageContext, upstream: dict[str, Any], upstream_dir: Path, settings: str,
        recipe: Recipe) -> dict[str, Any]:
    done = ctx.finished_report(STAGE, settings)
    if done is not None:
        return done
    started = time.time()
    stage_dir = ctx.stage_dir(STAGE)
    choice = tokenizer_ids(recipe)
    path, bos, eos = choice.path, choice.bos_id, choice.eos_id
    digest = sha256_file(path)
    tasks = []
    for i, o in enumerate(upstream["outputs"]):
        rel = str(Path(o["path"]).with_suffix(".arrow"))
        tasks.append(Task(f"tok-{i:05d}", "longmix.data.tokenize_stage:tokenize_task", {
            "in_path": str(upstream_dir / o["path"]), "out_dir": str(stage_dir), "rel_path": rel,
            "tokenizer": str(path), "tokenizer_sha256": digest, "bos_id": bos, "eos_id": eos,
            "chunk_chars": recipe.stages.tokenize.chunk_chars,
        }, marker=str(stage_dir / "_tasks" / f"tok-{i:05d}.json")))
    stats = ctx.run_tasks(STAGE, tasks, "tokenize")
    tokens = sum(o["tokens"] for s in stats for o in s["outputs"])
    return ctx.write_report(STAGE, stats, started, settings_hash=settings, tokens=tokens,
                            tokenizer={"path": str(path), "sha256": digest, "bos_id": bos, "eos_id": eos})
