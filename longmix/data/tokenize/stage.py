"""Tokenize stage: document shards -> tokenized-doc shards (Arrow IPC, memory-mappable), one task per shard."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from longmix.data.recipe import Recipe
from longmix.data.tokenize.choice import TokenizerChoice, tokenizer_ids
from longmix.data.tokenize.encode import encode_table
from longmix.formats.ipc import write_ipc
from longmix.formats.packed_shards import sha256_file
from longmix.formats.tokenizer_files import load_tokenizer
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts


@lru_cache(maxsize=2)
def _cached_tokenizer(path: str, sha256: str) -> Tokenizer:
    return load_tokenizer(path)


def tokenize_task(*, in_path: str, out_dir: str, rel_path: str, tokenizer: str, tokenizer_sha256: str,
                  bos_id: int | None, eos_id: int | None, chunk_chars: int) -> dict[str, Any]:
    tok = _cached_tokenizer(tokenizer, tokenizer_sha256)
    docs = pq.read_table(in_path, columns=["id", "source", "text"])
    table = encode_table(tok, docs, bos_id=bos_id, eos_id=eos_id, chunk_chars=chunk_chars)
    counts = Counts()
    counts.add(docs.column("source").to_pylist(),
               pc.binary_length(docs.column("text").cast(pa.large_binary())).to_numpy())
    out_path = Path(out_dir) / rel_path
    write_ipc(out_path, table)
    tokens = int(np.sum(table.column("n_tokens").to_numpy(), dtype=np.int64))
    return counts.to_dict(outputs=[{"path": rel_path, "rows": table.num_rows, "bytes": out_path.stat().st_size,
                                    "tokens": tokens}])


@dataclass(frozen=True)
class TokenizePlan:
    """The recipe's tokenizer resolved once per run: its ids and the file's digest (pack reads it too)."""

    ids: TokenizerChoice
    sha256: str


class Tokenize(Stage):
    """Every surviving document -> token ids, with the recipe's BOS/EOS (tokenize/choice.py)."""

    name = "tokenize"
    exports = ("inputs",)  # the text shards its outputs are row-aligned with, relative to the build's output

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.tokenizer is not None

    def prepare(self, recipe: Recipe) -> TokenizePlan:
        tok = tokenizer_ids(recipe)  # a missing file or token fails before any stage runs
        return TokenizePlan(tok, sha256_file(tok.path))

    def settings(self, recipe: Recipe, plan: TokenizePlan) -> list[Any]:
        tok = plan.ids  # resolved ids: a changed tokenizer_config.json reruns tokenize
        return [recipe.tokenizer, plan.sha256, tok.bos_id, tok.eos_id, tok.pad_id, recipe.stages.tokenize]

    def run(self, job: StageJob) -> dict[str, Any]:
        plan: TokenizePlan = job.plan
        path, bos, eos, digest = plan.ids.path, plan.ids.bos_id, plan.ids.eos_id, plan.sha256
        stats = job.map_shards("tok", tokenize_task, rel_path=lambda rel: str(Path(rel).with_suffix(".arrow")),
                               tokenizer=str(path), tokenizer_sha256=digest, bos_id=bos, eos_id=eos,
                               chunk_chars=job.recipe.stages.tokenize.chunk_chars)
        tokens = sum(o["tokens"] for s in stats for o in s["outputs"])
        return {"tokens": tokens, "tokenizer": {"path": str(path), "sha256": digest, "bos_id": bos, "eos_id": eos},
                # the text shards, row-aligned, relative to the output (longdep resolves them on its node)
                "inputs": [str(src.relative_to(job.ctx.output)) for src, _ in job.upstream.inputs()]}
