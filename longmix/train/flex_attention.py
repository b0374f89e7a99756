"""Document-masked attention with FlexAttention: the fast core on GPUs without flash-attn.

One ``BlockMask`` (documents x causality) is built per forward from the full row's position ids, which
restart at every document, and every layer reuses it: no per-layer host sync (the per-document SDPA loop
syncs once per layer to find its documents) and nothing of size seq_len² in memory, since FlexAttention
skips the blocks the mask rules out. The trainer builds the mask once per micro-batch and installs it
with ``use_block_mask``; under Ulysses the core attention sees the all-gathered sequence, the same shape
the mask was built for. Called without an installed mask (outside the trainer) it builds one from the
``position_ids`` it is given.

On CUDA the kernel is ``torch.compile``d (FlexAttention's eager path is a slow reference). On CPU only the
forward runs (FlexAttention has no CPU backward); it is tested there against ``doc_sdpa``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch

FLEX = "longmix_flex"  # name in transformers' attention registry
_installed: list[Any] = []  # the BlockMask of the forward in progress (a stack: evaluation may nest)


def available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, S] int32: the index of each token's document within its row (a new one where pos[t] != pos[t-1] + 1,
    the same rule as ``attention.segment_bounds``)."""
    pos = position_ids.reshape(position_ids.shape[0], -1)
    starts = torch.ones_like(pos, dtype=torch.int32)
    starts[:, 1:] = (pos[:, 1:] != pos[:, :-1] + 1).to(torch.int32)
    return torch.cumsum(starts, dim=1, dtype=torch.int32) - 1


def doc_block_mask(position_ids: torch.Tensor, block_size: int = 128) -> Any:
    """The BlockMask of causal attention within documents for a batch of packed rows."""
    from torch.nn.attention.flex_attention import create_block_mask

    docs = document_ids(position_ids)
    bsz, seq = docs.shape

    def mask_mod(b, h, q_idx, kv_idx):
        return (docs[b, q_idx] == docs[b, kv_idx]) & (q_idx >= kv_idx)

    return create_block_mask(mask_mod, bsz, None, seq, seq, device=docs.device, BLOCK_SIZE=block_size)


@contextmanager
def use_block_mask(block_mask: Any) -> Iterator[None]:
    """Every flex attention call inside the block uses ``block_mask`` (built once for the whole forward)."""
    _installed.append(block_mask)
    try:
        yield
    finally:
        _installed.pop()


@lru_cache(maxsize=1)
def _kernel(cuda: bool) -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if cuda else flex_attention


def flex_doc_attention(
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

    ``attention_mask`` is ignored on purpose, as in ``doc_sdpa``: documents come from the positions."""
    bsz, _, seq, _ = query.shape
    if key.shape[2] != seq:
        raise ValueError(f"{FLEX} attends whole packed rows (training); it cannot decode against a cache "
                         f"({seq} queries, {key.shape[2]} keys): load the model with sdpa for generation")
    if dropout and module.training:
        raise ValueError(f"{FLEX} has no attention dropout; set the model's attention_dropout to 0")
    if _installed:
        block_mask = _installed[-1]
        if tuple(block_mask.shape[-2:]) != (seq, seq):
            raise ValueError(f"the installed block mask is for {tuple(block_mask.shape[-2:])} tokens, the attention "
                             f"call has {seq}")
    else:
        pos = position_ids if position_ids is not None else torch.arange(seq, device=query.device)[None]
        block_mask = doc_block_mask(pos.expand(bsz, -1) if pos.shape[0] == 1 and bsz > 1 else pos)
    out = _kernel(query.is_cuda)(query, key, value, block_mask=block_mask, scale=scaling,
                                 enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``longmix_flex`` a valid ``attn_implementation``; no mask function, so transformers builds none."""
    from transformers import AttentionInterface

    AttentionInterface.register(FLEX, flex_doc_attention)
