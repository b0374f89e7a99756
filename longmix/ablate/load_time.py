"""An arm that is not trained (`train: none`): the base checkpoint with its RoPE changed at load time.

The arm's checkpoint folder is the base's files linked in (weights, tokenizer, chat template, generation
settings: the same bytes, no copy) and a config.json whose RoPE parameters and position limit are changed
exactly as a training run would change them (`longmix.train.model.apply_rope`), so an evaluation loads it
like any checkpoint and a load-time arm differs from a trained one only in the training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from longmix.core.atomic import atomic_path
from longmix.core.errors import UserError
from longmix.train.recipe import RopeConfig


def write_load_time_checkpoint(base: Path, out: Path, rope: RopeConfig, max_position_embeddings: int | None) -> Path:
    """``out``: ``base`` with ``rope`` applied at load time; written once (config.json last: it marks done)."""
    from transformers import AutoConfig

    from longmix.train.model import apply_rope

    if (out / "config.json").is_file():
        return out
    try:
        config = AutoConfig.from_pretrained(base, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"base model {base}: {str(exc).strip().splitlines()[0]}") from None
    apply_rope(config, rope, max_position_embeddings)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(base.iterdir()):
        if f.is_file() and f.name != "config.json" and not (out / f.name).exists():
            _link(f, out / f.name)
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(config.to_json_string(use_diff=True))
    return out


def _link(src: Path, dst: Path) -> None:
    """A hard link (the same bytes, no space), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
