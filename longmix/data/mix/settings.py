"""Recipe settings of the mix stage (`stages.mix`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longmix.core.recipe_io import Strict


class LongSelectConfig(Strict):
    by: Literal["longdep_score", "longdep_share"] = Field("longdep_score", description="a longdep stage column")
    top: float = Field(..., gt=0.0, le=1.0, description="share of the source's long documents that may be used")


class SourceMixConfig(Strict):
    share: float | None = Field(None, ge=0.0, le=1.0, description="fraction of total_tokens")
    bucket_weights: dict[str, float] | None = Field(None, description="upsampling factor per bucket label or index")
    long_share: float | None = Field(None, ge=0.0, le=1.0, description="fraction of tokens from long documents")
    remove_buckets: list[str | int] = Field(default_factory=list)
    max_epochs: int | None = Field(None, ge=1)
    long_select: LongSelectConfig | None = Field(None, description="use only the top long documents by a score")


class MixConfig(Strict):
    enabled: bool = True
    total_tokens: int | None = Field(None, gt=0, description="token budget; none: every token once")
    edges: list[int] | None = Field(None, description="bucket edges in tokens; default seq_len/8, /2, x1")
    long_min_tokens: int | None = Field(None, gt=0, description="where 'long' starts; one of the edges")
    max_epochs: int = Field(4, ge=1, description="repetition cap per document")
    on_shortfall: Literal["warn", "error"] = "warn"
    sources: dict[str, SourceMixConfig] = Field(default_factory=dict, description="per-source settings by name")
