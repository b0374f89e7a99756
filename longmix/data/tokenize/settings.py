"""Recipe settings of the tokenizer (`tokenizer`) and the tokenize stage (`stages.tokenize`)."""

from __future__ import annotations

from pydantic import Field

from longmix.core.recipe_io import Strict


class TokenizerConfig(Strict):
    """Unset fields follow the tokenizer's own ``tokenizer_config.json`` (a checkpoint folder's), else the
    defaults of ``longmix tokenizer train``: ``<s>``, ``</s>``, ``<pad>``, BOS on."""

    path: str = Field(description="a tokenizer.json or a HF checkpoint folder holding one; relative to the recipe")
    bos: bool | None = Field(None, description="prepend the BOS token to every document (default: the "
                             "tokenizer's add_bos_token, else true)")
    eos: bool = Field(True, description="append the EOS token to every document (the separator of packed rows)")
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = Field(None, description="falls back to the EOS token when absent (Llama)")


class TokenizeConfig(Strict):
    chunk_chars: int = Field(32768, ge=256, description="long texts are cut at safe boundaries into pieces this long")
