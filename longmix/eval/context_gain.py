"""Context gain: how much each token's loss drops when the model sees its whole context instead of only the
last W tokens (the long-context signal of LongPPL, Fang et al. 2024, and LongFilter-style data scoring).

For the token at position j (j tokens of context), the full-context loss comes from one forward over the
document; the short-context loss from sliding windows: windows of W + S tokens start every S tokens, and a
token is scored in the window that gives it between W and W + S - 1 tokens of context (``stride`` S = 1 is
exact truncation at W, at L forwards per document; the default S = W / 2 costs about 3 full forwards). A
token with j <= W has the same context either way, so its gain is 0 by definition. Gain = short - full, in
nats: positive where the distant context helps.

Key tokens (LongPPL): gain > ``key_gain`` (2 nats; LongPPL's LSD threshold) and full-context loss below
``key_loss`` (2 nats; its LCL threshold, log p > -2). The key-token loss, their mean full-context loss,
tracks long-task scores where plain perplexity does not (LongPPL). ``document_gain`` is the per-document
function the longdep data stage uses to score documents (longmix.models.token_loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from longmix.eval.context_loss import log_bins
from longmix.eval.loading import sample_documents
from longmix.models.loading import Loaded
from longmix.models.token_loss import document_gain
from longmix.pipeline.progress import progress


def context_gain(loaded: Loaded, data: list[Path], max_len: int, window: int = 128, stride: int | None = None,
                 max_docs: int | None = 16, seed: int = 0, n_bins: int = 16, key_gain: float = 2.0,
                 key_loss: float = 2.0, name: str = "model", batch_size: int = 8) -> dict[str, Any]:
    """Context gain of one checkpoint over held-out documents of ``max_len`` tokens, by position and over
    key tokens."""
    if window < 1 or window >= max_len:
        raise ValueError(f"window must be in [1, max_len), got {window} for max_len {max_len}")
    docs = sample_documents(data, loaded.tokenizer, loaded.bos_id, max_len, max_len, max_docs, seed)
    per = []
    with progress(f"context gain {name}", len(docs)) as advance:
        for _, ids in docs:
            per.append(document_gain(loaded.model, ids, window, stride, loaded.device, batch_size))
            advance()
    full = np.stack([p["full"] for p in per])
    gain = np.stack([p["gain"] for p in per])
    ctx = np.arange(1, full.shape[1] + 1)  # context size of each column
    beyond = ctx > window
    key = (gain > key_gain) & (full < key_loss) & beyond
    edges = log_bins(full.shape[1], n_bins)
    edges = edges[edges > window] if (edges > window).sum() >= 2 else edges
    bins = {"context": [], "gain": [], "gain_se": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        doc_means = gain[:, lo - 1:hi - 1].mean(axis=1)
        bins["context"].append(float(np.sqrt(lo * (hi - 1))) if hi - 1 > lo else float(lo))
        bins["gain"].append(float(doc_means.mean()))
        bins["gain_se"].append(float(doc_means.std(ddof=1) / np.sqrt(len(doc_means))) if len(doc_means) > 1 else None)
    return {
        "name": name, "window": window, "stride": stride or max(1, window // 2), "max_len": max_len,
        "n_docs": len(docs), "doc_ids": [d[0] for d in docs],
        "mean_gain": float(gain[:, beyond].mean()), "mean_full_loss": float(full[:, beyond].mean()),
        "mean_short_loss": float((full + gain)[:, beyond].mean()),
        "per_document_gain": [float(g[beyond].mean()) for g in gain],
        "key_token_share": float(key.sum() / beyond.sum() / len(docs)),
        "key_token_loss": float(full[key].mean()) if key.any() else None,
        "key_gain": key_gain, "key_loss": key_loss, "bins": bins,
    }
