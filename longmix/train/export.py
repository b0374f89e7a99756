"""Export a ZeRO-3 training checkpoint as a consolidated safetensors HF checkpoint.

The fp32 weights are rebuilt from the partitioned optimizer states (DeepSpeed's zero_to_fp32), the
HF config is the one saved with the checkpoint (so RoPE changes made for training are kept), and the
model is materialized only once, on CPU, to write it with ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

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


def run_tokenizer(folder: Path, state: dict) -> Path:
    """The tokenizer the run trained with, checked; an export without it would load in no other tool."""
    if not state.get("tokenizer"):
        raise UserError(f"{folder} records no tokenizer; it was saved by a longmix older than tokenizer tracking")
    tok = Path(state.get("tokenizer_dir", "")) / state["tokenizer"]
    if not tok.is_file():
        raise UserError(f"the tokenizer this run trained with is gone: {tok} (sha256 "
                        f"{str(state.get('tokenizer_sha256'))[:12]}); restore it beside the mix's manifest, then "
                        "export")
    check_tokenizer_file(tok, state.get("tokenizer_sha256"))
    return tok


def special_tokens(tok: Path, state: dict) -> dict[str, str]:
    """bos/eos/pad as token strings: from the checkpoint's record of the mix's special ids (older checkpoints:
    the manifest beside the tokenizer)."""
    from tokenizers import Tokenizer

    ids = state.get("special_tokens")
    if ids is None:
        from longmix.formats.manifest import load_manifest

        entry = load_manifest(Path(state["tokenizer_dir"]) / "manifest.json").tokenizer
        ids = {"bos_id": entry.bos_id, "eos_id": entry.eos_id, "pad_id": entry.pad_id}
    vocab = Tokenizer.from_file(str(tok))
    return {name: vocab.id_to_token(ids[f"{name}_id"]) for name in ("bos", "eos", "pad")
            if ids.get(f"{name}_id") is not None and vocab.id_to_token(ids[f"{name}_id"]) is not None}


def write_tokenizer(tok: Path, state: dict, config: Any, out: Path) -> None:
    """tokenizer.json and a tokenizer_config.json naming the special tokens, so AutoTokenizer, lm-eval and
    vLLM know where sequences start and stop. An imported checkpoint's own tokenizer_config.json (its chat
    template, its settings) is kept, with the special tokens filled in where it lacks them; an SFT run's chat
    template (chat_template.jinja beside its manifest) comes along, so the tuned model chats as it was tuned."""
    shutil.copy2(tok, out / "tokenizer.json")
    own = tok.parent / "tokenizer_config.json"
    settings = json.loads(own.read_text()) if tok.name == "tokenizer.json" and own.is_file() else {}
    settings.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for name, token in special_tokens(tok, state).items():
        settings.setdefault(f"{name}_token", token)
    settings.setdefault("model_max_length", getattr(config, "max_position_embeddings", None) or 1 << 30)
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    template = tok.parent / "chat_template.jinja"  # an SFT manifest's: the template its loss masks followed
    if tok.name == "tokenizer.json" and template.is_file():
        shutil.copy2(template, out / template.name)


def non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity."""
    return [name for name, t in state_dict.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def export(path: Path, out: Path, dtype: str = "float32", trust_pickles: bool = False) -> Path:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_checkpoint(path)
    state = ckpt.read_state(folder)
    tok = run_tokenizer(folder, state)  # before anything is written
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
    write_tokenizer(tok, state, config, out)
    log.info("exported step %s of %s to %s", state["step"], folder.parent.parent, out)
    return folder
