"""The recipe as the filter stage and its preview see it: model paths made absolute, per-source heuristic
parameters, checks of sources and model files, and the models' fingerprints for the settings hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longmix.core.errors import UserError
from longmix.data.filters.fasttext_models import check_model
from longmix.data.filters.settings import FilterConfig
from longmix.data.recipe import Recipe


def resolved_config(recipe: Recipe) -> FilterConfig:
    """The recipe's filter settings with model paths made absolute (workers may run elsewhere)."""
    cfg = recipe.stages.filter
    q, lid = cfg.quality, cfg.langid
    return cfg.model_copy(update={
        "quality": q.model_copy(update={"model": str(recipe.resolve(q.model)) if q.model else None}),
        "langid": lid.model_copy(update={"model": str(recipe.resolve(lid.model)) if lid.model else None}),
    })


def check_recipe(recipe: Recipe) -> None:
    """Fail fast, before any stage runs: unknown source names, missing or non-fastText model files."""
    cfg = resolved_config(recipe)
    names = {s.name for s in recipe.sources}
    for where, listed in (("per_source", list(cfg.per_source)), ("quality.sources", cfg.quality.sources or []),
                          ("langid.sources", cfg.langid.sources or [])):
        unknown = sorted(set(listed) - names)
        if unknown:
            raise UserError(f"stages.filter.{where}: unknown source {', '.join(unknown)}; "
                            f"the recipe's sources are {', '.join(sorted(names))}")
    if cfg.quality.model:
        check_model(Path(cfg.quality.model), "quality")
    if cfg.langid.model:
        check_model(Path(cfg.langid.model), "language-ID")


def model_fingerprints(recipe: Recipe) -> list[dict[str, Any]]:
    """Identity of the model files (path, size, mtime) for the settings hash: a new model reruns the stage."""
    check_recipe(recipe)
    cfg = resolved_config(recipe)
    out = []
    for path in (cfg.quality.model, cfg.langid.model):
        if path:
            st = Path(path).stat()
            out.append({"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def source_params(recipe: Recipe) -> dict[str, dict[str, Any]]:
    cfg = recipe.stages.filter
    return {s.name: cfg.heuristics_for(s.name).model_dump() for s in recipe.sources}


def text_bytes(batch: pa.RecordBatch) -> np.ndarray:
    """UTF-8 bytes of each document's text."""
    return pc.binary_length(batch.column("text").cast(pa.large_binary())).to_numpy()
