"""Model setup with transformers: config (RoPE change, attention implementation), checks, creation.

RoPE changes go through ``config.rope_parameters``: transformers 5 silently ignores a plain
``config.rope_theta = x``. ``use_cache`` is forced off because with a cache transformers does not build
the per-document mask from restarting position ids, and packed documents would attend to each other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from longmix.core.errors import UserError
from longmix.models.remote_code import check_custom_code
from longmix.models.rope import SCALED_KINDS, apply_change
from longmix.train import attention, flex_attention
from longmix.train import sequence_parallel as sp_mod
from longmix.train.recipe import ModelConfig, RopeConfig, TrainRecipe

log = logging.getLogger(__name__)


def rope_parameters(current: dict[str, Any], rope: RopeConfig, max_positions: int) -> dict[str, Any]:
    """New ``rope_parameters`` for ``rope`` applied on top of the model's ``current`` ones (per layer type
    where the model keys them so; see ``longmix.models.rope``)."""
    return apply_change(current, rope.kind, max_positions=max_positions, theta=rope.theta, factor=rope.factor,
                        original_max=rope.original_max_position_embeddings, layer_types=rope.layer_types)


def pick_attention(requested: str, sequence_parallel: int) -> str:
    """The recipe's choice, resolved (see ``attention.resolve``), as sequence parallelism needs it (see
    ``sequence_parallel.core_attention``)."""
    attn = sp_mod.core_attention(attention.resolve(requested), sequence_parallel)
    if attn == flex_attention.FLEX and not torch.cuda.is_available():
        raise UserError("model.attn_implementation flex needs a GPU (FlexAttention has no CPU backward); "
                        "use doc_sdpa or auto on CPU")
    return attn


def check_attention(config: PretrainedConfig, attn: str, requested: str) -> None:
    """Refuse, before any model is built, a core that cannot compute this family's attention as defined.

    longmix's cores (doc_sdpa, flex) and transformers' eager and flash_attention_2 honour sliding windows
    and logit softcapping; SDPA cannot softcap (transformers refuses it for Gemma 2), and no longmix core
    does Llama 4's chunked attention."""
    softcap = getattr(config, "attn_logit_softcapping", None)
    if softcap and attn == "sdpa":
        raise UserError(f"model.attn_implementation {requested}: {config.model_type} softcaps its attention logits "
                        f"(attn_logit_softcapping={softcap}), which SDPA cannot do; use doc_sdpa (the CPU default), "
                        "flex or flash_attention_2 on GPU, or eager")
    chunk = getattr(config, "attention_chunk_size", None)
    if chunk and attn in (attention.DOC_SDPA, flex_attention.FLEX):
        raise UserError(f"model.attn_implementation {requested}: {config.model_type} uses chunked attention "
                        f"(attention_chunk_size={chunk}), which longmix's document cores do not implement; use "
                        "sdpa or eager")


def apply_rope(config: PretrainedConfig, rope: RopeConfig, max_position_embeddings: int | None = None) -> None:
    """The RoPE change on ``config`` (through ``rope_parameters``), and its position limit: the given one, else
    the old one times the factor for position interpolation and YaRN. Not for dynamic NTK: transformers rescales
    its base only past max_position_embeddings, so raising the limit by the factor made it plain RoPE up to the
    new limit (a silently unchanged model)."""
    old_max = int(config.max_position_embeddings)
    current = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0})
    config.rope_parameters = rope_parameters(current, rope, old_max)
    if max_position_embeddings is not None:
        config.max_position_embeddings = max_position_embeddings
    elif rope.factor is not None and rope.kind in SCALED_KINDS and rope.kind != "dynamic":
        config.max_position_embeddings = int(old_max * rope.factor)


def load_config(mc: ModelConfig, recipe: TrainRecipe) -> PretrainedConfig:
    """The HF config of the run: the checkpoint's (or the recipe's), with the RoPE change applied."""
    if mc.path is not None:
        path = recipe.resolve(mc.path)
        if not (path / "config.json").is_file():
            raise UserError(f"model.path {path} has no config.json; point it at a HF checkpoint folder")
        trust = check_custom_code(path, mc.trust_remote_code, "model.trust_remote_code: true")
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        except (ValueError, OSError) as exc:
            raise UserError(f"model.path {path}: {str(exc).strip().splitlines()[0]}") from None
    else:
        fields = dict(mc.config or {})
        from huggingface_hub.errors import StrictDataclassError

        try:
            config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        except (ValueError, TypeError, StrictDataclassError) as exc:
            # transformers' config validators wrap the reason: the last line names it
            raise UserError(f"model.config: {str(exc).strip().splitlines()[-1].strip()}") from None
    try:
        apply_rope(config, mc.rope, mc.max_position_embeddings)
    except UserError as exc:
        raise UserError(f"model.{exc}") from None
    config.use_cache = False
    config._attn_implementation = pick_attention(mc.attn_implementation, recipe.parallel.sequence_parallel_size)
    check_attention(config, config._attn_implementation, mc.attn_implementation)
    return config


def create_model(
    mc: ModelConfig, recipe: TrainRecipe, config: PretrainedConfig, dtype: torch.dtype
) -> PreTrainedModel:
    """Create the model. Under an active ``HfDeepSpeedConfig`` with ZeRO-3, transformers builds it inside
    ``deepspeed.zero.Init``, so each rank only ever holds its partition of the weights. Activation
    checkpointing and the rest are applied afterwards by ``parallelize``."""
    attn = config._attn_implementation
    if mc.path is not None:
        model = AutoModelForCausalLM.from_pretrained(
            recipe.resolve(mc.path), config=config, dtype=dtype, attn_implementation=attn,
            trust_remote_code=mc.trust_remote_code,
        )
    else:
        torch.manual_seed(recipe.seed)  # from-scratch weights depend on the seed only
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    model.config.use_cache = False
    return model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One AdamW group, weight decay on every parameter (as torchtitan does).

    Not split into decay/no-decay groups on purpose: DeepSpeed's universal-checkpoint loader copies the
    first group's hyperparameters onto every group, so a no-decay group would silently start decaying
    after a resume on a different world size.
    """
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def match_tokenizer(config: PretrainedConfig, mc: ModelConfig, vocab_size: int, bos: int | None, eos: int | None,
                    pad: int, where: str) -> None:
    """A from-scratch model takes its vocabulary and special ids from the manifest's tokenizer when the
    recipe leaves them out; any model must cover every id the shards can hold."""
    given = mc.config or {}
    if mc.config is not None:
        for key, value in (("vocab_size", vocab_size), ("bos_token_id", bos), ("eos_token_id", eos),
                           ("pad_token_id", pad)):
            if key not in given:
                setattr(config, key, value)
    if vocab_size > config.vocab_size:
        raise UserError(f"{where}: tokenizer has {vocab_size} ids but the model's vocab_size is {config.vocab_size}; "
                        "use the model's tokenizer or raise model.config.vocab_size")


def check_tokenizer_agrees(mc: ModelConfig, recipe: TrainRecipe, tokenizer: Any, where: str) -> None:
    """A checkpoint folder that carries a tokenizer.json must have been mixed with that very tokenizer: the
    same vocabulary size is not enough (two BPEs of 49,152 ids map ids to different strings). ``tokenizer``
    is the manifest's tokenizer entry."""
    if mc.path is None:
        return
    from longmix.formats.packed_shards import sha256_file

    theirs = recipe.resolve(mc.path) / "tokenizer.json"
    if not theirs.is_file():
        log.warning("model.path %s has no tokenizer.json: only the vocabulary size of %s's tokenizer is checked",
                    recipe.resolve(mc.path), where)
        return
    digest = sha256_file(theirs)
    if digest != tokenizer.sha256:
        from tokenizers import Tokenizer

        n = Tokenizer.from_file(str(theirs)).get_vocab_size(with_added_tokens=True)
        raise UserError(f"{where} was built with tokenizer {Path(where).parent / tokenizer.path} "
                        f"({tokenizer.vocab_size:,} ids, sha256 "
                        f"{tokenizer.sha256[:12]}) but the model {recipe.resolve(mc.path)} uses {theirs} ({n:,} ids, "
                        f"sha256 {digest[:12]}); rebuild the mix with tokenizer.path: {recipe.resolve(mc.path)}")
