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


EVAL_ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "flex_attention")


def pick_eval_attention(config: Any, requested: str) -> str:
    """What an evaluation loads the model with: ``auto`` is SDPA unless the family's definition needs more
    (Gemma 2 softcaps its attention logits, which only eager, flex and flash attention do). Sliding windows
    are honoured by every transformers implementation."""
    if requested not in EVAL_ATTENTION:
        raise UserError(f"--attn-implementation must be one of {', '.join(EVAL_ATTENTION)}, not {requested!r}")
    softcap = getattr(config, "attn_logit_softcapping", None)
    if requested == "auto":
        return "eager" if softcap else "sdpa"
    if requested == "sdpa" and softcap:
        raise UserError(f"--attn-implementation sdpa: {config.model_type} softcaps its attention logits "
                        f"(attn_logit_softcapping={softcap}), which SDPA cannot do; use eager (or auto)")
    return requested


def load_checkpoint(ckpt: Path, tokenizer: Path | None = None, device: str = "auto", dtype: str = "auto",
                    rope_theta: float | None = None, attn_implementation: str = "auto",
                    trust_remote_code: bool = False) -> Loaded:
    """Model in eval mode on ``device``; fp32 on CPU (bf16 matmuls are slow and lossy there), bf16 on GPU.
    ``rope_theta`` replaces the RoPE base at load time (ABF without training), on the full-attention layers
    of a model whose RoPE is keyed by layer type."""
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
    from transformers import AutoConfig

    from longmix.models.remote_code import check_custom_code
    from longmix.models.rope import apply_change

    trust = check_custom_code(ckpt, trust_remote_code, "--trust-remote-code")
    config = AutoConfig.from_pretrained(ckpt, trust_remote_code=trust)
    if rope_theta is not None:
        if rope_theta <= 1:
            raise UserError(f"--rope-theta must be > 1, got {rope_theta}")
        config.rope_parameters = apply_change(dict(config.rope_parameters), "abf", theta=float(rope_theta),
                                              max_positions=int(config.max_position_embeddings))
    attn = pick_eval_attention(config, attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(ckpt, config=config, dtype=getattr(torch, dtype),
                                                 attn_implementation=attn, trust_remote_code=trust)
    model.to(dev).eval()
    tok = load_tokenizer(tok_path)
    # BOS as in training: the tokenizer's own settings (an imported checkpoint's), else longmix's defaults.
    own = own_settings(tok_path)
    ids = special_ids(tok, own.bos_token or "<s>", own.eos_token or "</s>")
    bos = ids.bos_id if own.add_bos_token is not False else None
    return Loaded(model, tok, dev, bos, ids.eos_id)
