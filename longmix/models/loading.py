"""Load an HF causal-LM checkpoint folder and its tokenizer: the scorer of the data stages and the model of
every evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
