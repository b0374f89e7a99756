"""Recipe settings of the pack stage (`stages.pack`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longmix.core.recipe_io import Strict


class PackConfig(Strict):
    strategy: Literal["concat", "best_fit", "pad"] = "best_fit"
    rows_per_shard: int = Field(1024, gt=0)
    window: int = Field(8192, gt=0, description="best_fit: documents considered at once")
    batch_docs: int = Field(16384, gt=0, description="documents read per packing batch")
