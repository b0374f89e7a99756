"""Recipe settings of the long-dependency stage (`stages.longdep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from longmix.core.recipe_io import Strict


class LongdepConfig(Strict):
    enabled: bool = False
    scorer: Path | None = Field(None, description="HF causal-LM folder that scores documents (e.g. SmolLM2-135M)")
    window: int = Field(256, ge=8, description="W: the short context, in scorer tokens")
    stride: int | None = Field(None, ge=1, description="short-context window step; default W/2")
    max_len: int = Field(2048, ge=16, description="full context per scored window, in scorer tokens")
    max_windows: int = Field(2, ge=1, description="windows scored per document over max_len, evenly spread")
    min_tokens: int = Field(1024, ge=2, description="documents with fewer scorer tokens are not scored")
    sources: list[str] | None = Field(None, description="score only these sources (default: all)")
    margin: float = Field(0.5, ge=0.0, description="nats: longdep_share counts tokens that gain more than this")
    batch_size: int = Field(8, ge=1, description="short-context windows per forward pass")
    device: str = Field("auto", description="auto (GPU when present), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> LongdepConfig:
        if self.enabled and self.scorer is None:
            raise ValueError("stages.longdep.enabled needs `scorer:` (an HF causal-LM folder)")
        if self.window >= self.max_len:
            raise ValueError(f"window ({self.window}) must be below max_len ({self.max_len})")
        if self.min_tokens <= self.window:
            raise ValueError(f"min_tokens ({self.min_tokens}) must exceed window ({self.window}): only tokens "
                             "past the window are scored")
        return self
