"""One batch of documents through every configured filter: heuristics, then language ID, then quality.

The first filter a document trips is its drop reason. In a real run, language ID and quality are
computed only for documents the heuristics kept (the models are the expensive part); in report-only
mode every filter sees every document, so each one's would-be drops can be shown on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longmix.data.filters import fasttext_models as ft
from longmix.data.filters.heuristics import HEURISTICS, TextBatch, trips
from longmix.data.filters.settings import FilterConfig

MODEL_REASONS = ["lang", "lang_score", "quality"]


@dataclass
class Verdict:
    reason: np.ndarray  # object: the first filter tripped, None when kept
    value: np.ndarray  # float64: that filter's measured value (NaN when kept)
    quality: np.ndarray | None = None  # float32, NaN where not scored
    lang: list[str | None] | None = None
    lang_score: np.ndarray | None = None  # float32, NaN where not identified
    tripped: dict[str, np.ndarray] = field(default_factory=dict)  # filter -> bool per document

    def mark(self, name: str, hit: np.ndarray, value: np.ndarray) -> None:
        self.tripped[name] = hit
        new = hit & np.equal(self.reason, None)
        self.reason[new] = name
        self.value[new] = value[new]

    @property
    def kept(self) -> np.ndarray:
        return np.equal(self.reason, None)


@dataclass
class Models:
    quality: Any = None
    langid: Any = None

    @classmethod
    def load(cls, cfg: FilterConfig) -> Models:
        return cls(ft.load_model(cfg.quality.model, "quality") if cfg.quality.model else None,
                   ft.load_model(cfg.langid.model, "language-ID") if cfg.langid.model else None)


def evaluate(batch: pa.RecordBatch, cfg: FilterConfig, params: dict[str, dict[str, Any]], models: Models,
             score_all: bool = False) -> Verdict:
    """params: source -> its heuristic parameters (defaults merged with per_source overrides)."""
    n = batch.num_rows
    sources = np.asarray(batch.column("source").to_pylist(), dtype=object)
    v = Verdict(np.full(n, None, dtype=object), np.full(n, np.nan))
    docs = TextBatch(batch.column("text"))
    cache: dict[tuple[Any, int], np.ndarray] = {}
    ngram_n = np.array([params[s]["dup_ngram_n"] for s in sources], dtype=np.int64)
    for h in HEURISTICS:
        limit = np.array([np.nan if params[s][h.name] is None else float(params[s][h.name]) for s in sources])
        if np.isnan(limit).all():
            continue
        value = np.empty(n)
        for k in np.unique(ngram_n):  # only dup_ngram_frac depends on n; the others hit the cache
            key = (h.measure, int(k) if h.name == "max_dup_ngram_frac" else 0)
            if key not in cache:
                cache[key] = h.measure(docs, int(k))
            value[ngram_n == k] = cache[key][ngram_n == k]
        v.mark(h.name, trips(value, h.bound, limit), value)

    if models.langid is not None:
        todo = _todo(v, sources, cfg.langid.sources, score_all)
        langs, scores = ft.identify(models.langid, _texts(batch, todo), cfg.chunk_chars, cfg.max_chunks)
        v.lang = [None] * n
        for i, lang in zip(todo.tolist(), langs, strict=True):
            v.lang[i] = lang
        v.lang_score = np.full(n, np.nan, dtype=np.float32)
        v.lang_score[todo] = scores
        done = np.zeros(n, dtype=bool)
        done[todo] = True
        if cfg.langid.allowed is not None:
            allowed = set(cfg.langid.allowed)
            bad = np.array([lang not in allowed for lang in v.lang]) & done
            v.mark("lang", bad, v.lang_score.astype(np.float64))
        if cfg.langid.min_score is not None:
            with np.errstate(invalid="ignore"):
                low = (v.lang_score < cfg.langid.min_score) & done
            v.mark("lang_score", low, v.lang_score.astype(np.float64))

    if models.quality is not None:
        todo = _todo(v, sources, cfg.quality.sources, score_all)
        v.quality = np.full(n, np.nan, dtype=np.float32)
        v.quality[todo] = ft.score_label(models.quality, _texts(batch, todo), cfg.quality.label,
                                         cfg.chunk_chars, cfg.max_chunks)
        if cfg.quality.threshold is not None:
            with np.errstate(invalid="ignore"):
                low = v.quality < cfg.quality.threshold  # NaN (not scored) is never below
            v.mark("quality", low, v.quality.astype(np.float64))
    return v


def _todo(v: Verdict, sources: np.ndarray, only: list[str] | None, score_all: bool) -> np.ndarray:
    mask = np.ones(len(sources), dtype=bool) if score_all else v.kept.copy()
    if only is not None:
        mask &= np.isin(sources, only)
    return np.flatnonzero(mask)


def _texts(batch: pa.RecordBatch, rows: np.ndarray) -> list[str]:
    return pc.take(batch.column("text"), pa.array(rows, type=pa.int64())).to_pylist()


def _nullable_f32(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float32(), mask=np.isnan(values))


def with_columns(batch: pa.RecordBatch, v: Verdict) -> pa.RecordBatch:
    """The batch plus `quality` (always; null without a model) and `lang`, `lang_score` (with a model)."""
    cols = {name: batch.column(name) for name in batch.schema.names if name not in ("quality", "lang", "lang_score")}
    cols["quality"] = _nullable_f32(v.quality) if v.quality is not None else pa.nulls(batch.num_rows, pa.float32())
    if v.lang is not None and v.lang_score is not None:
        cols["lang"] = pa.array(v.lang, type=pa.string())
        cols["lang_score"] = _nullable_f32(v.lang_score)
    return pa.RecordBatch.from_pydict(cols)
