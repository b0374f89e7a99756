"""Recipe models of the tokenize, mix and pack stages; imported by longmix.config (no cycle)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenizerConfig(_Strict):
    """Unset fields follow the tokenizer's own ``tokenizer_config.json`` (a checkpoint folder's), else the
    defaults of ``longmix tokenizer train``: ``<s>``, ``</s>``, ``<pad>``, BOS on."""

    path: str = Field(description="a tokenizer.json or a HF checkpoint folder holding one; relative to the recipe")
    bos: bool | None = Field(None, description="prepend the BOS token to every document (default: the "
                             "tokenizer's add_bos_token, else true)")
    eos: bool = Field(True, description="append the EOS token to every document (the separator of packed rows)")
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = Field(None, description="falls back to the EOS token when absent (Llama)")


class TokenizeConfig(_Strict):
    chunk_chars: int = Field(32768, ge=256, description="long texts are cut at safe boundaries into pieces this long")


class SourceMixConfig(_Strict):
    share: float | None = Field(None, ge=0.0, le=1.0, description="fraction of total_tokens")
    bucket_weights: dict[str, float] | None = Field(None, description="upsampling factor per bucket label or index")
    long_share: float | None = Field(None, ge=0.0, le=1.0, description="fraction of tokens from long documents")
    remove_buckets: list[str | int] = Field(default_factory=list)
    max_epochs: int | None = Field(None, ge=1)


class MixConfig(_Strict):
    enabled: bool = True
    total_tokens: int | None = Field(None, gt=0, description="token budget; none: every token once")
    edges: list[int] | None = Field(None, description="bucket edges in tokens; default seq_len/8, /2, x1")
    long_min_tokens: int | None = Field(None, gt=0, description="where 'long' starts; one of the edges")
    max_epochs: int = Field(4, ge=1, description="repetition cap per document")
    on_shortfall: Literal["warn", "error"] = "warn"
    sources: dict[str, SourceMixConfig] = Field(default_factory=dict, description="per-source settings by name")


class PackConfig(_Strict):
    strategy: Literal["concat", "best_fit", "pad"] = "best_fit"
    rows_per_shard: int = Field(1024, gt=0)
    window: int = Field(8192, gt=0, description="best_fit: documents considered at once")
    batch_docs: int = Field(16384, gt=0, description="documents read per packing batch")
