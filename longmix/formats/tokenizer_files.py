"""The tokenizer files of a checkpoint or a recipe: `tokenizer.json` (any HF tokenizer) and what the
`tokenizer_config.json` beside it says of its special tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class SpecialIds:
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load any HF tokenizer.json."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path} (train one with `longmix tokenizer train`)")
    return Tokenizer.from_file(str(path))


def tokenizer_file(path: str | Path) -> Path:
    """The tokenizer.json named by ``path``: the file itself, or the one inside a checkpoint folder."""
    path = Path(path)
    return path / "tokenizer.json" if path.is_dir() else path


@dataclass(frozen=True)
class OwnSettings:
    """What a tokenizer says of itself in the ``tokenizer_config.json`` beside its ``tokenizer.json`` (as HF
    checkpoint folders and ``longmix model import`` write it); all None for a bare tokenizer.json."""

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    add_bos_token: bool | None = None


def own_settings(tokenizer_json: str | Path) -> OwnSettings:
    cfg_path = Path(tokenizer_json).parent / "tokenizer_config.json"
    if not cfg_path.is_file():
        return OwnSettings()
    cfg = json.loads(cfg_path.read_text())

    def token(key: str) -> str | None:
        value = cfg.get(key)
        return value.get("content") if isinstance(value, dict) else value  # older files store AddedToken dicts

    add_bos = cfg.get("add_bos_token")
    return OwnSettings(token("bos_token"), token("eos_token"), token("pad_token"),
                       bool(add_bos) if add_bos is not None else None)


def special_ids(tok: Tokenizer, bos: str = "<s>", eos: str = "</s>", pad: str | None = "<pad>") -> SpecialIds:
    """Ids of the BOS/EOS/pad tokens; pad falls back to EOS when the vocabulary has no pad token (Llama)."""
    bos_id = tok.token_to_id(bos)
    eos_id = tok.token_to_id(eos)
    pad_id = tok.token_to_id(pad) if pad is not None else None
    return SpecialIds(bos_id=bos_id, eos_id=eos_id, pad_id=pad_id if pad_id is not None else eos_id)
