"""The run plan: what a training recipe will do, worked out before any rank starts (HF Trainer prints the total
optimization steps, torchtitan a config summary; this says per phase what a long-context run needs to know).

Steps, batch shape and tokens come from the same `plan_phases` the trainer runs, so the plan's numbers are the
run's. Memory per rank is an estimate (stated as one): ZeRO-3 model states split over all ranks, plus one
micro-batch's activations by the usual per-layer count (Korthikanti et al. 2022, with fused attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmix.train.schedule import lr_factor

EPOCH_WARNING = 4.0  # beyond ~4 epochs repeated tokens stop being worth fresh ones (Muennighoff et al. 2023)


@dataclass(frozen=True)
class PhaseLine:
    manifest: str
    seq_len: int
    steps: int
    first_step: int
    tokens_per_step: int
    seqs_per_step: int
    micro_seqs: int
    grad_accum: int
    tokens: int
    epochs: float  # passes over the phase's training rows


@dataclass(frozen=True)
class Memory:
    model_states_gib: float  # weights, gradients and optimizer states: this rank's ZeRO-3 share
    activations_gib: float  # one micro-batch, as configured (checkpointing on or off)
    activations_other_gib: float  # the same with activation checkpointing the other way
    logits_gib: float  # the [tokens, vocab] logits and their gradient (a tile of them with tiled_loss)
    device_gib: float | None  # this device's memory (a GPU's, or the host's share per rank on a CPU)
    device: str

    @property
    def total_gib(self) -> float:
        return self.model_states_gib + self.activations_gib + self.logits_gib


@dataclass(frozen=True)
class RunPlan:
    world: int
    phases: list[PhaseLine]
    total_steps: int
    parameters: int
    rope: str
    lr: list[tuple[str, int, float]]  # (what, step, lr) at the schedule's turning points
    memory: Memory

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.phases)


def lr_points(recipe: Any, total: int) -> list[tuple[str, int, float]]:
    s, peak = recipe.schedule, recipe.optim.lr

    def lr(step: int) -> float:
        return peak * lr_factor(step, total, s.warmup_steps, s.min_lr_ratio, s.kind)

    points = [("first step", 0, lr(0))]
    if 0 < s.warmup_steps < total:
        points.append(("warm-up end (peak)", s.warmup_steps - 1, lr(s.warmup_steps - 1)))
    if s.kind == "cosine" and total > 2:
        mid = s.warmup_steps + (total - s.warmup_steps) // 2
        if 0 < mid < total - 1:
            points.append(("half-way through decay", mid, lr(mid)))
    points.append(("last step", total - 1, lr(total - 1)))
    return points


def make_plan(recipe: Any, world: int, config: Any, plans: list[Any]) -> RunPlan:
    """The plan for `plans` (from plan_phases, the trainer's own) on `world` ranks."""
    tps = recipe.batch.tokens_per_step
    phases, first = [], 0
    for p in plans:
        phases.append(PhaseLine(p.manifest, p.seq_len, p.steps, first, tps, p.seqs_per_step, p.micro_seqs,
                                p.grad_accum, p.steps * tps, p.steps * p.seqs_per_step / p.rows))
        first += p.steps
    params = count_parameters(config)
    micro_tokens = max(p.micro_seqs * p.seq_len // recipe.parallel.sequence_parallel_size for p in plans)
    return RunPlan(world, phases, first, params, describe_rope(recipe, config), lr_points(recipe, first),
                   estimate_memory(recipe, config, params, world, micro_tokens))


def count_parameters(config: Any) -> int:
    """Parameters of the model the config describes, built on the meta device (nothing is allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def describe_rope(recipe: Any, config: Any) -> str:
    rope = recipe.model.rope
    params = getattr(config, "rope_parameters", None) or {}
    flat = params.get("full_attention", params) if isinstance(params.get("full_attention"), dict) else params
    theta = flat.get("rope_theta")
    what = "kept as the model has it" if rope.kind == "keep" else rope.kind
    extra = f", theta {theta:,.0f}" if theta else ""
    factor = f", factor {flat['factor']:g}" if flat.get("factor") else ""
    return f"{what}{extra}{factor}; max positions {config.max_position_embeddings:,}"


def estimate_memory(recipe: Any, config: Any, params: int, world: int, micro_tokens: int) -> Memory:
    import torch

    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and torch.cuda.is_available())
    # ZeRO-3 with AdamW: 16 bytes a parameter in mixed precision (bf16 weights and grads, fp32 master, m, v),
    # 16 in fp32 (weights, grads, m, v), all split over every rank.
    states = 16 * params / world
    h, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 34 * micro_tokens * h * (2 if bf16 else 4) / 2  # 34 bytes/token/hidden in 16-bit, fused attention
    full = layers * per_layer
    ckpt = layers * micro_tokens * h * (2 if bf16 else 4) + per_layer  # layer inputs kept, one layer recomputed
    on = recipe.model.activation_checkpointing
    logit_tokens = min(micro_tokens, recipe.model.loss_tile_tokens) if recipe.model.tiled_loss else micro_tokens
    logits = 2 * logit_tokens * config.vocab_size * 4  # fp32 logits and their gradient
    device_gib, device = device_memory(world)
    gib = 2 ** 30
    return Memory(states / gib, (ckpt if on else full) / gib, (full if on else ckpt) / gib, logits / gib,
                  device_gib, device)


def device_memory(world: int) -> tuple[float | None, str]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / 2 ** 30, props.name
    try:
        import psutil

        return psutil.virtual_memory().total / 2 ** 30 / world, f"CPU host memory / {world} ranks"
    except ImportError:
        return None, "CPU"


def plan_lines(plan: RunPlan) -> list[str]:
    """The plan as console lines: a table per phase, the schedule, the memory estimate, warnings last."""
    out = [f"run plan on {plan.world} rank(s): {plan.total_steps:,} steps, {plan.tokens:,} tokens, "
           f"{plan.parameters / 1e6:,.1f}M parameters; RoPE {plan.rope}"]
    out.append("  phase  steps      seq_len  tokens/step  seqs/step  micro x accum/rank  tokens          epochs  "
               "manifest")
    for i, p in enumerate(plan.phases):
        out.append(f"  {i:<5}  {p.steps:<9,}  {p.seq_len:<7,}  {p.tokens_per_step:<11,}  {p.seqs_per_step:<9,}  "
                   f"{p.micro_seqs} x {p.grad_accum:<14}  {p.tokens:<14,}  {p.epochs:<6.2f}  {p.manifest}")
    out.append("  learning rate: " + "; ".join(f"{what} (step {step + 1}) {lr:.3g}" for what, step, lr in plan.lr))
    m = plan.memory
    room = f" of {m.device_gib:,.1f} GiB ({m.device})" if m.device_gib else ""
    out.append(f"  memory per rank (estimate): {m.total_gib:,.2f} GiB{room}: model states {m.model_states_gib:,.2f}, "
               f"activations {m.activations_gib:,.2f} ({m.activations_other_gib:,.2f} with activation checkpointing "
               f"the other way), logits {m.logits_gib:,.2f}")
    for i, p in enumerate(plan.phases):
        if p.epochs > EPOCH_WARNING:
            out.append(f"  WARNING: phase {i} repeats its manifest {p.epochs:.1f} times (more than "
                       f"{EPOCH_WARNING:g} epochs): build a bigger mix or train fewer steps")
    if m.device_gib and m.total_gib > m.device_gib:
        out.append(f"  WARNING: the estimate ({m.total_gib:,.1f} GiB) exceeds this device's {m.device_gib:,.1f} GiB: "
                   "turn on model.activation_checkpointing or model.tiled_loss, or use more ranks")
    return out


def plot_schedule(plan: RunPlan, recipe: Any, path: Path) -> Path:
    """The learning rate over the run, phase boundaries marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longmix.core.atomic import atomic_path

    s = recipe.schedule
    steps = list(range(plan.total_steps))
    lrs = [recipe.optim.lr * lr_factor(i, plan.total_steps, s.warmup_steps, s.min_lr_ratio, s.kind) for i in steps]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot([i + 1 for i in steps], lrs)
    for p in plan.phases[1:]:
        ax.axvline(p.first_step + 0.5, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=f"{recipe.name}: learning-rate schedule")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
