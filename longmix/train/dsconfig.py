"""The DeepSpeed config of a run: the recipe's JSON (ZeRO stage, offload, buckets) with the batch shape,
optimizer, clipping and precision filled in from the recipe, so the two never disagree."""

from __future__ import annotations

import json
from typing import Any

from longmix.core.errors import UserError
from longmix.core.recipe_io import deep_merge
from longmix.train import sequence_parallel
from longmix.train.loader import PhasePlan
from longmix.train.recipe import TrainRecipe


def fused_adam_available() -> bool:
    """DeepSpeed's FusedAdam is prebuilt, or nvcc is there to JIT-build it. Otherwise (CPU, or a GPU machine
    with a runtime-only CUDA) torch's own AdamW is used: a missing compiler must not stop training."""
    import shutil

    try:
        from deepspeed.git_version_info import installed_ops
    except ImportError:
        installed_ops = {}
    return bool(installed_ops.get("fused_adam")) or shutil.which("nvcc") is not None


def read_ds_json(recipe: TrainRecipe) -> dict[str, Any]:
    """The recipe's DeepSpeed JSON; a missing or broken file is a recipe error."""
    path = recipe.resolve(recipe.deepspeed)
    try:
        cfg = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"deepspeed: config {path} not found (see train/ds_zero3.json)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"deepspeed: config {path} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"deepspeed: config {path} is not a JSON object")
    return cfg


def build_ds_config(
    recipe: TrainRecipe, first: PhasePlan, dp_world: int, bf16: bool, load_universal: bool, cuda: bool
) -> dict[str, Any]:
    path = recipe.resolve(recipe.deepspeed)
    cfg = deep_merge(read_ds_json(recipe), recipe.deepspeed_overrides)
    o = recipe.optim
    cfg.update(
        train_micro_batch_size_per_gpu=first.micro_seqs,
        gradient_accumulation_steps=first.grad_accum,
        train_batch_size=first.micro_seqs * first.grad_accum * dp_world,
        # zero.Init reads it before the SP groups exist (to size the data-parallel world)
        sequence_parallel_size=recipe.parallel.sequence_parallel_size,
        gradient_clipping=o.grad_clip,
        optimizer={"type": "AdamW", "params": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps,
                                               "weight_decay": o.weight_decay,
                                               **({} if cuda and fused_adam_available() else
                                                  {"torch_adam": True})}},
        bf16={"enabled": bf16},
        checkpoint={**cfg.get("checkpoint", {}), "load_universal": load_universal},
    )
    sequence_parallel.adjust_ds_config(cfg, recipe.parallel.sequence_parallel_size, path)
    cfg.pop("fp16", None)  # fp16 loss scaling is not supported for continual pretraining: bf16 or fp32
    cfg.pop("scheduler", None)  # the schedule comes from the recipe
    cfg.setdefault("steps_per_print", 1 << 30)  # we log ourselves
    return cfg
