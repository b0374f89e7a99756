"""Tokenize stage: document shards -> tokenized-doc shards (Arrow IPC, memory-mappable), one task per shard."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from longmix.data.recipe import Recipe
from longmix.data.tokenize.choice import tokenizer_ids
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
    text_bytes = pc.binary_length(docs.column("text").cast(pa.large_binary())).to_numpy()
    for src, nb in zip(docs.column("source").to_pylist(), text_bytes, strict=True):
        counts.saw(src, int(nb))
        counts.keep(src, int(nb))
    out_path = Path(out_dir) / rel_path
    write_ipc(out_path, table)
    tokens = int(np.sum(table.column("n_tokens").to_numpy(), dtype=np.int64))
    return counts.to_dict(outputs=[{"path": rel_path, "rows": table.num_rows, "bytes": out_path.stat().st_size,
                                    "tokens": tokens}])


class Tokenize(Stage):
    """Every surviving document -> token ids, with the recipe's BOS/EOS (tokenize/choice.py)."""

    name = "tokenize"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.tokenizer is not None

    def check(self, recipe: Recipe) -> None:
        tokenizer_ids(recipe)  # a missing file or token fails before any stage runs

    def settings(self, recipe: Recipe) -> list[Any]:
        tok = tokenizer_ids(recipe)  # resolved ids: a changed tokenizer_config.json reruns tokenize
        return [recipe.tokenizer, sha256_file(tok.path), tok.bos_id, tok.eos_id, tok.pad_id, recipe.stages.tokenize]

    def run(self, job: StageJob) -> dict[str, Any]:
        choice = tokenizer_ids(job.recipe)
        path, bos, eos = choice.path, choice.bos_id, choice.eos_id
        digest = sha256_file(path)
        stats = job.run_tasks([
            job.task(f"tok-{i:05d}", tokenize_task, cost=size, in_path=str(src), out_dir=str(job.dir),
                     rel_path=str(Path(rel).with_suffix(".arrow")), tokenizer=str(path), tokenizer_sha256=digest,
                     bos_id=bos, eos_id=eos, chunk_chars=job.recipe.stages.tokenize.chunk_chars)
            for i, ((src, rel), size) in enumerate(zip(job.upstream.inputs(), job.upstream.sizes(), strict=True))])
        tokens = sum(o["tokens"] for s in stats for o in s["outputs"])
        return {"tokens": tokens, "tokenizer": {"path": str(path), "sha256": digest, "bos_id": bos, "eos_id": eos},
                # the text shards, row-aligned, relative to the output (longdep resolves them on its node)
                "inputs": [str(src.relative_to(job.ctx.output)) for src, _ in job.upstream.inputs()]}
