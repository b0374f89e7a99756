"""The training loop: one optimizer step reads like the paper (AdamW, warmup + cosine, token-mean loss).

Runs on every rank under a launcher (torchrun, deepspeed, srun...). The loss of a step is the mean over
the predicted tokens of the whole global batch: each micro-batch contributes its token-sum divided by
the global count (known up front from the shards' metadata), so long and short documents, padding and
ranks are weighted by tokens, never by sequence.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from longmix.train import checkpoint as ckpt
from longmix.train import flex_attention, sequence_parallel
from longmix.train.breakdown import GroupSums, band_names, position_bands, step_breakdown
from longmix.train.build import build_data, build_engine, build_model, locate_resume, restore
from longmix.train.dsconfig import build_ds_config
from longmix.train.faults import crash_point
from longmix.train.flops import matmul_params, peak_flops_per_device, step_flops
from longmix.train.guard import Diverged, DivergenceGuard, describe
from longmix.train.loader import StepBatch
from longmix.train.masking import IGNORE
from longmix.train.metrics import MetricsLog
from longmix.train.parallelize import parallelize
from longmix.train.recipe import TrainRecipe
from longmix.train.tiled_loss import tiled_cross_entropy_sum, tiled_token_losses, token_losses
from longmix.train.trackers import Trackers, git_revision

log = logging.getLogger(__name__)


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group the launcher set up: NCCL on GPU, gloo on CPU."""
    import deepspeed

    # DeepSpeed calls the deprecated torch.distributed collectives on every step.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    cuda = torch.cuda.is_available()
    if not cuda:  # every rank, whatever launched it: the op's own folder, and no wait on a dead build's lock
        from longmix.train.ops import ensure_cpu_op

        ensure_cpu_op()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


class Trainer:
    """A run on this rank, composed from the build steps of train/build.py in their stated order."""

    def __init__(self, recipe: TrainRecipe) -> None:
        from transformers.integrations import HfDeepSpeedConfig

        self.recipe = recipe
        self.rank, self.world, self.device = init_distributed()
        self.dims = sequence_parallel.parallel_dims(self.world, recipe.parallel.sequence_parallel_size, self.rank)
        self.out = recipe.output_dir
        self.ckpt_root = self.out / "checkpoints"
        data = build_data(recipe, self.dims)
        self.phases, self.plans, self.loader = data.phases, data.plans, data.loader
        self.total_steps = self.loader.total_steps
        self.bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and self.device.type == "cuda")
        self.resume = locate_resume(self.ckpt_root, self.dims, recipe.checkpoint.trust_pickles)
        ds_config = build_ds_config(recipe, self.plans[0], self.dims.dp, self.bf16,
                                    load_universal=bool(self.resume and self.resume.universal),
                                    cuda=self.device.type == "cuda")
        # Must exist (and stay referenced) before the model is created: it makes transformers build the
        # model inside deepspeed.zero.Init, partitioned from the start.
        self._hf_ds = HfDeepSpeedConfig(ds_config)
        self.hf_config, model = build_model(recipe, data, self.dims, torch.bfloat16 if self.bf16 else torch.float32)
        self.tile = recipe.model.loss_tile_tokens if recipe.model.tiled_loss else None
        self.flex = self.hf_config._attn_implementation == flex_attention.FLEX
        mpu = parallelize(model, self.dims, recipe)
        self.n_matmul = matmul_params(model)
        self.engine, self.scheduler = build_engine(model, mpu, ds_config, recipe, self.total_steps, self.dims)
        self.head = self.engine.module.get_output_embeddings()
        self._no_logits = torch.zeros(0, dtype=torch.long, device=self.device)
        self.step = restore(self.engine, self.loader, self.resume, self.ckpt_root,
                            recipe.checkpoint.trust_pickles) if self.resume else 0
        g = recipe.guard
        self.guard = DivergenceGuard(g.max_bad_steps, g.spike_factor, g.spike_window,
                                     first_bad_step=self.resume.state.get("first_bad_step") if self.resume else None)
        self.metrics = MetricsLog(self.out / "metrics.jsonl", self.rank == 0, self.step, self._trackers())
        self.peak, self.peak_source = peak_flops_per_device(recipe.logging.peak_tflops,
                                                            torch.bfloat16 if self.bf16 else torch.float32)

    def _trackers(self) -> Trackers | None:
        """The recipe's experiment trackers on rank 0, given the recipe, each manifest's lineage and the git
        revision as the run's config."""
        names = self.recipe.logging.report_to
        if self.rank != 0 or not names:
            return None
        config = {"recipe": self.recipe.model_dump(mode="json"), "git_revision": git_revision(), "world_size":
                  self.world, "manifests": [{"path": str(ph.path), "sources": ph.manifest.sources,
                                             "mix": (ph.manifest.mix or {}).get("sources"),
                                             "seed": ph.manifest.lineage.seed,
                                             "tokenizer_sha256": ph.manifest.tokenizer.sha256,
                                             "recipe_sha256": ph.manifest.lineage.recipe_sha256}
                                            for ph in self.phases]}
        self.out.mkdir(parents=True, exist_ok=True)
        return Trackers(names, self.out, config, self.step, self.recipe.logging, enabled=True)

    def _set_batch_shape(self, step: int) -> None:
        """Phases may change sequences per micro-batch and the accumulation count (tokens per step stay)."""
        plan = self.plans[self.loader.phase_of(step)]
        if self.engine.gradient_accumulation_steps() != plan.grad_accum or \
                self.engine.train_micro_batch_size_per_gpu() != plan.micro_seqs:
            self.engine.set_train_micro_batch_size(plan.micro_seqs)
            self.engine.set_train_batch_size(plan.micro_seqs * plan.grad_accum * self.dims.dp)

    def _tensors(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """This rank's slice of each row (all of it without sequence parallelism), on the device."""
        return [torch.from_numpy(np.ascontiguousarray(self.dims.shard(a))).to(self.device) for a in arrays]

    def _forward_sum(self, ids: torch.Tensor, pos: torch.Tensor, tgt: torch.Tensor,
                     full_pos: np.ndarray | None = None,
                     breakdowns: list[tuple[GroupSums, torch.Tensor]] = (),
                     weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of token losses. No attention_mask on purpose: documents are found from position_ids.
        ``full_pos`` (whole rows, before any sequence-parallel split) gives FlexAttention its documents, from
        which it builds one block mask per window for the whole forward. Each (sums, groups) of ``breakdowns``
        gets the per-token losses added by group (detached: the gradient only ever sees the sum). ``weights``
        (example weighting) makes it Σ weight x token loss; preflight refuses it with the tiled head."""
        if self.flex and full_pos is not None:
            with flex_attention.use_documents(torch.from_numpy(full_pos).to(self.device)):
                return self._forward_sum(ids, pos, tgt, None, breakdowns, weights)
        if self.tile is None:
            logits = self.engine(input_ids=ids, position_ids=pos, use_cache=False).logits
            if breakdowns:
                per_token = token_losses(logits, tgt)
                for sums, groups in breakdowns:
                    sums.add(per_token, groups)
            if weights is not None:
                per = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1),
                                      ignore_index=IGNORE, reduction="none")
                return (per.double() * weights.view(-1)).sum().float()
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1),
                                   ignore_index=IGNORE, reduction="sum")
        # The last hidden state is returned as an output (not captured on the side) so that DeepSpeed's
        # backward hooks, which it registers on the forward's outputs, fire when the loss reaches it.
        out = self.engine(input_ids=ids, position_ids=pos, use_cache=False, output_hidden_states=True,
                          logits_to_keep=self._no_logits)
        if breakdowns:
            per_token = tiled_token_losses(self.head, out.hidden_states[-1], tgt, self.tile)
            for sums, groups in breakdowns:
                sums.add(per_token, groups)
        return tiled_cross_entropy_sum(self.head, out.hidden_states[-1], tgt, self.tile)

    def _group_sums(self, phase: int) -> GroupSums | None:
        if not self.recipe.logging.loss_breakdown:
            return None
        return GroupSums(len(self.phases[phase].manifest.sources) * len(band_names(self.plans[phase].seq_len)))

    def train_step(self, batch: StepBatch) -> tuple[float, GroupSums | None]:
        """One optimizer step over this rank's micro-batches; returns the global mean token loss and the global
        loss sums per source x length bucket."""
        loss_sum = torch.zeros((), dtype=torch.float64)
        sums = self._group_sums(batch.phase)
        # ZeRO-3's reduce-scatter averages gradients over all ranks (sequence-parallel ones included, see
        # dsconfig): scaling by world makes the result Σ loss / N_global, N_global being the whole global batch's
        # counted tokens (or examples), whatever the ranks, micro-batches and sequence-parallel split.
        scale = self.world / batch.denominator
        for mb in batch.micro:
            ids, pos, tgt, groups = self._tensors(mb.input_ids, mb.position_ids, mb.targets, mb.groups)
            weights = self._tensors(mb.weights)[0] if mb.weights is not None else None
            s = self._forward_sum(ids, pos, tgt, mb.position_ids, [(sums, groups)] if sums else [], weights)
            self.engine.backward(s * scale, scale_wrt_gas=False)
            self.engine.step()
            loss_sum += s.detach().double().cpu()
        dist.all_reduce(loss_sum)
        if sums is not None:
            sums.all_reduce(self.device)
        return float(loss_sum) / batch.denominator, sums

    @torch.no_grad()
    def evaluate(self, phase: int) -> dict[str, Any] | None:
        if self.recipe.data.holdout_sequences == 0:
            return None
        mb, seq_len = self.plans[phase].micro_seqs, self.plans[phase].seq_len
        _, ids, pos, tgt = self.loader.holdout(phase, mb)
        sums = self._group_sums(phase)
        bands = GroupSums(len(band_names(seq_len))) if sums else None
        if sums:
            groups, band = self.loader.holdout_groups(phase, mb, tgt), position_bands(pos, tgt, seq_len)
        totals = torch.zeros(2, dtype=torch.float64)
        self.engine.eval()
        for i in range(0, len(ids), mb):
            t = self._tensors(ids[i : i + mb], pos[i : i + mb], tgt[i : i + mb])
            split = [(sums, *self._tensors(groups[i : i + mb])), (bands, *self._tensors(band[i : i + mb]))] \
                if sums else []
            totals[0] += self._forward_sum(*t, pos[i : i + mb], split).double().cpu()
            totals[1] += (t[2] != IGNORE).sum().item()
        self.engine.train()
        dist.all_reduce(totals)
        record = {"step": self.step, "phase": phase, "eval_loss": float(totals[0] / totals[1]),
                  "eval_tokens": int(totals[1])}
        if sums and bands:
            sums.all_reduce(self.device)
            bands.all_reduce(self.device)
            split_by = step_breakdown(sums, self.phases[phase].manifest.sources, seq_len)
            record.update({f"eval_{k}": v for k, v in split_by.items()})
            record["eval_loss_by_band"], record["eval_tokens_by_band"] = bands.by(band_names(seq_len), 1, 0)
        return record

    def save(self) -> None:
        state = {"step": self.step, "world_size": self.world, "sequence_parallel_size": self.dims.sp,
                 "loader": self.loader.state(self.step),
                 "tokenizer": self.phases[-1].manifest.tokenizer.path,
                 "tokenizer_sha256": self.phases[-1].manifest.tokenizer.sha256,
                 "special_tokens": {k: getattr(self.phases[-1].manifest.tokenizer, k)
                                    for k in ("bos_id", "eos_id", "pad_id")},
                 "tokenizer_dir": str(self.phases[-1].path.parent), "recipe": self.recipe.name,
                 "first_bad_step": self.guard.first_bad_step}
        ckpt.save(self.engine, self.ckpt_root, self.step, state, self.hf_config, self.recipe.checkpoint.keep_last,
                  self.guard.first_bad_step)

    def _weights_finite(self) -> bool:
        """Every rank checks its own partition of the weights (ZeRO-3's ds_tensor); any non-finite one anywhere
        and no rank saves."""
        bad = torch.zeros(1, device=self.device)
        for p in self.engine.module.parameters():
            if not torch.isfinite(getattr(p, "ds_tensor", p)).all():
                bad += 1
                break
        dist.all_reduce(bad)
        return not bool(bad.item())

    def _stop(self, why: str) -> None:
        """End the run in one line naming the step and the checkpoint to go back to; every rank gets here at the
        same step (the guard's inputs are global), rank 0 says it."""
        last = ckpt.last_before(self.ckpt_root, self.guard.first_bad_step or self.step + 1)
        back = (f"the last finite checkpoint is {last[1]} (step {last[0]}), kept out of rotation; lower optim.lr "
                "and rerun to resume from it" if last else "no checkpoint was taken before it; lower optim.lr and "
                "start over")
        message = f"training diverged: {why}; {back}"
        if self.rank == 0:
            self.metrics.write({"step": self.step, "stopped": message}, console=False)
            (self.out / "stopped.txt").write_text(message + "\n")
        raise Diverged(message)

    def run(self, stop_at_step: int | None = None) -> None:
        r = self.recipe
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.json").write_text(r.model_dump_json(indent=2) + "\n")
        start = self._started_at = self.step
        par = f" (sequence parallel {self.dims.sp} x data parallel {self.dims.dp})" if self.dims.sp > 1 else ""
        self.metrics.info(f"{r.name}: {self.world} ranks{par}, {self.total_steps} steps, "
                          f"{r.batch.tokens_per_step:,} tokens/step" + (f", resumed at step {start}" if start else ""))
        t0 = time.perf_counter()
        while self.step < self.total_steps and (stop_at_step is None or self.step < stop_at_step):
            t_step = time.perf_counter()
            self._set_batch_shape(self.step)
            batch = self.loader.step(self.step)
            lr = self.scheduler.get_last_lr()[0]
            loss, sums = self.train_step(batch)
            self.step += 1
            crash_point("after_step", self.step)
            dt = time.perf_counter() - t_step
            gnorm = self.engine.get_global_grad_norm()
            gnorm = float(gnorm) if gnorm is not None else None
            verdict = self.guard.observe(self.step, loss, gnorm)
            self._log(batch, loss, lr, gnorm, dt, time.perf_counter() - t0, sums, force=verdict.bad)
            crash_point("after_log", self.step)  # logged (trackers included), not yet checkpointed
            if verdict.spike:
                self.metrics.warn({"step": self.step, "warning": "loss_spike", "detail": verdict.spike})
            if verdict.bad:
                g = self.recipe.guard
                self.metrics.warn({"step": self.step, "warning": "non_finite", "detail": describe(loss, gnorm) +
                                   f" ({self.guard.bad_in_a_row} of guard.max_bad_steps={g.max_bad_steps} in a row)"})
                if verdict.stop:
                    first = self.step - self.guard.bad_in_a_row + 1
                    self._stop(f"{describe(loss, gnorm)} at step {self.step}, {self.guard.bad_in_a_row} non-finite "
                               f"steps in a row since step {first} (guard.max_bad_steps={g.max_bad_steps})")
            at_ckpt = self.step % r.checkpoint.every_steps == 0 or self.step in (self.total_steps, stop_at_step)
            eval_every = r.logging.eval_every_steps or r.checkpoint.every_steps
            if self.step % eval_every == 0 or self.step == self.total_steps:
                ev = self.evaluate(batch.phase)
                if ev:
                    self.metrics.write(ev)
            if at_ckpt and verdict.bad:
                self.metrics.info(f"step {self.step}: no checkpoint (its loss or gradient norm is not finite)")
            elif at_ckpt:
                if not self._weights_finite():
                    self._stop(f"the weights are no longer finite after step {self.step}")
                self.save()
                self.metrics.flush()  # what the trackers hold up to a checkpoint survives any kill after it
        dist.barrier()

    def _log(self, batch: StepBatch, loss: float, lr: float, gnorm: float | None, dt: float, elapsed: float,
             sums: GroupSums | None, force: bool = False) -> None:
        if self.step % self.recipe.logging.every_steps and self.step != self.total_steps and not force:
            return
        plan = self.plans[batch.phase]
        seq_tokens = plan.seqs_per_step * plan.seq_len
        flops = step_flops(self.n_matmul, self.hf_config, batch.global_tokens, batch.global_attn_pairs)
        self.metrics.write({
            "step": self.step, "total_steps": self.total_steps, "phase": batch.phase, "seq_len": plan.seq_len,
            "loss": loss, "lr": lr, "grad_norm": gnorm,
            "tokens": seq_tokens, "predicted_tokens": batch.global_predicted, "step_time_s": dt,
            "tokens_per_s": seq_tokens / dt, "tflops_per_device": flops / dt / self.world / 1e12,
            "mfu": flops / dt / self.world / self.peak, "elapsed_s": elapsed,
            # from the mean step time of this start (the first steps' compile and warm-up included)
            "eta_s": elapsed / (self.step - self._started_at) * (self.total_steps - self.step),
            **(step_breakdown(sums, self.phases[batch.phase].manifest.sources, plan.seq_len) if sums else {}),
        })


def train(recipe: TrainRecipe, stop_at_step: int | None = None) -> None:
    """Entry point on each rank (under a launcher)."""
    from longmix.train.launch import SELF_LAUNCHED

    trainer = Trainer(recipe)
    try:
        trainer.run(stop_at_step)
    except Diverged:
        # Under longmix's own launcher the ranks end quietly and the launcher prints rank 0's one line (from
        # <run>/stopped.txt) and exits 3; under torchrun, Slurm or DeepSpeed's launcher they exit 3 themselves.
        if os.environ.get(SELF_LAUNCHED) != "1":
            raise
    finally:
        trainer.metrics.close()


def end_rank() -> NoReturn:
    """End a rank whose run finished: its process group first (not after a failure, where another rank may be
    gone, so only here), then the process without the interpreter's teardown. Static C++ objects torn down
    there (gloo's, DeepSpeed's shared-memory op's) have aborted a finished rank with "terminate called without
    an active exception" (1 run in 4 on a loaded 2-core machine, 2026-12-07, even with the group destroyed
    first), turning a run that wrote everything into exit code 1. Every file is written and closed by now."""
    if dist.is_initialized():
        dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln]
