"""The steps that build a run on each rank, in the order ``Trainer`` calls them (torchtitan's shape):

``build_data`` (phases, batch plans, loader) -> ``locate_resume`` (which checkpoint, converted when the world
size changed) -> the DeepSpeed config -> ``build_model`` (HF config, checks, creation) -> ``parallelize``
(train/parallelize.py) -> ``build_engine`` (DeepSpeed, optimizer, schedule) -> ``restore``.

Each step takes what the ones before it produced and nothing else, so its inputs say where it can move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import PretrainedConfig, PreTrainedModel

from longmix.core.errors import UserError
from longmix.train import checkpoint as ckpt
from longmix.train import sequence_parallel
from longmix.train.loader import Loader, PhaseData, PhasePlan, plan_phases
from longmix.train.model import check_tokenizer_agrees, create_model, load_config, match_tokenizer, param_groups
from longmix.train.recipe import TrainRecipe
from longmix.train.schedule import lr_factor
from longmix.train.sequence_parallel import ParallelDims
from longmix.train.tiled_loss import check_supported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Data:
    """The run's data on this rank: each phase's shards, its batch plan, and the loader over both."""

    phases: list[PhaseData]
    plans: list[PhasePlan]
    loader: Loader


def open_phases(recipe: TrainRecipe, rank: int) -> list[PhaseData]:
    """Rank 0 verifies every shard's sha256 (once, not once per rank); a failure stops all ranks."""
    err: list[str | None] = [None]
    phases: list[PhaseData] = []
    try:
        phases = [PhaseData(recipe.resolve_manifest(p.manifest), verify=recipe.data.verify and rank == 0)
                  for p in recipe.data.phases]
    except UserError as exc:
        err[0] = str(exc)
    dist.broadcast_object_list(err, src=0)
    if err[0] is not None:
        raise UserError(err[0])
    return phases


def build_data(recipe: TrainRecipe, dims: ParallelDims) -> Data:
    """Batches are planned over the data-parallel ranks: the ranks of one SP group read the same sequences."""
    phases = open_phases(recipe, dims.rank)
    plans = plan_phases(recipe, phases, dims.dp)
    return Data(phases, plans, Loader(recipe, phases, plans, dims.dp_rank, dims.dp))


def locate_resume(ckpt_root: Path, dims: ParallelDims, trust_pickles: bool) -> ckpt.Resume | None:
    """The checkpoint to resume from, if any: found before the DeepSpeed config is written (a checkpoint from
    another world size is loaded as a universal one, converted here first)."""
    resume = ckpt.find_resume(ckpt_root, dims.world)
    for line in resume.passed_over if resume and dims.rank == 0 else ():
        log.warning("%s: resuming from %s instead", line, resume.folder.name)
    if resume and resume.universal:
        ckpt.convert_to_universal(resume, dims.rank, trust_pickles)
    return resume


def build_model(recipe: TrainRecipe, data: Data, dims: ParallelDims,
                dtype: torch.dtype) -> tuple[PretrainedConfig, PreTrainedModel]:
    """The HF config (RoPE change, attention core), checked against every phase's tokenizer, the SP limits and
    the tiled loss, then the model itself (partitioned from the start under an active ``HfDeepSpeedConfig``)."""
    config = load_config(recipe.model, recipe)
    for ph in data.phases:
        t = ph.manifest.tokenizer
        check_tokenizer_agrees(recipe.model, recipe, t, str(ph.path))
        match_tokenizer(config, recipe.model, t.vocab_size, t.bos_id, t.eos_id, t.pad_id, str(ph.path))
    sequence_parallel.check(dims.sp, dims.world, config, [p.seq_len for p in data.plans],
                            config._attn_implementation)
    if recipe.model.tiled_loss:
        check_supported(config)
    return config, create_model(recipe.model, recipe, config, dtype)


def build_engine(model: PreTrainedModel, mpu: Any, ds_config: dict[str, Any], recipe: TrainRecipe,
                 total_steps: int, dims: ParallelDims) -> tuple[Any, torch.optim.lr_scheduler.LambdaLR]:
    """DeepSpeed's engine around the parallelized model: AdamW over one parameter group, the recipe's schedule
    over ``total_steps``, ZeRO as the DeepSpeed config says."""
    import deepspeed

    s = recipe.schedule

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: lr_factor(i, total_steps, s.warmup_steps, s.min_lr_ratio, s.kind))

    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, recipe.optim.weight_decay), config=ds_config,
        lr_scheduler=schedule, mpu=mpu)
    sequence_parallel.fix_engine(engine, dims)
    return engine, scheduler


def restore(engine: Any, loader: Loader, resume: ckpt.Resume, ckpt_root: Path, trust_pickles: bool) -> int:
    """Load the weights, optimizer and schedule of ``resume`` into the engine, after the loader agreed to
    continue from its state; returns the step to continue from."""
    loader.check_resume(resume.state["loader"])
    with ckpt.safe_loading(resume.folder, trust_pickles):
        path, _ = engine.load_checkpoint(str(ckpt_root), tag=resume.load_tag,
                                         load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {resume.folder}")
    return resume.step
