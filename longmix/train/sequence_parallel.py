"""Ulysses sequence parallelism: DeepSpeed's ``UlyssesSPAttentionHF`` around a document-masked core.

Ranks form groups of ``sequence_parallel_size`` consecutive ranks (DeepSpeed's layout). Every rank of a
group reads the same sequences and keeps its own contiguous slice of each; inside attention an
all-to-all swaps the sequence split for a head split, so each rank attends over whole sequences with
1/SP of the heads. DeepSpeed's wrapper drops attention masks but all-gathers the position ids, so the
core attention must find documents from positions: ``longmix_doc_sdpa`` does on CPU (and any GPU),
and flash_attention_2's varlen path does on GPU.

This module owns sequence parallelism: the rank layout (``ParallelDims``), the guard rails (``check``), the
core attention it needs (``core_attention``), its DeepSpeed settings (``adjust_ds_config``), the model's
attention routing (``setup``, called by ``parallelize``) and the engine fix-up (``fix_engine``). The batch
planner only reads the degree: a rank holds seq_len / SP tokens of each of its sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from longmix.core.errors import UserError
from longmix.train import flex_attention
from longmix.train.attention import DOC_SDPA, register
from longmix.train.flex_attention import FLEX

# Core attentions that split packed rows at position restarts (the only mask Ulysses keeps).
SP_CORES = (DOC_SDPA, FLEX, "flash_attention_2")


@dataclass(frozen=True)
class ParallelDims:
    """Where this rank sits: SP group of consecutive ranks, data-parallel index across groups."""

    world: int
    sp: int
    rank: int

    @property
    def dp(self) -> int:
        return self.world // self.sp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    def shard(self, a: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of each row (rows, seq_len) -> (rows, seq_len / SP)."""
        if self.sp == 1:
            return a
        n = a.shape[1] // self.sp
        return a[:, self.sp_rank * n : (self.sp_rank + 1) * n]


def parallel_dims(world: int, sp: int, rank: int) -> ParallelDims:
    """This rank's place; an SP degree that does not divide the world is refused before any batch is planned."""
    if world % sp:
        raise UserError(_NOT_DIVIDING.format(sp=sp, world=world))
    return ParallelDims(world, sp, rank)


_NOT_DIVIDING = "parallel.sequence_parallel_size={sp} does not divide the world size {world}"


def check(sp: int, world: int, config: Any, seq_lens: list[int], attn: str) -> None:
    """Guard rails, each a one-line error, before the model is built (and, via ``preflight``, before launch)."""
    if sp == 1:
        return
    if world % sp:
        raise UserError(_NOT_DIVIDING.format(sp=sp, world=world))
    for L in seq_lens:
        if L % sp:
            raise UserError(f"seq_len {L} is not divisible by parallel.sequence_parallel_size={sp}")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    if heads % sp:
        raise UserError(f"the model's {heads} attention heads do not split over sequence_parallel_size={sp} "
                        "(Ulysses gives each rank heads / SP heads)")
    if kv % sp and sp % kv:
        raise UserError(f"the model's {kv} key/value heads and sequence_parallel_size={sp}: one must divide the other")
    if attn not in SP_CORES:
        raise UserError(f"attn_implementation '{attn}' is not supported with sequence parallelism (it needs a full "
                        "[seq, seq] mask, which Ulysses drops); use auto, doc_sdpa, sdpa or flash_attention_2")


def core_attention(attn: str, sp: int) -> str:
    """The core attention a resolved implementation becomes under SP: plain sdpa needs the mask Ulysses drops,
    so it becomes per-document SDPA (which finds documents from the gathered positions)."""
    if sp > 1 and attn == "sdpa":
        register()
        return DOC_SDPA
    return attn


def adjust_ds_config(cfg: dict[str, Any], sp: int, where: Any) -> None:
    """What SP needs of the DeepSpeed config (in place); ``where`` names the JSON in errors."""
    if sp == 1:
        return
    zero = cfg.setdefault("zero_optimization", {})
    if zero.get("stage") != 3:
        raise UserError(f"{where}: sequence parallelism needs ZeRO stage 3 (zero_optimization.stage: 3)")
    # DeepSpeed 0.19's ZeRO-3 divides reduced gradients by the world size on its reduce-scatter path but
    # by world / SP on its all-reduce path (taken per bucket when reduce_scatter is off): pin the first.
    if zero.get("reduce_scatter") is False:
        raise UserError(f"{where}: zero_optimization.reduce_scatter: false is not supported with sequence "
                        "parallelism (DeepSpeed would scale some gradients by the SP degree)")
    zero["reduce_scatter"] = True


def fix_engine(engine: Any, dims: ParallelDims) -> None:
    """DeepSpeed 0.19 leaves ``dp_world_size`` unset under a Ulysses mpu, and the batch-size setters that
    curriculum phases call multiply by it."""
    if engine.dp_world_size is None:
        engine.dp_world_size = dims.dp


def setup(model: torch.nn.Module, sp: int) -> Any:
    """Create DeepSpeed's SP/DP groups and route the model's attention through Ulysses; returns the mpu
    object for ``deepspeed.initialize``."""
    import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if not getattr(model, "_supports_attention_backend", False):
        raise UserError(f"{type(model).__name__} does not dispatch attention through transformers' attention "
                        "interface, so Ulysses cannot wrap it; sequence parallelism needs such a model (Llama, "
                        "Mistral, Qwen2, ...)")
    name = model.config._attn_implementation
    if name == DOC_SDPA:
        register()
    elif name == FLEX:
        flex_attention.register()
    mpu.initialize_sequence_parallel(sequence_parallel_size=sp)
    text = model.config.get_text_config()
    ulysses = UlyssesSPAttentionHF(
        attn=ALL_ATTENTION_FUNCTIONS[name],
        batch_size=1,
        attn_head_count=text.num_attention_heads,
        attn_head_size=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        kv_head_count=text.num_key_value_heads,
        num_hidden_layers=text.num_hidden_layers,
        process_group=mpu.get_sequence_parallel_group(),
        seq_length_is_variable=True,
    )
    ulysses.core_attn_implementation = name

    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        # The wrapper's shapes carry the micro-batch size, which curriculum phases may change.
        if query.shape[0] != ulysses.batch_size:
            _set_batch_size(ulysses, query.shape[0])
        # Masks were built for this rank's slice; documents come from the gathered position ids instead.
        return ulysses(module, query, key, value, None, *args, **kwargs)

    # Registered under the model's own implementation name, so every special case transformers keys on
    # that name (e.g. flash-attention's kwargs) still applies; the model itself is left untouched.
    ALL_ATTENTION_FUNCTIONS[name] = attention
    return mpu


def _set_batch_size(ulysses: Any, bsz: int) -> None:
    ulysses.batch_size = bsz
    for attr in ("required_query_shape", "required_key_value_shape", "required_context_shape"):
        shape = list(getattr(ulysses, attr))
        shape[1] = bsz
        setattr(ulysses, attr, torch.Size(shape))
