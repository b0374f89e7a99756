"""The `longmix sft-pack` recipe: chat sources with weights, the model whose chat template renders them, the loss
mode and the packing of SFT shards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from longmix.core.recipe_io import Strict, load_with_extends, parse_model, unique_names


class SftPacking(Strict):
    short: Literal["best_fit"] = "best_fit"
    long: Literal["pad", "best_fit"] = Field("pad", description="examples above long_threshold: alone in a padded "
                                                                "row (the paper's layout) or best-fit with the rest")
    long_threshold: int | None = Field(None, gt=0, description="tokens; None: every example that fits is short")


class SftSource(Strict):
    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1, description="JSONL files, folders of them or glob patterns")
    weight: float = Field(1.0, ge=0, description="expected uses of each example: the integer part repeats every "
                                                 "example, the fractional part adds one more use to a seeded draw "
                                                 "of that share of the examples (0.5: a seeded half, 2: twice)")


class SftRecipe(Strict):
    output: str
    model: str = Field(description="model folder: tokenizer.json + its chat template")
    seq_len: int = Field(gt=1)
    loss_mode: Literal["output", "input_and_output", "all"] = "output"
    packing: SftPacking = SftPacking()
    seed: int = 0
    rows_per_shard: int = Field(1024, gt=0)
    sources: list[SftSource] = Field(min_length=1)
    max_examples: int | None = Field(None, gt=0, description="keep at most this many examples (after weighting, "
                                                             "the first of the seeded order)")
    base_dir: str = Field("", exclude=True, description="the recipe's folder: relative paths start there")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SftSource]) -> list[SftSource]:
        return unique_names(sources)

    @model_validator(mode="after")
    def _threshold_fits(self) -> SftRecipe:
        t = self.packing.long_threshold
        if t is not None and t > self.seq_len:
            raise ValueError(f"packing.long_threshold ({t}) is above seq_len ({self.seq_len}); no example would be "
                             "long")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or not self.base_dir else Path(os.path.normpath(Path(self.base_dir) / p))


def load_sft_recipe(path: str | Path, output: str | Path | None = None) -> SftRecipe:
    """The recipe at ``path`` (with `extends`), ``output`` overriding its output folder."""
    data: dict[str, Any] = load_with_extends(path)
    if output is not None:
        data["output"] = str(output)
    data["base_dir"] = str(Path(path).resolve().parent)
    return parse_model(SftRecipe, data, str(path))
