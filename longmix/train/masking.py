"""Document masking: position ids and next-token targets from a packed row's ``doc_lens``.

With masking on, positions restart at every segment (HF transformers then builds a block-diagonal
causal mask from the restarts, provided ``use_cache=False`` and no ``attention_mask`` is passed), the
last token of a document predicts nothing (its next token opens another document) and padding is
never predicted. With masking off, positions run 0..seq_len-1 and a document boundary is predicted
like any other token (plain concatenated training, the ablation baseline); padding is still skipped.
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


def predicted_count(doc_lens: np.ndarray, pad: int, seq_len: int, doc_masking: bool) -> int:
    """How many targets a row has, from metadata alone (what ``row_targets`` leaves un-ignored)."""
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


def build_arrays(
    input_ids: np.ndarray, doc_lens: Sequence[np.ndarray], pads: np.ndarray, doc_masking: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, position_ids, targets) as int64 arrays of shape (rows, seq_len)."""
    n, seq_len = input_ids.shape
    ids = input_ids.astype(np.int64)
    pos = np.empty((n, seq_len), dtype=np.int64)
    tgt = np.empty((n, seq_len), dtype=np.int64)
    for r in range(n):
        pos[r] = row_positions(doc_lens[r], seq_len, doc_masking)
        tgt[r] = row_targets(ids[r], doc_lens[r], int(pads[r]), doc_masking)
    return ids, pos, tgt
