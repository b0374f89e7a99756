"""Per-document causal attention that needs no mask tensor: the core attention for packed rows.

Documents are found from the position ids (they restart at every document), and each document is
attended to on its own. Nothing of size seq_len² is ever built, unlike the boolean mask transformers
makes for ``sdpa`` from restarting positions, and the result does not depend on a mask reaching the
attention call: DeepSpeed's Ulysses wrapper drops masks, but hands over the all-gathered position ids,
which is all this needs.

The core honours the model's own definition layer by layer, as transformers' eager attention does: a
layer's ``sliding_window`` (Mistral, Qwen2's windowed layers, Gemma 2/3's local layers: a query sees
itself and the ``window - 1`` tokens before it) and ``softcap`` (Gemma 2's ``attn_logit_softcapping``:
scores become ``softcap * tanh(scores / softcap)`` before the softmax) arrive as keyword arguments of the
call and are applied per document. Anything else the call asks for that this core cannot do is refused.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F

# Name in transformers' attention registry. It must not contain "sdpa", "flash" or "flex_attention":
# transformers routes such names through its own support checks (Gemma 2 refuses SDPA for softcapping).
DOC_SDPA = "longmix_doc_attention"
QUERY_BLOCK = 1024  # queries per block where a window or softcapping needs an explicit mask (bounded memory)
# Attention arguments some transformers models pass that change what is computed and that no longmix core
# implements: attention sinks (gpt-oss), relative position biases, sparse index sets.
_UNSUPPORTED_KWARGS = ("s_aux", "sinks", "position_bias", "indices", "block_indices")


def segment_bounds(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive positions in one row (a new run where pos[t] != pos[t-1] + 1)."""
    pos = position_ids.reshape(-1)
    n = int(pos.numel())
    breaks = torch.nonzero(pos[1:] != pos[:-1] + 1).reshape(-1).add_(1).tolist()
    edges = [0, *breaks, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def refuse_unknown(kwargs: dict[str, Any], core: str) -> None:
    """A call that asks for something this core does not implement (attention sinks, chunked attention...)
    fails instead of silently computing another model's attention."""
    extra = [k for k in _UNSUPPORTED_KWARGS if kwargs.get(k) is not None]
    if kwargs.get("is_causal") is False:
        extra.append("is_causal=False")
    if extra:
        raise ValueError(f"{core} does not implement the attention arguments {', '.join(extra)} this model passes; "
                         "train it with attn_implementation eager or sdpa")


def _softcapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
                softcap: float, dropout: float) -> torch.Tensor:
    """Eager attention with logit softcapping (SDPA cannot softcap): q [1, H, m, D], k/v [1, H, n, D]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout:
        probs = F.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, v)


def document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None, dropout: float,
                       window: int | None, softcap: float | None) -> torch.Tensor:
    """Causal attention over one document: q [1, Hq, n, D], k/v [1, Hkv, n, D] -> [1, Hq, n, D].

    A query at t sees keys in (t - window, t] when ``window`` is set (transformers' sliding-window rule),
    all of [0, t] otherwise. Without softcapping and with the document inside the window this is one
    causal SDPA call; otherwise queries go in blocks, each against the keys it can see, with a boolean
    mask of block x visible keys (never document²)."""
    n = q.shape[2]
    gqa = k.shape[1] != q.shape[1]
    if softcap is None and (window is None or n <= window):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale,
                                              enable_gqa=gqa)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if softcap is not None and gqa:  # the explicit path repeats shared KV heads as transformers' repeat_kv does
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        gqa = False
    block = min(window, QUERY_BLOCK) if window else QUERY_BLOCK
    parts = []
    for qs in range(0, n, block):
        qe = min(qs + block, n)
        lo = max(0, qs - window + 1) if window else 0
        qpos = torch.arange(qs, qe, device=q.device)[:, None]
        kpos = torch.arange(lo, qe, device=q.device)[None, :]
        mask = kpos <= qpos
        if window:
            mask &= kpos > qpos - window
        qb, kb, vb = q[:, :, qs:qe], k[:, :, lo:qe], v[:, :, lo:qe]
        if softcap is None:
            parts.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, scale=scale,
                                                        enable_gqa=gqa))
        else:
            parts.append(_softcapped(qb, kb, vb, mask, scale, softcap, dropout))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def doc_causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface signature: q [B, Hq, S, D], k/v [B, Hkv, S, D] -> ([B, S, Hq, D], None).

    ``attention_mask`` is ignored on purpose: the documents come from ``position_ids`` (padding is its
    own segment, and its targets are never predicted)."""
    refuse_unknown(kwargs, DOC_SDPA)
    bsz, _, seq, _ = query.shape
    if key.shape[2] != seq:
        raise ValueError(f"{DOC_SDPA} attends whole packed rows (training); it cannot decode against a cache "
                         f"({seq} queries, {key.shape[2]} keys): load the model with sdpa for generation")
    p = dropout if module.training else 0.0
    rows = []
    for b in range(bsz):
        if position_ids is None:
            bounds = [(0, seq)]
        else:  # [B, S], or [1, S] shared by every row
            bounds = segment_bounds(position_ids[b if position_ids.shape[0] > 1 else 0])
        parts = [
            document_attention(query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                               scale=scaling, dropout=p, window=sliding_window, softcap=softcap)
            for s, e in bounds
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if bsz == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``longmix_doc_attention`` a valid ``attn_implementation``. It has no mask function on purpose:
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
