"""Document masking: position ids and next-token targets from a packed row's ``doc_lens``.

With masking on, positions restart at every segment (HF transformers then builds a block-diagonal
causal mask from the restarts, provided ``use_cache=False`` and no ``attention_mask`` is passed), the
last token of a document predicts nothing (its next token opens another document) and padding is
never predicted. With masking off, positions run 0..seq_len-1 and a document boundary is predicted
like any other token (plain concatenated training, the ablation baseline); padding is still skipped.

SFT rows carry a loss mask (formats/packed_rows.py): target t counts only where ``loss_mask[t + 1]`` is set, so
the loss mode chosen when packing (assistant tokens only, or the long input too) decides what is learned. The
loss is a mean over the whole global batch: by token (every counted target weighs the same) or, as LongAlign
proposes for packed SFT, by example (each example's mean target loss weighs the same, however long it is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = -100  # torch cross_entropy's default ignore_index


def row_positions(doc_lens: np.ndarray, seq_len: int, doc_masking: bool) -> np.ndarray:
    """Position ids of one row (int64): restarting at each segment, or 0..seq_len-1 without masking."""
    pos = np.arange(seq_len, dtype=np.int64)
    if not doc_masking:
        return pos
    lens = np.asarray(doc_lens, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return pos - np.repeat(starts, lens)


def row_targets(input_ids: np.ndarray, doc_lens: np.ndarray, pad: int, doc_masking: bool) -> np.ndarray:
    """Targets aligned with the inputs: targets[t] is the token at t+1, or IGNORE where nothing is predicted."""
    seq_len = len(input_ids)
    targets = np.full(seq_len, IGNORE, dtype=np.int64)
    targets[:-1] = input_ids[1:]
    # Padding is never a target: positions t with t+1 inside the padding tail (and the last position).
    targets[max(seq_len - pad - 1, 0) :] = IGNORE
    if doc_masking:
        ends = np.cumsum(np.asarray(doc_lens, dtype=np.int64)) - 1
        targets[ends] = IGNORE  # the last token of each segment would predict the next document's first
    return targets


def apply_loss_mask(targets: np.ndarray, loss_mask: np.ndarray) -> np.ndarray:
    """Targets (any leading shape) with those whose predicted token is outside the loss mask ignored, in place."""
    targets[..., :-1][loss_mask[..., 1:] == 0] = IGNORE
    return targets


def predicted_count(doc_lens: np.ndarray, pad: int, seq_len: int, doc_masking: bool,
                    loss_mask: np.ndarray | None = None) -> int:
    """How many targets a row has (what ``row_targets`` and the loss mask leave un-ignored), from metadata alone
    for pretraining rows; an SFT row's mask is 0 on padding and segment starts, so its sum is the count."""
    if loss_mask is not None:
        return int(loss_mask.sum(dtype=np.int64))
    real = seq_len - pad
    if not doc_masking:
        return max(real - 1, 0)
    n_docs = len(doc_lens) - (1 if pad > 0 else 0)
    return real - n_docs


def attention_pairs(doc_lens: np.ndarray, pad: int, seq_len: int, doc_masking: bool) -> int:
    """Σ len² over the real documents (the attention work that models data); the whole row without masking."""
    if not doc_masking:
        return (seq_len - pad) ** 2
    lens = np.asarray(doc_lens, dtype=np.int64)
    if pad > 0:
        lens = lens[:-1]
    return int((lens * lens).sum())


def example_count(doc_lens: np.ndarray, loss_mask: np.ndarray | None, pad: int, seq_len: int,
                  doc_masking: bool) -> int:
    """Examples (segments) of a row with at least one counted target: the denominator of example weighting."""
    lens = np.asarray(doc_lens, dtype=np.int64)
    if loss_mask is None:
        lens = lens[:-1] if pad > 0 else lens
        return int(np.count_nonzero(lens > (1 if doc_masking else 0)))
    counted = np.add.reduceat(loss_mask.astype(np.int64), np.concatenate([[0], np.cumsum(lens)[:-1]]))
    return int(np.count_nonzero(counted))


def example_weights(doc_lens: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Per-position weights (rows, seq_len) float64: 1 / (counted targets of its example) where the target
    counts, else 0. A target belongs to the example of the position that predicts it."""
    weights = np.zeros(targets.shape, dtype=np.float64)
    for r, lens in enumerate(doc_lens):
        lens = np.asarray(lens, dtype=np.int64)
        seg = np.repeat(np.arange(len(lens)), lens)
        counted = targets[r] != IGNORE
        per_seg = np.bincount(seg[counted], minlength=len(lens))
        weights[r, counted] = 1.0 / per_seg[seg[counted]]
    return weights


def build_arrays(
    input_ids: np.ndarray, doc_lens: Sequence[np.ndarray], pads: np.ndarray, doc_masking: bool,
    loss_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, position_ids, targets) as int64 arrays of shape (rows, seq_len); ``loss_mask`` (rows,
    seq_len), an SFT shard's, leaves only the targets it counts."""
    n, seq_len = input_ids.shape
    ids = input_ids.astype(np.int64)
    pos = np.empty((n, seq_len), dtype=np.int64)
    tgt = np.empty((n, seq_len), dtype=np.int64)
    for r in range(n):
        pos[r] = row_positions(doc_lens[r], seq_len, doc_masking)
        tgt[r] = row_targets(ids[r], doc_lens[r], int(pads[r]), doc_masking)
    if loss_mask is not None:
        apply_loss_mask(tgt, loss_mask)
    return ids, pos, tgt
