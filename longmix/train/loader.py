"""Deterministic distributed loader over memory-mapped packed shards, with curriculum phases.

The whole order is a pure function of (seed, phase, epoch): a phase's training rows are permuted
once per epoch, and optimizer step ``s`` of a phase takes global positions [s·B, (s+1)·B) of that
endless sequence of epochs, B being the sequences per step. Each sequence is therefore consumed
exactly once per epoch, and the position depends only on the step, so the loader's state is the
step counter: a resumed run, on any world size, reads exactly the rows an uninterrupted run would.
Rank r takes, in micro-batch m, the B-slice positions (m·world + r)·micro + [0, micro).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from longmix.core.errors import UserError
from longmix.formats.manifest import Manifest, load_manifest, verify_manifest
from longmix.formats.packed_rows import PackedRows
from longmix.formats.packed_shards import read_rows
from longmix.train import breakdown, masking
from longmix.train.recipe import TrainRecipe


class PhaseData:
    """One manifest's shards, memory-mapped; rows addressed by a global index over all shards."""

    def __init__(self, manifest_path: Path, verify: bool) -> None:
        self.path = manifest_path
        self.manifest: Manifest = verify_manifest(manifest_path) if verify else load_manifest(manifest_path)
        self.seq_len = self.manifest.seq_len
        base = manifest_path.parent
        self.shards: list[PackedRows] = [read_rows(base / s.path, self.seq_len) for s in self.manifest.shards]
        counts = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        return shard, idx - self.starts[shard]

    def meta(self, idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """doc_lens and pad of the rows at ``idx`` (metadata only: the token pages are not touched)."""
        shard, local = self._locate(idx)
        lens, pads = [], np.empty(len(idx), dtype=np.int64)
        for j, (s, r) in enumerate(zip(shard.tolist(), local.tolist(), strict=True)):
            rows = self.shards[s]
            lens.append(rows.seg_lens[rows.seg_offsets[r] : rows.seg_offsets[r + 1]])
            pads[j] = rows.pad[r]
        return lens, pads

    def sources(self, idx: np.ndarray) -> list[np.ndarray]:
        """doc_sources of the rows at ``idx``: the source index of each segment (-1 for padding)."""
        shard, local = self._locate(idx)
        return [self.shards[s].seg_sources[self.shards[s].seg_offsets[r] : self.shards[s].seg_offsets[r + 1]]
                for s, r in zip(shard.tolist(), local.tolist(), strict=True)]

    def loss_masks(self, idx: np.ndarray) -> np.ndarray | None:
        """loss_mask of the rows at ``idx`` (n, seq_len) uint8 for an SFT manifest, None for pretraining rows."""
        if self.manifest.sft is None:
            return None
        shard, local = self._locate(idx)
        out = np.empty((len(idx), self.seq_len), dtype=np.uint8)
        for j, (s, r) in enumerate(zip(shard.tolist(), local.tolist(), strict=True)):
            out[j] = self.shards[s].loss_mask[r]
        return out

    def tokens(self, idx: np.ndarray) -> np.ndarray:
        """input_ids of the rows at ``idx`` (n, seq_len) uint32, copied out of the memory map."""
        shard, local = self._locate(idx)
        out = np.empty((len(idx), self.seq_len), dtype=np.uint32)
        for j, (s, r) in enumerate(zip(shard.tolist(), local.tolist(), strict=True)):
            out[j] = self.shards[s].input_ids[r]
        return out


@dataclass(frozen=True)
class PhasePlan:
    """How one phase is cut into optimizer steps for a given world size."""

    manifest: str
    seq_len: int
    rows: int  # training rows (holdout excluded)
    steps: int
    seqs_per_step: int  # global, independent of world size
    micro_seqs: int  # per rank per forward
    grad_accum: int  # depends on world size

    def signature(self) -> dict:
        """What a resumed run must agree on (world size and grad_accum may change)."""
        d = asdict(self)
        d.pop("grad_accum")
        return d


@dataclass
class MicroBatch:
    rows: np.ndarray  # global row indices in the phase's manifest
    input_ids: np.ndarray
    position_ids: np.ndarray
    targets: np.ndarray
    groups: np.ndarray  # per position: source x length bucket of its segment (train/breakdown.py), -1 if unpredicted
    weights: np.ndarray | None = None  # example weighting: per position 1 / (its example's counted targets)


@dataclass
class StepBatch:
    """This rank's micro-batches of one optimizer step, plus global counts over the whole step."""

    phase: int
    micro: list[MicroBatch]
    global_predicted: int  # targets over all ranks: the loss denominator under token weighting
    global_tokens: int  # non-padding tokens over all ranks
    global_attn_pairs: int  # Σ doc_len² over all ranks (for MFU)
    global_examples: int = 0  # examples with a counted target over all ranks: the denominator of example weighting

    @property
    def denominator(self) -> int:
        """What the step's summed (weighted) token losses are divided by: the global-batch mean."""
        return self.global_examples if self.micro and self.micro[0].weights is not None else self.global_predicted


def plan_phases(recipe: TrainRecipe, phases: list[PhaseData], world: int) -> list[PhasePlan]:
    """Steps and batch shape per phase; tokens per step are the same in every phase.

    ``world`` is the data-parallel degree: ranks of one sequence-parallel group share their sequences."""
    tps, mbt = recipe.batch.tokens_per_step, recipe.batch.micro_batch_tokens
    sp = recipe.parallel.sequence_parallel_size
    plans = []
    for cfg, data in zip(recipe.data.phases, phases, strict=True):
        L = data.seq_len
        if tps % L:
            raise UserError(f"batch.tokens_per_step={tps} is not a multiple of seq_len {L} of {cfg.manifest}")
        seqs = tps // L
        micro = max(1, mbt * sp // L)  # a rank holds L / sp tokens of each of its sequences
        if seqs % (micro * world):
            raise UserError(
                f"{seqs} sequences per step (seq_len {L}) do not split into {world} data-parallel ranks x {micro} per "
                "micro-batch; change batch.tokens_per_step or batch.micro_batch_tokens"
            )
        rows = len(data) - recipe.data.holdout_sequences
        if rows < 1:
            raise UserError(f"{cfg.manifest}: {len(data)} sequences, holdout_sequences leaves none to train on")
        steps = cfg.steps if cfg.steps is not None else cfg.tokens // tps
        if steps < 1:
            raise UserError(f"phase {cfg.manifest}: tokens={cfg.tokens} is less than one step of {tps} tokens")
        plans.append(PhasePlan(cfg.manifest, L, rows, steps, seqs, micro, seqs // (micro * world)))
    return plans


class Loader:
    def __init__(
        self, recipe: TrainRecipe, phases: list[PhaseData], plans: list[PhasePlan], rank: int, world: int
    ) -> None:
        self.phases, self.plans = phases, plans
        self.rank, self.world = rank, world
        self.seed = recipe.seed
        self.doc_masking = recipe.data.doc_masking
        self.by_example = recipe.data.loss_weighting == "example"
        self.holdout_n = recipe.data.holdout_sequences
        self.phase_start = np.concatenate([[0], np.cumsum([p.steps for p in plans])])
        self._split = [self._holdout_split(k) for k in range(len(phases))]
        self._epoch_cache: dict[tuple[int, int], np.ndarray] = {}

    @property
    def total_steps(self) -> int:
        return int(self.phase_start[-1])

    def phase_of(self, step: int) -> int:
        return int(np.searchsorted(self.phase_start, step, side="right") - 1)

    def _holdout_split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(holdout rows, training rows) of phase k: a fixed seeded split, the same every epoch."""
        perm = np.random.default_rng([self.seed, k, 0x484F]).permutation(len(self.phases[k]))
        return np.sort(perm[: self.holdout_n]), np.sort(perm[self.holdout_n :])

    def _epoch_order(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._epoch_cache:
            train = self._split[k][1]
            perm = np.random.default_rng([self.seed, k, epoch, 0x4550]).permutation(len(train))
            self._epoch_cache = {key: train[perm]}  # keep one epoch: a step spans at most two
        return self._epoch_cache[key]

    def global_rows(self, step: int) -> tuple[int, np.ndarray]:
        """(phase, global row indices of the whole step in consumption order)."""
        k = self.phase_of(step)
        plan = self.plans[k]
        s = step - int(self.phase_start[k])
        pos = np.arange(s * plan.seqs_per_step, (s + 1) * plan.seqs_per_step, dtype=np.int64)
        epochs, offsets = pos // plan.rows, pos % plan.rows
        rows = np.empty(len(pos), dtype=np.int64)
        for e in np.unique(epochs).tolist():
            sel = epochs == e
            rows[sel] = self._epoch_order(k, e)[offsets[sel]]
        return k, rows

    def rank_slices(self, step: int) -> list[np.ndarray]:
        """Positions within the step's global rows that this rank reads, one array per micro-batch."""
        plan = self.plans[self.phase_of(step)]
        base = np.arange(plan.micro_seqs)
        return [(m * self.world + self.rank) * plan.micro_seqs + base for m in range(plan.grad_accum)]

    def step(self, step: int) -> StepBatch:
        k, rows = self.global_rows(step)
        data, plan = self.phases[k], self.plans[k]
        lens, pads = data.meta(rows)
        masks = data.loss_masks(rows)  # every rank counts the whole step's targets: the global-batch mean
        L = plan.seq_len
        meta = list(zip(lens, pads.tolist(), [None] * len(rows) if masks is None else masks, strict=True))
        predicted = sum(masking.predicted_count(dl, p, L, self.doc_masking, m) for dl, p, m in meta)
        examples = sum(masking.example_count(dl, m, p, L, self.doc_masking) for dl, p, m in meta) \
            if self.by_example else 0
        pairs = sum(masking.attention_pairs(dl, p, L, self.doc_masking) for dl, p, _ in meta)
        micro = []
        for sl in self.rank_slices(step):
            ids = data.tokens(rows[sl])
            mb_lens = [lens[i] for i in sl]
            ids, pos, tgt = masking.build_arrays(ids, mb_lens, pads[sl], self.doc_masking,
                                                 None if masks is None else masks[sl])
            groups = breakdown.token_groups(mb_lens, data.sources(rows[sl]), tgt, L)
            weights = masking.example_weights(mb_lens, tgt) if self.by_example else None
            micro.append(MicroBatch(rows[sl], ids, pos, tgt, groups, weights))
        return StepBatch(k, micro, int(predicted), int(len(rows) * L - pads.sum()), int(pairs), int(examples))

    def holdout(self, k: int, per_forward: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This rank's share of phase k's holdout rows: (rows, input_ids, position_ids, targets).

        Padded with fully ignored copies of a holdout row so that every rank runs the same number of
        forwards of ``per_forward`` rows (ZeRO-3 gathers weights collectively: a rank cannot sit out).
        """
        rows, padded = self._holdout_rows(k, per_forward)
        data = self.phases[k]
        lens, pads = data.meta(padded)
        ids, pos, tgt = masking.build_arrays(data.tokens(padded), lens, pads, self.doc_masking,
                                             data.loss_masks(padded))
        tgt[len(rows) :] = masking.IGNORE
        return rows, ids, pos, tgt

    def _holdout_rows(self, k: int, per_forward: int) -> tuple[np.ndarray, np.ndarray]:
        every = self._split[k][0]
        n_fwd = -(-len(every) // (self.world * per_forward))
        rows = every[self.rank :: self.world]
        fill = n_fwd * per_forward - len(rows)
        return rows, np.concatenate([rows, np.repeat(every[:1], fill)]).astype(np.int64)

    def holdout_groups(self, k: int, per_forward: int, targets: np.ndarray) -> np.ndarray:
        """Per-position groups (source x length bucket) of ``holdout(k, per_forward)``'s rows."""
        _, padded = self._holdout_rows(k, per_forward)
        data = self.phases[k]
        lens, _ = data.meta(padded)
        return breakdown.token_groups(lens, data.sources(padded), targets, data.seq_len)

    def state(self, step: int) -> dict:
        """Loader state saved in a checkpoint: the next step plus the plan it must match on resume."""
        k = self.phase_of(step) if step < self.total_steps else len(self.plans) - 1
        return {
            "next_step": step,
            "phase": k,
            "step_in_phase": step - int(self.phase_start[k]),
            "seed": self.seed,
            "doc_masking": self.doc_masking,
            "holdout_sequences": self.holdout_n,
            "phases": [p.signature() for p in self.plans],
        }

    def check_resume(self, saved: dict) -> None:
        """Refuse to resume when the data plan changed: the order would silently differ."""
        now = self.state(saved["next_step"])
        for key in ("seed", "doc_masking", "holdout_sequences", "phases"):
            if saved.get(key) != now[key]:
                raise UserError(
                    f"checkpoint was written with a different data plan ({key}: {saved.get(key)} != {now[key]}); "
                    "restore the recipe's data/batch/seed or start a new output folder"
                )
