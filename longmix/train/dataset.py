"""A longmix mix as torch datasets, for people who keep their own trainer (HF Trainer, torchtitan, a plain loop).

Each item is one packed row with what per-document training needs, built by the same code `longmix train` uses
(`train/masking.py`):
- ``input_ids`` [seq_len] int64;
- ``labels`` [seq_len] int64, Hugging Face's convention (the model shifts them): -100 where nothing is
  predicted: the first token of every document (with ``doc_masking``), and padding;
- ``position_ids`` [seq_len] int64, restarting at every document (what transformers turns into per-document
  attention when no attention_mask is passed and the cache is off);
- ``cu_seqlens`` [segments + 1] int32, the cumulative segment lengths (flash-attention's varlen form; the padding
  tail, if any, is its own last segment).

`PackedDataset` is map-style (any sampler); `PackedIterable` shards rows over ranks in a seeded order that a
``state_dict`` resumes at the exact row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longmix.train import masking
from longmix.train.loader import PhaseData


def hf_labels(targets: np.ndarray) -> np.ndarray:
    """Targets as longmix keeps them (targets[t] = the token t predicts) to HF labels (labels[t] = the token
    predicted at t, from t-1; the model shifts): the same pairs, one place to the right."""
    labels = np.full_like(targets, masking.IGNORE)
    labels[..., 1:] = targets[..., :-1]
    return labels


class PackedDataset(torch.utils.data.Dataset):
    """The rows of a manifest, by index. ``verify`` checks every shard's sha256 first (as `longmix train` does)."""

    def __init__(self, manifest: str | Path, doc_masking: bool = True, verify: bool = True) -> None:
        self.data = PhaseData(Path(manifest), verify=verify)
        self.doc_masking = doc_masking
        self.seq_len = self.data.seq_len
        self.sources = self.data.manifest.sources

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of a {len(self)}-row mix")
        idx = np.array([index % len(self)], dtype=np.int64)
        lens, pads = self.data.meta(idx)
        ids, pos, tgt = masking.build_arrays(self.data.tokens(idx), lens, pads, self.doc_masking,
                                             self.data.loss_masks(idx))
        cu = np.concatenate([[0], np.cumsum(lens[0])]).astype(np.int32)
        return {"input_ids": torch.from_numpy(ids[0]), "labels": torch.from_numpy(hf_labels(tgt[0])),
                "position_ids": torch.from_numpy(pos[0]), "cu_seqlens": torch.from_numpy(cu)}


class PackedIterable(torch.utils.data.IterableDataset):
    """The rows in a seeded order per epoch, rank ``rank`` of ``world`` taking every world-th row of it, so the
    ranks cover each row exactly once per epoch. ``state_dict()`` after n items, given to a new instance's
    ``load_state_dict``, continues at item n + 1 exactly."""

    def __init__(self, manifest: str | Path, rank: int = 0, world: int = 1, seed: int = 0, epochs: int | None = 1,
                 doc_masking: bool = True, verify: bool = True) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.rows = PackedDataset(manifest, doc_masking, verify)
        self.rank, self.world, self.seed, self.epochs = rank, world, seed, epochs
        self.epoch, self.position = 0, 0  # the next item: epoch and index in this rank's share of it

    def order(self, epoch: int) -> np.ndarray:
        """This rank's rows of an epoch: a seeded permutation of all rows, every world-th from ``rank``."""
        perm = np.random.default_rng([self.seed, epoch, 0x4C4D]).permutation(len(self.rows))
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.epochs is None or self.epoch < self.epochs:
            rows = self.order(self.epoch)
            while self.position < len(rows):
                row = int(rows[self.position])
                self.position += 1
                yield {**self.rows[row], "row": torch.tensor(row)}
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "rank": self.rank,
                "world": self.world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.seed, self.rank, self.world)
        if (state["seed"], state["rank"], state["world"]) != mine:
            raise ValueError(f"state of seed/rank/world {state['seed']}/{state['rank']}/{state['world']} does "
                             f"not fit this dataset's {'/'.join(map(str, mine))}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
