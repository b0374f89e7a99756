"""Selection of a source's long documents by a score (`long_select`): only the top share of its long
documents, ranked by a long-dependency score (the longdep stage), may enter the mix; the plan then fills
the source's long cells from them alone, with the usual target-vs-achieved accounting."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def select_long(src: np.ndarray, bkt: np.ndarray, lens: np.ndarray, long_bucket: int,
                selections: dict[int, tuple[str, float]], scores: dict[str, np.ndarray] | None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """(eligible mask, per-source record of what was selected and why). `selections` maps a source index to
    (score column, top share). Documents without a score (too short for the scorer) rank last; ties go to
    the earlier document, so the choice is the same on every run."""
    eligible = np.ones(len(src), dtype=bool)
    records: dict[str, Any] = {}
    for s, (by, top) in selections.items():
        if scores is None or by not in scores:
            raise ValueError(f"long_select by {by!r} needs the longdep stage's scores")
        idx = np.flatnonzero((src == s) & (bkt >= long_bucket))
        values = scores[by][idx]
        rank = np.lexsort((idx, -np.where(np.isnan(values), -np.inf, values)))
        k = math.ceil(top * len(idx))
        chosen, left = idx[rank[:k]], idx[rank[k:]]
        eligible[left] = False
        records[str(s)] = {
            "by": by, "top": top, "long_documents": int(len(idx)), "scored": int((~np.isnan(values)).sum()),
            "selected": int(k), "long_tokens": int(lens[idx].sum()), "selected_tokens": int(lens[chosen].sum()),
            "min_selected_score": _finite(scores[by][chosen].min()) if k else None,
            "max_unselected_score": _finite(np.nanmax(scores[by][left])) if len(left) and
            not np.isnan(scores[by][left]).all() else None,
        }
    return eligible, records


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
