"""Long-sequence building blocks on one process: per-document attention, tiled loss, SP guard rails.

The distributed equalities (SP=2 against SP=1, resume) are in test_train_sequence_parallel.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_train import TINY_LLAMA

from longmix.core.errors import UserError
from longmix.train import sequence_parallel as sp
from longmix.train.attention import DOC_SDPA, segment_bounds
from longmix.train.masking import IGNORE, build_arrays
from longmix.train.model import load_config
from longmix.train.recipe import TrainRecipe
from longmix.train.tiled_loss import check_supported, tiled_cross_entropy_sum


def _recipe(**model) -> TrainRecipe:
    return TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json", "model": {"config": TINY_LLAMA, **model},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 512, "micro_batch_tokens": 256}})


def _model(attn: str):
    from transformers import AutoModelForCausalLM

    recipe = _recipe(attn_implementation=attn)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(load_config(recipe.model, recipe), dtype=torch.float32).train()


def test_segment_bounds_from_restarting_positions() -> None:
    pos = torch.tensor([0, 1, 2, 0, 1, 0, 0, 1, 2, 3])
    assert segment_bounds(pos) == [(0, 3), (3, 5), (5, 6), (6, 10)]
    assert segment_bounds(torch.arange(7)) == [(0, 7)]
    # A shard that starts mid-document (positions not at 0) is still one run.
    assert segment_bounds(torch.tensor([5, 6, 7, 0, 1])) == [(0, 3), (3, 5)]


def test_doc_attention_matches_transformers_masked_sdpa_with_gradients() -> None:
    """Two packed rows with different document layouts (one with a padding tail): per-document SDPA
    gives the logits and parameter gradients of transformers' sdpa with its mask from positions."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 512, size=(2, 96))
    ids, pos, tgt = build_arrays(ids, [np.array([40, 30, 26]), np.array([10, 50, 20, 16])], np.array([0, 16]), True)
    t = [torch.from_numpy(a) for a in (ids, pos, tgt)]
    results = {}
    for attn in ("sdpa", "doc_sdpa"):
        model = _model(attn)
        logits = model(input_ids=t[0], position_ids=t[1], use_cache=False).logits
        F.cross_entropy(logits.flatten(0, 1), t[2].flatten(), ignore_index=IGNORE, reduction="sum").backward()
        results[attn] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["doc_sdpa"][0], results["sdpa"][0], rtol=1e-5, atol=1e-5)
    for name, g in results["sdpa"][1].items():
        torch.testing.assert_close(results["doc_sdpa"][1][name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("tile", [1, 7, 64, 1000])
def test_tiled_loss_equals_full_loss_and_gradients(tile: int) -> None:
    torch.manual_seed(1)
    head = torch.nn.Linear(32, 300, bias=False)
    hidden = torch.randn(2, 50, 32, requires_grad=True)
    targets = torch.randint(0, 300, (2, 50))
    targets[0, :9] = IGNORE
    targets[1, -3:] = IGNORE
    full = F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    g_full = torch.autograd.grad(full, [hidden, head.weight])
    tiled = tiled_cross_entropy_sum(head, hidden, targets, tile)
    g_tiled = torch.autograd.grad(tiled, [hidden, head.weight])
    torch.testing.assert_close(tiled, full, rtol=1e-6, atol=1e-5)
    for a, b in zip(g_tiled, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_tiled_loss_refuses_post_processed_logits() -> None:
    from transformers import AutoConfig

    check_supported(AutoConfig.for_model(**TINY_LLAMA))
    gemma2 = AutoConfig.for_model("gemma2", final_logit_softcapping=30.0)
    with pytest.raises(UserError, match="final_logit_softcapping"):
        check_supported(gemma2)


def test_guard_rails_are_one_line_errors() -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**TINY_LLAMA)  # 4 heads, 4 kv heads
    sp.check(2, 2, cfg, [256, 1024], DOC_SDPA)
    sp.check(4, 8, cfg, [256], "flash_attention_2")
    cases = [
        ((2, 3, cfg, [256], DOC_SDPA), "does not divide the world size 3"),
        ((2, 2, cfg, [256, 255], DOC_SDPA), "seq_len 255 is not divisible"),
        ((8, 8, cfg, [256], DOC_SDPA), "4 attention heads do not split"),
        ((2, 2, cfg, [256], "eager"), "'eager' is not supported with sequence parallelism"),
    ]
    for args, msg in cases:
        with pytest.raises(UserError, match=msg) as exc:
            sp.check(*args)
        assert "\n" not in str(exc.value)
    gqa = AutoConfig.for_model(**{**TINY_LLAMA, "num_attention_heads": 6, "num_key_value_heads": 3,
                                  "hidden_size": 72})
    with pytest.raises(UserError, match="3 key/value heads"):
        sp.check(2, 2, gqa, [256], DOC_SDPA)


def test_recipe_refuses_offload_without_checkpointing() -> None:
    with pytest.raises(ValueError, match="activation_checkpointing: true"):
        _recipe(activation_offload=True)
    assert _recipe(activation_offload=True, activation_checkpointing=True).model.activation_offload


def test_sdpa_becomes_per_document_under_sequence_parallelism() -> None:
    recipe = TrainRecipe.model_validate({**_recipe(attn_implementation="sdpa").model_dump(),
                                         "parallel": {"sequence_parallel_size": 2}})
    assert load_config(recipe.model, recipe)._attn_implementation == DOC_SDPA


def test_layout_and_shards() -> None:
    a = np.arange(24).reshape(2, 12)
    layouts = [sp.ParallelDims(world=4, sp=2, rank=r) for r in range(4)]
    assert [(lay.dp, lay.dp_rank, lay.sp_rank) for lay in layouts] == [(2, 0, 0), (2, 0, 1), (2, 1, 0), (2, 1, 1)]
    assert np.array_equal(np.concatenate([layouts[0].shard(a), layouts[1].shard(a)], axis=1), a)
    assert sp.ParallelDims(world=2, sp=1, rank=1).shard(a) is a
