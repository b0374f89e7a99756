"""The recipe's tokenizer, resolved once for tokenize, pack and the settings hash: which tokenizer.json, which
special tokens, and which ids are added to each document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longmix.core.errors import UserError
from longmix.data.recipe import Recipe
from longmix.formats.tokenizer_files import load_tokenizer, own_settings, special_ids, tokenizer_file


@dataclass(frozen=True)
class TokenizerChoice:
    """The recipe's tokenizer, resolved: the tokenizer.json, the special tokens by name, and the ids that
    tokenize adds to each document (None: not added) and that pack pads with."""

    path: Path
    bos_token: str
    eos_token: str
    pad_token: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int


def tokenizer_ids(recipe: Recipe) -> TokenizerChoice:
    """The recipe's tokenizer with every unset field taken from the tokenizer's own settings; a missing file or
    token is a recipe error."""
    cfg = recipe.tokenizer
    assert cfg is not None
    path = tokenizer_file(recipe.resolve(cfg.path))
    if not path.is_file():
        hint = "import a checkpoint with `longmix model import`" if path.name == "tokenizer.json" and \
            path.parent.is_dir() and path.parent != recipe.resolve(".") else "train one with `longmix tokenizer train`"
        raise UserError(f"tokenizer '{path}' not found ({hint})")
    own = own_settings(path)
    bos_token = cfg.bos_token or own.bos_token or "<s>"
    eos_token = cfg.eos_token or own.eos_token or "</s>"
    pad_token = cfg.pad_token or own.pad_token or "<pad>"
    add_bos = cfg.bos if cfg.bos is not None else (own.add_bos_token if own.add_bos_token is not None else True)
    ids = special_ids(load_tokenizer(path), bos_token, eos_token, pad_token)
    for flag, wanted, name, value in (("bos", add_bos, bos_token, ids.bos_id), ("eos", cfg.eos, eos_token, ids.eos_id)):
        if wanted and value is None:
            raise UserError(f"tokenizer {path} has no {name!r} token; set tokenizer.{flag}_token or {flag}: false")
    pad = ids.pad_id if ids.pad_id is not None else ids.eos_id
    if pad is None:
        raise UserError(f"tokenizer {path} has neither a pad nor an EOS token; set tokenizer.pad_token")
    return TokenizerChoice(path, bos_token, eos_token, pad_token, ids.bos_id if add_bos else None,
                           ids.eos_id if cfg.eos else None, pad)
