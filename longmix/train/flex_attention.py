"""Document-masked attention with FlexAttention: the fast core on GPUs without flash-attn.

One ``BlockMask`` (documents x causality, and the layer's sliding window where it has one) is built per
forward and per distinct window from the full row's position ids, which restart at every document, and
every layer with that window reuses it: no per-layer host sync (the per-document SDPA loop syncs once per
layer to find its documents) and nothing of size seq_len² in memory, since FlexAttention skips the blocks
the mask rules out. Gemma 2's logit softcapping is a ``score_mod``. The trainer installs the row's
positions once per micro-batch with ``use_documents``; under Ulysses the core attention sees the
all-gathered sequence, the same shape the masks are built for. Called outside ``use_documents`` it builds
its mask from the ``position_ids`` it is given.

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
_installed: list[_Forward] = []  # the documents of the forward in progress (a stack: evaluation may nest)


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


def doc_block_mask(position_ids: torch.Tensor, block_size: int = 128, window: int | None = None) -> Any:
    """The BlockMask of causal attention within documents for a batch of packed rows; with ``window``, a
    query at t also sees only keys in (t - window, t] (transformers' sliding-window rule)."""
    from torch.nn.attention.flex_attention import create_block_mask

    docs = document_ids(position_ids)
    bsz, seq = docs.shape

    def mask_mod(b, h, q_idx, kv_idx):
        return (docs[b, q_idx] == docs[b, kv_idx]) & (q_idx >= kv_idx)

    def windowed(b, h, q_idx, kv_idx):
        return mask_mod(b, h, q_idx, kv_idx) & (q_idx - kv_idx < window)

    return create_block_mask(windowed if window else mask_mod, bsz, None, seq, seq, device=docs.device,
                             BLOCK_SIZE=block_size)


class _Forward:
    """The rows of one forward: their positions, and the block mask of each window, built on first use."""

    def __init__(self, position_ids: torch.Tensor) -> None:
        self.position_ids = position_ids
        self.masks: dict[int | None, Any] = {}

    def mask(self, window: int | None) -> Any:
        if window not in self.masks:
            self.masks[window] = doc_block_mask(self.position_ids, window=window)
        return self.masks[window]


@contextmanager
def use_documents(position_ids: torch.Tensor) -> Iterator[None]:
    """Every flex attention call inside the block masks by these rows' documents, with one block mask per
    window built once for the whole forward."""
    _installed.append(_Forward(position_ids))
    try:
        yield
    finally:
        _installed.pop()


@lru_cache(maxsize=8)  # one function per value: the compiled kernel is guarded on the score_mod object
def _softcap_mod(softcap: float) -> Any:
    def score_mod(score, b, h, q_idx, kv_idx):
        return softcap * torch.tanh(score / softcap)

    return score_mod


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
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface signature: q [B, Hq, S, D], k/v [B, Hkv, S, D] -> ([B, S, Hq, D], None).

    ``attention_mask`` is ignored on purpose, as in ``doc_sdpa``: documents come from the positions."""
    from longmix.train.attention import refuse_unknown

    refuse_unknown(kwargs, FLEX)
    bsz, _, seq, _ = query.shape
    if key.shape[2] != seq:
        raise ValueError(f"{FLEX} attends whole packed rows (training); it cannot decode against a cache "
                         f"({seq} queries, {key.shape[2]} keys): load the model with sdpa for generation")
    if dropout and module.training:
        raise ValueError(f"{FLEX} has no attention dropout; set the model's attention_dropout to 0")
    if _installed:
        block_mask = _installed[-1].mask(sliding_window)
        if tuple(block_mask.shape[-2:]) != (seq, seq):
            raise ValueError(f"the installed documents are {tuple(block_mask.shape[-2:])} tokens, the attention "
                             f"call has {seq}")
    else:
        pos = position_ids if position_ids is not None else torch.arange(seq, device=query.device)[None]
        block_mask = doc_block_mask(pos.expand(bsz, -1) if pos.shape[0] == 1 and bsz > 1 else pos,
                                    window=sliding_window)
    out = _kernel(query.is_cuda)(query, key, value, block_mask=block_mask, scale=scaling,
                                 score_mod=_softcap_mod(softcap) if softcap else None,
                                 enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``longmix_flex`` a valid ``attn_implementation``; no mask function, so transformers builds none."""
    from transformers import AttentionInterface

    AttentionInterface.register(FLEX, flex_doc_attention)
