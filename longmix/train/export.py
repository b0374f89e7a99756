"""Export a ZeRO-3 training checkpoint as a consolidated safetensors HF checkpoint.

The fp32 weights are rebuilt from the partitioned optimizer states (DeepSpeed's zero_to_fp32), the
HF config is the one saved with the checkpoint (so RoPE changes made for training are kept), and the
model is materialized only once, on CPU, to write it with ``save_pretrained``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from longmix.core.errors import UserError
from longmix.train import checkpoint as ckpt

log = logging.getLogger(__name__)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder from a run folder, its checkpoints/ folder, or a step_* folder (newest wins)."""
    if (path / ckpt.STATE_FILE).is_file():
        return path
    for root in (path / "checkpoints", path):
        found, damaged = ckpt.intact_checkpoints(root)
        for line in damaged:
            log.warning("%s: passed over", line)
        if found:
            return found[-1][1]
    raise UserError(f"no complete checkpoint under {path}; pass a run folder or a checkpoints/step_* folder")


def check_tokenizer_file(path: Path, sha256: str | None) -> None:
    """Only the tokenizer the run trained with is copied into an export: the file must be the one whose hash
    the manifest recorded (and the run saved), and a tokenizer at all, never any file a manifest names."""
    from tokenizers import Tokenizer

    from longmix.formats.packed_shards import sha256_file

    if sha256 is not None and sha256_file(path) != sha256:
        raise UserError(f"tokenizer {path} is not the one this run trained with (sha256 {sha256[:12]} recorded); "
                        "restore it, or export without it and copy the right tokenizer.json by hand")
    try:
        Tokenizer.from_file(str(path))
    except Exception:  # tokenizers raises its own exception type for anything unreadable
        raise UserError(f"{path} is not a tokenizer.json; nothing was copied into the export") from None


def non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity."""
    return [name for name, t in state_dict.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def export(path: Path, out: Path, dtype: str = "float32", trust_pickles: bool = False) -> Path:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_checkpoint(path)
    state = ckpt.read_state(folder)
    tok = Path(state.get("tokenizer_dir", "")) / state.get("tokenizer", "")
    copy_tok = bool(state.get("tokenizer")) and tok.is_file()
    if copy_tok:  # before anything is written
        check_tokenizer_file(tok, state.get("tokenizer_sha256"))
    try:  # the config longmix saved; classes are transformers' own (no code from the folder runs)
        config = AutoConfig.from_pretrained(folder / "hf_config", trust_remote_code=False)
    except ValueError as exc:
        raise UserError(f"{folder / 'hf_config'}: {str(exc).strip().splitlines()[0]}") from None
    with ckpt.safe_loading(folder, trust_pickles):
        sd = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    bad = non_finite(sd)
    if bad:  # a diverged run's weights: nothing is written
        others = [str(f) for _, f in ckpt.complete_checkpoints(folder.parent) if f != folder]
        raise UserError(f"{folder} holds non-finite weights ({len(bad)} of {len(sd)} tensors, first {bad[0]}); "
                        f"export an earlier checkpoint: {', '.join(others) or 'none is left'}")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model = model.to(getattr(torch, dtype))
    # Training turned the cache off; generation wants it, and generate() reads generation_config, which
    # from_config derived from the training config (without this every new token recomputes the prompt).
    model.config.use_cache = True
    model.generation_config.use_cache = True
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if copy_tok:
        shutil.copy2(tok, out / "tokenizer.json")
        own = tok.parent / "tokenizer_config.json"  # an imported checkpoint's special-token settings
        if tok.name == "tokenizer.json" and own.is_file():
            shutil.copy2(own, out / "tokenizer_config.json")
    log.info("exported step %s of %s to %s", state["step"], folder.parent.parent, out)
    return folder
