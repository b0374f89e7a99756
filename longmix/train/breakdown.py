"""Loss by source, by length bucket and by position band: which part of the mix is learning, and whether the long
documents and the far positions improve (the question a long-context mix exists to answer; ms-swift calls the
per-source part "channel loss").

Every predicted token gets a group: its segment's source and the length bucket of its segment (the document's
piece in this row). Per-token losses are summed per group in float64 and reduced across micro-batches and ranks
with their token counts, so the groups recombine, token-weighted, to the step's loss. Position bands (the
token's position inside its document) are the in-training version of `longmix eval context-loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the loader imports this module for token_groups; the trainer brings torch
    import torch

FIRST_EDGE = 256  # bucket and band edges: 256, 1K, 4K, 16K, ... (x4), below the sequence length


def edges(seq_len: int) -> list[int]:
    out, e = [], FIRST_EDGE
    while e < seq_len:
        out.append(e)
        e *= 4
    return out


def _k(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def band_names(seq_len: int) -> list[str]:
    """Names of the length buckets (and position bands) for a sequence length: 0-256, 256-1K, ..., 16K-64K, each
    range [from, to) in tokens, the last one up to the sequence length (names every tracker accepts)."""
    bounds = [0, *edges(seq_len), seq_len]
    return [f"{_k(a)}-{_k(b)}" for a, b in zip(bounds, bounds[1:], strict=False)]


def token_groups(doc_lens: Sequence[np.ndarray], doc_sources: Sequence[np.ndarray], targets: np.ndarray,
                 seq_len: int) -> np.ndarray:
    """Group per position (rows, seq_len) int64: source * buckets + bucket of its segment's length; -1 where
    nothing is predicted (padding, document ends) or the segment is padding."""
    e = np.asarray(edges(seq_len), dtype=np.int64)
    nb = len(e) + 1
    out = np.empty(targets.shape, dtype=np.int64)
    for r, (lens, srcs) in enumerate(zip(doc_lens, doc_sources, strict=True)):
        lens = np.asarray(lens, dtype=np.int64)
        seg = np.asarray(srcs, dtype=np.int64) * nb + np.searchsorted(e, lens, side="right")
        seg[np.asarray(srcs) < 0] = -1
        out[r] = np.repeat(seg, lens)
    out[targets < 0] = -1
    return out


def position_bands(positions: np.ndarray, targets: np.ndarray, seq_len: int) -> np.ndarray:
    """Band per position from its position inside its document; -1 where nothing is predicted."""
    band = np.searchsorted(np.asarray(edges(seq_len), dtype=np.int64), positions, side="right").astype(np.int64)
    band[targets < 0] = -1
    return band


class GroupSums:
    """Σ token loss and token count per group, over micro-batches, then over ranks."""

    def __init__(self, n_groups: int) -> None:
        import torch

        self.loss = torch.zeros(n_groups, dtype=torch.float64)
        self.count = torch.zeros(n_groups, dtype=torch.float64)

    def add(self, token_losses: torch.Tensor, groups: torch.Tensor) -> None:
        import torch

        keep = groups.reshape(-1) >= 0
        g = groups.reshape(-1)[keep].cpu()
        self.loss += torch.bincount(g, weights=token_losses.reshape(-1)[keep].double().cpu(),
                                    minlength=len(self.loss))
        self.count += torch.bincount(g, minlength=len(self.count)).double()

    def all_reduce(self, device: torch.device) -> None:
        import torch
        import torch.distributed as dist

        both = torch.stack([self.loss, self.count]).to(device)  # NCCL wants device tensors
        dist.all_reduce(both)
        self.loss, self.count = both[0].cpu(), both[1].cpu()

    def by(self, names: list[str], fold: int, axis: int) -> tuple[dict[str, float], dict[str, int]]:
        """(mean loss, predicted tokens) per name, names without tokens left out. Groups are (outer x fold)
        laid out row-major; axis 0 sums over the inner index (per outer name), axis 1 over the outer one."""
        loss = self.loss.view(-1, fold).sum(dim=1 - axis)
        count = self.count.view(-1, fold).sum(dim=1 - axis)
        seen = [(i, n) for i, n in enumerate(names) if count[i] > 0]
        return {n: float(loss[i] / count[i]) for i, n in seen}, {n: int(count[i]) for i, n in seen}


def step_breakdown(sums: GroupSums, sources: list[str], seq_len: int) -> dict[str, dict[str, Any]]:
    buckets = band_names(seq_len)
    by_source, source_tokens = sums.by(sources, len(buckets), 0)
    by_bucket, bucket_tokens = sums.by(buckets, len(buckets), 1)
    return {"loss_by_source": by_source, "loss_by_bucket": by_bucket, "tokens_by_source": source_tokens,
            "tokens_by_bucket": bucket_tokens}
