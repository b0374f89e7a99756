"""Per-position token loss on whole held-out documents, aggregated by context length (the paper's Fig. 1).

Each document runs alone from its first token (never packed with others), so the loss of the token at
position c is the loss given exactly c tokens of its own context; plain causal attention is the right
mask. By default only documents at least ``max_len`` tokens long count, so every position averages over
the same documents: with shorter ones mixed in, late positions would only see the long documents and the
curve would mix context length with document kind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from longmix.eval.loading import sample_documents
from longmix.eval.powerlaw import fit_power_law
from longmix.models.loading import Loaded
from longmix.models.token_loss import token_losses

log = logging.getLogger(__name__)


def log_bins(n_positions: int, n_bins: int) -> np.ndarray:
    """Edges over positions 1..n_positions, log-spaced (the curve changes fastest early), no empty bin."""
    edges = np.unique(np.geomspace(1, n_positions + 1, n_bins + 1).astype(np.int64))
    edges[-1] = n_positions + 1
    return edges


def _batches(docs: list[tuple[str, np.ndarray]], batch_size: int, pad_id: int):
    """Right-padded batches; with causal attention, padding after a document cannot change its losses."""
    for i in range(0, len(docs), batch_size):
        chunk = [d[1] for d in docs[i:i + batch_size]]
        width = max(len(c) for c in chunk)
        ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for r, c in enumerate(chunk):
            ids[r, :len(c)] = c
            mask[r, :len(c)] = 1
        yield ids, (None if mask.all() else mask)


def context_loss(loaded: Loaded, data: list[Path], max_len: int, min_len: int | None = None,
                 max_docs: int | None = 64, seed: int = 0, batch_size: int = 4, n_bins: int = 24,
                 name: str = "model", progress: bool = True, fit_min: int = 16) -> dict[str, Any]:
    """Loss by context position of one checkpoint, binned, with the power-law fit of its binned curve."""
    from longmix.pipeline.progress import progress as progress_of

    min_len = max_len if min_len is None else min_len
    if not 2 <= min_len <= max_len:
        raise ValueError(f"need 2 <= min_len <= max_len, got {min_len}, {max_len}")
    docs = sample_documents(data, loaded.tokenizer, loaded.bos_id, min_len, max_len, max_docs, seed)
    n_pos = max(len(d[1]) for d in docs) - 1
    rows = []
    pad = loaded.eos_id if loaded.eos_id is not None else 0
    with progress_of(f"context loss {name}", len(docs), progress) as advance:
        for ids, mask in _batches(docs, batch_size, pad):
            nll = token_losses(loaded.model, ids, loaded.device, mask)
            rows.append(np.pad(nll, ((0, 0), (0, n_pos - nll.shape[1])), constant_values=np.nan))
            advance(len(ids))
    nll = np.concatenate(rows)  # (docs, positions); column k = the token at position k+1, k+1 tokens of context
    return summarize(nll, [d[0] for d in docs], n_bins, name, max_len, fit_min)


def summarize(nll: np.ndarray, doc_ids: list[str], n_bins: int, name: str, max_len: int,
              fit_min: int = 16) -> dict[str, Any]:
    """Per-position means, log bins with standard errors over documents (the independent unit), and the fit
    over the bins from context ``fit_min`` on: the first few positions of a held-out set are dominated by how
    its documents open (licence headers, imports), not by how much context the model can use."""
    per_pos = np.nanmean(nll, axis=0)
    edges = log_bins(nll.shape[1], n_bins)
    centers, means, ses, counts = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        doc_means = np.nanmean(nll[:, lo - 1:hi - 1], axis=1)  # positions lo..hi-1 are columns lo-1..hi-2
        doc_means = doc_means[np.isfinite(doc_means)]
        centers.append(float(np.sqrt(lo * (hi - 1))) if hi - 1 > lo else float(lo))
        means.append(float(doc_means.mean()))
        ses.append(float(doc_means.std(ddof=1) / np.sqrt(len(doc_means))) if len(doc_means) > 1 else None)
        counts.append(int(len(doc_means)))
    result: dict[str, Any] = {
        "name": name, "max_len": max_len, "n_docs": len(doc_ids), "doc_ids": doc_ids,
        "mean_loss": float(np.nanmean(nll)), "per_position_loss": per_pos.tolist(),
        "bins": {"edges": edges.tolist(), "context": centers, "loss": means, "se": ses, "docs": counts},
        "fit": None, "fit_min_context": fit_min,
    }
    use = np.asarray(centers) >= fit_min
    se_arr = np.asarray([np.nan if v is None else v for v in ses])[use]
    sigma = se_arr if np.all(np.isfinite(se_arr)) and len(se_arr) and se_arr.min() > 0 else None
    try:
        result["fit"] = fit_power_law(np.asarray(centers)[use], np.asarray(means)[use], sigma).to_dict()
    except (ValueError, RuntimeError) as exc:  # too few bins, or no convergence: report the curve anyway
        log.warning("%s: power-law fit failed: %s", name, exc)
        result["fit_error"] = str(exc)
    return result
