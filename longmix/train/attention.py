"""Per-document causal attention that needs no mask tensor: the core attention for packed rows.

Documents are found from the position ids (they restart at every document), and each document is
attended to on its own with ``scaled_dot_product_attention(is_causal=True)``. Nothing of size
seq_len² is ever built, unlike the boolean mask transformers makes for ``sdpa`` from restarting
positions, and the result does not depend on a mask reaching the attention call: DeepSpeed's Ulysses
wrapper drops masks, but hands over the all-gathered position ids, which is all this needs.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F

DOC_SDPA = "longmix_doc_sdpa"  # name in transformers' attention registry


def segment_bounds(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive positions in one row (a new run where pos[t] != pos[t-1] + 1)."""
    pos = position_ids.reshape(-1)
    n = int(pos.numel())
    breaks = torch.nonzero(pos[1:] != pos[:-1] + 1).reshape(-1).add_(1).tolist()
    edges = [0, *breaks, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def doc_causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface signature: q [B, Hq, S, D], k/v [B, Hkv, S, D] -> ([B, S, Hq, D], None).

    ``attention_mask`` is ignored on purpose: the documents come from ``position_ids`` (padding is its
    own segment, and its targets are never predicted)."""
    bsz, _, seq, _ = query.shape
    if key.shape[2] != seq:
        raise ValueError(f"{DOC_SDPA} attends whole packed rows (training); it cannot decode against a cache "
                         f"({seq} queries, {key.shape[2]} keys): load the model with sdpa for generation")
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    rows = []
    for b in range(bsz):
        if position_ids is None:
            bounds = [(0, seq)]
        else:  # [B, S], or [1, S] shared by every row
            bounds = segment_bounds(position_ids[b if position_ids.shape[0] > 1 else 0])
        parts = [
            F.scaled_dot_product_attention(query[b : b + 1, :, s:e], key[b : b + 1, :, s:e],
                                           value[b : b + 1, :, s:e], dropout_p=p, is_causal=True, scale=scaling,
                                           enable_gqa=gqa)
            for s, e in bounds
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if bsz == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``longmix_doc_sdpa`` a valid ``attn_implementation``. It has no mask function on purpose:
    transformers then builds no mask at all for it."""
    from transformers import AttentionInterface

    AttentionInterface.register(DOC_SDPA, doc_causal_attention)


def resolve(requested: str) -> str:
    """The transformers attention implementation for a recipe's choice.

    auto: on GPU flash_attention_2 when flash-attn is installed (its varlen kernel splits packed rows at
    position restarts), else FlexAttention with a per-batch document block mask; on CPU per-document SDPA
    (neither FlashAttention nor FlexAttention has a CPU backward)."""
    from longmix.train import flex_attention

    if requested == "auto":
        if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        requested = "flex" if torch.cuda.is_available() and flex_attention.available() else "doc_sdpa"
    if requested == "flex":
        flex_attention.register()
        return flex_attention.FLEX
    if requested == "doc_sdpa":
        register()
        return DOC_SDPA
    return requested
