"""torchrun worker: one optimizer step's loss and full gradients under several loss/offload variants.

Usage: python -m torch.distributed.run --nproc_per_node 2 grad_probe.py RECIPE.yaml OUT.pt

The learning rate is set to 0 so the weights stay put and every variant sees the same model and the
same first batch. Rank 0 writes {variant: {"loss": float, "grads": {name: tensor}}}.
"""

from __future__ import annotations

import sys

import torch
from deepspeed.utils import safe_get_full_grad

from longmix.train.parallelize import apply_activation_checkpointing
from longmix.train.recipe import load_train_recipe
from longmix.train.trainer import Trainer

VARIANTS = {  # name: (loss tile tokens or None, activation checkpointing, offload)
    "plain": (None, False, False),
    "tiled": (40, False, False),
    "checkpoint_offload_tiled": (40, True, True),
}


def probe(trainer: Trainer) -> tuple[float, dict[str, torch.Tensor]]:
    engine = trainer.engine
    batch = trainer.loader.step(0)
    scale = trainer.world / batch.global_predicted
    loss_sum = torch.zeros((), dtype=torch.float64)
    grads: dict[str, torch.Tensor] = {}
    for i, mb in enumerate(batch.micro):
        s = trainer._forward_sum(*trainer._tensors(mb.input_ids, mb.position_ids, mb.targets))
        engine.backward(s * scale, scale_wrt_gas=False)
        loss_sum += s.detach().double()
        if i == len(batch.micro) - 1:  # reduced at the accumulation boundary, read before step()
            grads = {n: safe_get_full_grad(p).detach().clone() for n, p in engine.module.named_parameters()}
        engine.step()
    torch.distributed.all_reduce(loss_sum)
    return float(loss_sum) / batch.global_predicted, grads


def main(recipe_path: str, out: str) -> None:
    trainer = Trainer(load_train_recipe(recipe_path))
    for group in trainer.engine.optimizer.param_groups:
        group["lr"] = 0.0
    trainer.scheduler.lr_lambdas = [lambda _: 0.0]
    results = {}
    for name, (tile, ckpt, offload) in VARIANTS.items():
        trainer.tile = tile
        if ckpt:
            apply_activation_checkpointing(trainer.engine.module, offload)
        loss, grads = probe(trainer)
        layers = [m for m in trainer.engine.module.modules() if hasattr(m, "_gradient_checkpointing_func")]
        results[name] = {"loss": loss, "grads": grads,
                         "checkpointing": bool(layers) and all(m.gradient_checkpointing for m in layers),
                         "offload": bool(layers) and all(
                             getattr(m._gradient_checkpointing_func, "__name__", "") == "offloaded" for m in layers)}
    if trainer.rank == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
