"""The long-dependency score of one document: how much its later tokens gain from distant context.

For a window of the document (all of it up to `max_len` scorer tokens; longer documents are scored on
`max_windows` windows of `max_len` evenly spread over them), every token past the first `window` (W)
positions gets two losses from the scorer: with the whole window before it, and with only its last W to
W + S - 1 tokens (models/token_loss.document_gain). The gain is short - full, in nats. A document's
`longdep_score` is the mean gain over all its scored tokens, `longdep_share` the share of them that gain
more than `margin`: text whose later part restates names, facts and code from far back scores high;
text whose parts are unrelated scores near zero, however long it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from longmix.models.token_loss import document_gain


@dataclass(frozen=True)
class DocScore:
    score: float  # NaN: not scored (shorter than min_tokens)
    share: float
    windows: int
    forward_tokens: int  # tokens the scorer ran over (full + short-context windows)
    scored_tokens: int  # tokens past W whose gain counts


def window_starts(n: int, max_len: int, max_windows: int) -> list[int]:
    """Starts of the scored windows of a document of n tokens: one if it fits, else evenly spread."""
    if n <= max_len:
        return [0]
    k = min(max_windows, -(-n // max_len))
    return sorted({int(round(x)) for x in np.linspace(0, n - max_len, k)})


def score_document(model: Any, ids: np.ndarray, *, window: int, stride: int, max_len: int, max_windows: int,
                   min_tokens: int, margin: float, device: str, batch_size: int) -> DocScore:
    if len(ids) < min_tokens:
        return DocScore(float("nan"), float("nan"), 0, 0, 0)
    gains, forward = [], 0
    starts = window_starts(len(ids), max_len, max_windows)
    for s in starts:
        w = ids[s: s + max_len]
        gains.append(document_gain(model, w, window, stride, device, batch_size)["gain"][window:])
        n_short = len(range(0, max(len(w) - window, 0), stride))
        forward += len(w) + n_short * min(window + stride, len(w))
    g = np.concatenate(gains)
    return DocScore(float(g.mean()), float((g > margin).mean()), len(starts), forward, int(len(g)))
