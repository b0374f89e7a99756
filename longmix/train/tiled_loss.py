"""Cross-entropy over the LM head in sequence tiles, so the [tokens, vocab] logits never exist at once.

Each tile (tokens × vocab logits, then the loss) runs under non-reentrant activation checkpointing:
the forward keeps only the tile's hidden states, and the backward recomputes that one tile's logits.
The price is one extra head matmul per token; the saving is the full logits tensor and its fp32 copy
and gradient, which at 32K tokens and Llama's 32K vocabulary is 4 GiB per copy in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from longmix.core.errors import UserError
from longmix.models.token_loss import LOGIT_POSTPROCESSING
from longmix.train.masking import IGNORE


def _tile_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")


def tiled_cross_entropy_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                            tile_tokens: int) -> torch.Tensor:
    """Σ token cross-entropy of ``head(hidden)`` against ``targets`` (IGNORE skipped), tile by tile.

    hidden [B, S, H], targets [B, S]."""
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = targets.reshape(-1)
    total = None
    grad = torch.is_grad_enabled()  # evaluation needs no recompute
    for s in range(0, flat_h.shape[0], tile_tokens):
        h, t = flat_h[s : s + tile_tokens], flat_t[s : s + tile_tokens]
        part = checkpoint(_tile_loss, head, h, t, use_reentrant=False) if grad else _tile_loss(head, h, t)
        total = part if total is None else total + part
    assert total is not None, "no tokens"
    return total


def check_supported(config: object) -> None:
    """Refuse a model whose logits go through more than the output embedding (its loss would be wrong)."""
    for field in LOGIT_POSTPROCESSING:
        value = getattr(config, field, None)
        if value not in (None, 0, 1, 1.0, False):
            raise UserError(f"model.tiled_loss: this model post-processes its logits ({field}={value}), which the "
                            "tiled head does not reproduce; set model.tiled_loss: false")


@torch.no_grad()
def token_losses(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Per-token cross-entropy (0 where ignored), detached, in chunks of tokens so the fp32 copy of the logits
    is never made whole: for the loss breakdowns (train/breakdown.py), never for the gradient."""
    flat, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return torch.cat([F.cross_entropy(flat[i : i + chunk].float(), t[i : i + chunk], ignore_index=IGNORE,
                                      reduction="none") for i in range(0, t.shape[0], chunk)])


@torch.no_grad()
def tiled_token_losses(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                       tile_tokens: int) -> torch.Tensor:
    """token_losses of ``head(hidden)`` tile by tile (one more head matmul per token, no gradient)."""
    flat_h, flat_t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    return torch.cat([token_losses(head(flat_h[s : s + tile_tokens]), flat_t[s : s + tile_tokens], tile_tokens)
                      for s in range(0, flat_h.shape[0], tile_tokens)])
