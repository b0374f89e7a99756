"""``parallelize(model, dims, recipe)``: the created model made ready for its engine, in one stated order.

The shape of torchtitan's ``parallelize``: each technique is applied here, once, in this order, so a new one
has one place to go and its position relative to the others is written down:

1. sequence parallelism (Ulysses, train/sequence_parallel.py): the SP and data-parallel process groups are
   created and the model's attention is routed through DeepSpeed's all-to-all wrapper; the groups come back
   as the ``mpu`` that ``build_engine`` hands to ``deepspeed.initialize``;
2. activation checkpointing, per decoder layer, optionally with the kept layer inputs in host memory;
3. compile: longmix does not ``torch.compile`` its models; a compile step belongs here, after checkpointing
   has wrapped the layers and before ZeRO wraps the model;
4. ZeRO-3 last: the weights are partitioned from creation on (``HfDeepSpeedConfig`` makes transformers build
   the model inside ``deepspeed.zero.Init``), and ``build_engine`` wraps the model in DeepSpeed's engine,
   which adds ZeRO-3's gather/release hooks and partitions the optimizer state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from longmix.train import sequence_parallel
from longmix.train.recipe import TrainRecipe
from longmix.train.sequence_parallel import ParallelDims


def parallelize(model: PreTrainedModel, dims: ParallelDims, recipe: TrainRecipe) -> Any:
    """Apply steps 1-3 above to ``model`` (in place); returns the mpu for ``build_engine`` (None without SP)."""
    mpu = sequence_parallel.setup(model, dims.sp) if dims.sp > 1 else None
    if recipe.model.activation_checkpointing:
        apply_activation_checkpointing(model, recipe.model.activation_offload)
    return mpu


def apply_activation_checkpointing(model: PreTrainedModel, offload: bool) -> None:
    """Non-reentrant checkpointing per layer (it works with ZeRO-3's parameter hooks and needs no input
    grads). With ``offload`` the layer inputs it keeps go to host memory through torch's ``save_on_cpu``
    (transformers' own offload flag pins memory, which fails on machines without an accelerator)."""
    if not offload:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return
    pin = torch.cuda.is_available()

    def offloaded(function, *args, **kwargs):
        with torch.autograd.graph.save_on_cpu(pin_memory=pin):
            return checkpoint(function, *args, use_reentrant=False, **kwargs)

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=offloaded)
