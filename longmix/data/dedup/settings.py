"""Recipe settings of the dedup stages (`stages.exact_dedup`, `stages.near_dedup`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from longmix.core.recipe_io import Strict


class ExactDedupConfig(Strict):
    enabled: bool = True


class NearDedupConfig(Strict):
    enabled: bool = True
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(5, ge=1, le=32)
    recall: float = Field(0.995, gt=0.0, lt=1.0,
                          description="chance that a pair at threshold + 0.05 becomes a candidate (sets bands x rows)")
    bands: int | None = Field(None, ge=1, description="override the recall-driven bands")
    rows: int | None = Field(None, ge=1, description="override the recall-driven rows per band")
    keep: Literal["longest", "source_priority"] = "longest"
    batch_docs: int = Field(2048, gt=0, description="documents hashed per vectorized batch")
    task_bytes: int = Field(64 << 20, gt=0, description="text per signature task: larger shards are split")

    @model_validator(mode="after")
    def _bands_rows_together(self) -> NearDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows={self.bands * self.rows} exceeds num_perm={self.num_perm}")
        return self
