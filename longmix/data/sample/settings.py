"""Recipe settings of the sample stage (`stages.sample`)."""

from __future__ import annotations

from pydantic import Field

from longmix.core.recipe_io import Strict


class SampleConfig(Strict):
    enabled: bool = Field(False, description="off unless the recipe turns it on: sampling drops documents")
    fraction: float = Field(0.1, gt=0.0, le=1.0, description="share of each source's documents kept")
    per_source: dict[str, float] = Field(default_factory=dict, description="fraction by source name")
