"""Recipe settings of the filter stage (`stages.filter`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from longmix.core.recipe_io import Strict
from longmix.data.filters.heuristics import MAX_NGRAM


class HeuristicsConfig(Strict):
    """Each parameter is one named filter and its drop reason; null turns that filter off.

    Defaults are permissive: they drop near-empty, garbage and heavily repeated documents while
    keeping code, tables and lists (see docs/filters.md for stricter Gopher/C4-style values)."""
    min_chars: int | None = Field(50, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_words: int | None = Field(10, ge=0)
    max_words: int | None = Field(None, ge=1)
    min_mean_word_len: float | None = Field(2.0, ge=0)
    max_mean_word_len: float | None = Field(20.0, gt=0)
    max_symbol_ratio: float | None = Field(1.0, gt=0)
    max_bullet_line_frac: float | None = Field(0.9, ge=0, le=1)
    min_punct_line_frac: float | None = Field(None, ge=0, le=1)
    max_dup_line_frac: float | None = Field(0.5, ge=0, le=1)
    max_dup_line_char_frac: float | None = Field(0.5, ge=0, le=1)
    max_dup_ngram_frac: float | None = Field(0.5, ge=0, le=1)
    dup_ngram_n: int = Field(5, ge=1, le=MAX_NGRAM, description="n of max_dup_ngram_frac")


class QualityConfig(Strict):
    model: str | None = Field(None, description="fastText .bin (relative to the recipe); none: no quality column")
    label: str = Field("__label__hq", description="the label whose probability is the quality score")
    threshold: float | None = Field(None, ge=0, le=1, description="drop below this; none: score only")
    sources: list[str] | None = Field(None, description="score only these sources; none: all")

    @model_validator(mode="after")
    def _needs_model(self) -> QualityConfig:
        if self.threshold is not None and self.model is None:
            raise ValueError("threshold is set but no model: set quality.model too")
        return self


class LangIdConfig(Strict):
    model: str | None = Field(None, description="fastText language-ID .bin, e.g. lid.176.bin")
    allowed: list[str] | None = Field(None, description="keep these languages (labels without __label__)")
    min_score: float | None = Field(None, ge=0, le=1, description="drop when the top language scores below")
    sources: list[str] | None = Field(None, description="identify only these sources; none: all")

    @model_validator(mode="after")
    def _needs_model(self) -> LangIdConfig:
        if (self.allowed is not None or self.min_score is not None) and self.model is None:
            raise ValueError("allowed/min_score are set but no model: set langid.model too")
        return self


class FilterConfig(Strict):
    enabled: bool = Field(False, description="off unless the recipe turns it on: filtering changes the data")
    heuristics: HeuristicsConfig = HeuristicsConfig()
    per_source: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="source -> heuristic parameters that replace the defaults there")
    quality: QualityConfig = QualityConfig()
    langid: LangIdConfig = LangIdConfig()
    chunk_chars: int = Field(2000, ge=50, description="characters per scored chunk (models only)")
    max_chunks: int = Field(16, ge=1, description="chunks scored per document, spread evenly over it")
    batch_docs: int = Field(512, gt=0, description="documents measured per vectorized batch")
    samples_per_reason: int = Field(3, ge=0, description="--report-only: sample documents shown per reason")

    @model_validator(mode="after")
    def _valid_overrides(self) -> FilterConfig:
        for source in self.per_source:
            self.heuristics_for(source)  # raises on an unknown key or a bad value
        return self

    def heuristics_for(self, source: str) -> HeuristicsConfig:
        override = self.per_source.get(source, {})
        unknown = sorted(set(override) - set(HeuristicsConfig.model_fields))
        if unknown:
            raise ValueError(f"per_source.{source}: unknown heuristic {', '.join(unknown)}")
        try:
            return HeuristicsConfig.model_validate({**self.heuristics.model_dump(), **override})
        except ValidationError as err:
            e = err.errors()[0]
            raise ValueError(f"per_source.{source}.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
