"""Eval test fixtures: a tiny Llama trained for a few steps in-process and saved as an HF checkpoint folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from helpers_train import TINY_LLAMA, make_tokenizer, stdlib_texts


def tiny_checkpoint(out: Path, steps: int = 30, seq_len: int = 128, seed: int = 0) -> Path:
    """Train TINY_LLAMA (fp32, sdpa, CPU) on stdlib text windows; save weights + tokenizer.json in ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.formats.tokenizer_files import load_tokenizer

    tok_path = make_tokenizer(out.parent / "tok")
    tok = load_tokenizer(tok_path)
    ids = np.concatenate([[0] + tok.encode(t).ids for t in stdlib_texts(60_000)]).astype(np.int64)
    torch.manual_seed(seed)
    fields = dict(TINY_LLAMA)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - seq_len, 8)
        batch = torch.as_tensor(np.stack([ids[s:s + seq_len] for s in starts]))
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    shutil.copy(tok_path, out / "tokenizer.json")
    return out
