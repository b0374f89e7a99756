"""The `longmix sft-data` recipe: where the long documents come from, the generator model, and the knobs of the
self-instruct long-QA generation and its self-check."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict

Style = Literal["factual", "summary", "where"]


class SftDataSettings(Strict):
    input: list[Path] = Field(min_length=1)  # JSONL/Parquet files or folders of them, records with `text` (+ `id`)
    generator: Path  # an HF model folder with a chat template (the demo: SmolLM2-135M-Instruct)
    output: Path
    seed: int = 0
    text_field: str = "text"
    id_field: str | None = "id"
    # records named <document id><separator><section> are sections of one document, joined in input order
    section_separator: str | None = Field(default=None, min_length=1)
    min_tokens: int = Field(default=1000, ge=1)  # documents shorter than this (generator tokens) are dropped
    max_tokens: int = Field(default=1_000_000, ge=1)  # and longer than this
    target_tokens: int = Field(default=1500, ge=16)  # the long document is cut to this many tokens around the chunk
    chunk_tokens: int = Field(default=400, ge=8)  # the passage the generator sees and asks about
    styles: list[Style] = Field(default=["factual", "summary", "where"], min_length=1)
    questions_per_doc: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=64, ge=4)
    temperature: float = Field(default=0.0, ge=0.0)  # 0: greedy, the default (the 135M model rambles when sampled)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    batch_size: int = Field(default=8, ge=1)
    min_support: float = Field(default=0.5, ge=0.0, le=1.0)
    min_agreement: float = Field(default=0.2, ge=0.0, le=1.0)
    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    docs_per_shard: int = Field(default=16, ge=1)
    trust_remote_code: bool = False
    device: str = "auto"

    def check(self, window: int | None) -> None:
        """Ranges that pydantic's per-field bounds cannot see; ``window``: the generator's context length."""
        if self.min_tokens > self.max_tokens:
            raise UserError(f"sft-data: min_tokens ({self.min_tokens}) is above max_tokens ({self.max_tokens})")
        if self.chunk_tokens > self.target_tokens:
            raise UserError(f"sft-data: chunk_tokens ({self.chunk_tokens}) is above target_tokens "
                            f"({self.target_tokens}); the chunk is a part of the cut document")
        if len(set(self.styles)) != len(self.styles):
            raise UserError(f"sft-data: styles repeat: {self.styles}")
        # the generator sees the chunk plus an instruction (< 200 tokens) and writes max_new_tokens
        if window is not None and self.chunk_tokens + 200 + self.max_new_tokens > window:
            raise UserError(f"sft-data: chunk_tokens ({self.chunk_tokens}) + max_new_tokens ({self.max_new_tokens}) "
                            f"+ the instruction do not fit the generator's {window}-token window")
