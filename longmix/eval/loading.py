"""Load an HF causal-LM checkpoint folder, its tokenizer, and evaluation documents."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError


@dataclass
class Loaded:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # tokenizers.Tokenizer
    device: str
    bos_id: int | None
    eos_id: int | None


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_checkpoint(ckpt: Path, tokenizer: Path | None = None, device: str = "auto", dtype: str = "auto",
                    rope_theta: float | None = None) -> Loaded:
    """Model in eval mode on ``device``; fp32 on CPU (bf16 matmuls are slow and lossy there), bf16 on GPU.
    ``rope_theta`` replaces the RoPE base at load time (ABF without training)."""
    import torch
    from transformers import AutoModelForCausalLM

    from longmix.formats.tokenizer_files import load_tokenizer, own_settings, special_ids, tokenizer_file

    if not (ckpt / "config.json").is_file():
        raise UserError(f"checkpoint '{ckpt}' has no config.json; give an HF checkpoint folder (longmix export)")
    tok_path = tokenizer_file(tokenizer or ckpt)
    if not tok_path.is_file():
        raise UserError(f"no tokenizer at '{tok_path}'; pass --tokenizer")
    dev = pick_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if dev.startswith("cuda") else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is enough; theirs floods logs of CI runs
    kw = {}
    if rope_theta is not None:
        from transformers import AutoConfig

        if rope_theta <= 1:
            raise UserError(f"--rope-theta must be > 1, got {rope_theta}")
        config = AutoConfig.from_pretrained(ckpt)
        config.rope_parameters = {"rope_type": "default", "rope_theta": float(rope_theta)}
        kw["config"] = config
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=getattr(torch, dtype), attn_implementation="sdpa", **kw)
    model.to(dev).eval()
    tok = load_tokenizer(tok_path)
    # BOS as in training: the tokenizer's own settings (an imported checkpoint's), else longmix's defaults.
    own = own_settings(tok_path)
    ids = special_ids(tok, own.bos_token or "<s>", own.eos_token or "</s>")
    bos = ids.bos_id if own.add_bos_token is not False else None
    return Loaded(model, tok, dev, bos, ids.eos_id)


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"data '{path}' not found")
    if path.is_file():
        return [path]
    found = sorted(p for p in path.rglob("*") if p.is_file() and (".jsonl" in p.name or p.suffix == ".arrow"))
    if not found:
        raise UserError(f"no .jsonl or .arrow files under '{path}'")
    return found


def iter_records(paths: list[Path], text_field: str = "text") -> Iterator[tuple[str, str | np.ndarray]]:
    """(id, text) from JSONL, or (id, token ids) from tokenized Arrow IPC shards (their BOS/EOS included)."""
    from longmix.data.ingest.readers import Good, read_jsonl
    from longmix.formats.ipc import read_ipc

    for path in paths:
        for f in _files(path):
            if f.suffix == ".arrow":
                table = read_ipc(f, ["id", "input_ids"])
                for rid, ids in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist(),
                                    strict=True):
                    yield str(rid), np.asarray(ids, dtype=np.int64)
                continue
            for k, rec in enumerate(read_jsonl(f, text_field, "id", 256 << 20)):
                if isinstance(rec, Good):
                    yield rec.id or f"{f.name}:{k}", rec.text


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
