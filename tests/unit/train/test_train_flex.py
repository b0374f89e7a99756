"""FlexAttention core (the GPU default without flash-attn): on CPU its forward must equal per-document SDPA.
FlexAttention has no CPU backward, so gradients are checked on a GPU by tests/gpu/gpu_check.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_train import TINY_LLAMA

from longmix.core.errors import UserError
from longmix.train import attention, flex_attention
from longmix.train.masking import build_arrays
from longmix.train.model import load_config
from longmix.train.recipe import TrainRecipe

pytestmark = pytest.mark.skipif(not flex_attention.available(), reason="torch without FlexAttention")


def _recipe(attn: str) -> TrainRecipe:
    return TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json",
        "model": {"config": {**TINY_LLAMA, "num_key_value_heads": 2}, "attn_implementation": attn},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 512, "micro_batch_tokens": 256}})


def _model(attn: str):
    """A tiny GQA Llama with the given core (flex registered directly: training recipes refuse it on CPU)."""
    from transformers import AutoModelForCausalLM

    recipe = _recipe("doc_sdpa")
    config = load_config(recipe.model, recipe)
    if attn == "flex":
        flex_attention.register()
        config._attn_implementation = flex_attention.FLEX
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _packed_rows():
    rng = np.random.default_rng(1)
    ids = rng.integers(3, 512, size=(2, 320))
    lens = [np.array([130, 61, 129]), np.array([7, 200, 100, 13])]  # block-crossing documents, a padding tail
    return [torch.from_numpy(a) for a in build_arrays(ids, lens, np.array([0, 13]), True)]


def test_document_ids_follow_position_restarts() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1], [5, 6, 7, 0, 1, 2, 3, 4]])
    assert flex_attention.document_ids(pos).tolist() == [[0, 0, 0, 1, 1, 2, 3, 3], [0, 0, 0, 1, 1, 1, 1, 1]]
    # the same runs as the per-document SDPA core finds
    for row, ids in zip(pos, flex_attention.document_ids(pos), strict=True):
        starts = [s for s, _ in attention.segment_bounds(row)]
        assert starts == [0] + (torch.nonzero(ids[1:] != ids[:-1]).reshape(-1) + 1).tolist()


def test_flex_forward_equals_per_document_sdpa() -> None:
    """GQA (4 heads / 2 KV heads), two rows with different layouts: the same logits, with the block mask built
    once for the forward (as the trainer does) and built inside the call from the positions."""
    ids, pos, _ = _packed_rows()
    with torch.no_grad():
        ref = _model("doc_sdpa")(input_ids=ids, position_ids=pos, use_cache=False).logits
        flex = _model("flex")
        built_inside = flex(input_ids=ids, position_ids=pos, use_cache=False).logits
        with flex_attention.use_documents(pos):
            installed = flex(input_ids=ids, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(built_inside, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(installed, ref, rtol=1e-5, atol=1e-5)
    # and documents really are separated: changing the first document leaves the others' logits alone
    ids2 = ids.clone()
    ids2[0, :130] = 3
    with torch.no_grad():
        other = flex(input_ids=ids2, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(other[0, 130:], built_inside[0, 130:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(other[0, :130], built_inside[0, :130])


def test_flex_refuses_a_mask_of_another_shape_and_decoding() -> None:
    ids, pos, _ = _packed_rows()
    flex = _model("flex")
    with flex_attention.use_documents(pos[:, :128]), \
            pytest.raises(ValueError, match="installed documents are"), torch.no_grad():
        flex(input_ids=ids, position_ids=pos, use_cache=False)
    q = torch.zeros(1, 4, 1, 16)
    kv = torch.zeros(1, 2, 5, 16)
    with pytest.raises(ValueError, match="cannot decode"):
        flex_attention.flex_doc_attention(torch.nn.Module(), q, kv, kv, None)


def test_auto_picks_the_core_per_device() -> None:
    assert attention.resolve("flex") == flex_attention.FLEX
    if not torch.cuda.is_available():
        assert attention.resolve("auto") == attention.DOC_SDPA
        recipe = _recipe("flex")
        with pytest.raises(UserError, match="flex needs a GPU"):
            load_config(recipe.model, recipe)


@pytest.mark.parametrize("family", ["mistral", "gemma2", "gemma3_text"])
def test_flex_honours_windows_and_softcapping(family: str) -> None:
    """Per-window block masks (built once per forward and window) and the softcap score_mod: the same logits
    as the per-document core, which the family matrix checks against transformers' eager attention."""
    from helpers_families import family_config
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**family_config(family))
    config.use_cache = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)  # sharp attention, so a window or a softcap shows
    ids, pos, _ = _packed_rows()
    attention.register()
    flex_attention.register()
    with torch.no_grad():
        model.set_attn_implementation(attention.DOC_SDPA)
        ref = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        model.set_attn_implementation(flex_attention.FLEX)
        with flex_attention.use_documents(pos):
            installed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        built_inside = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(installed, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(built_inside, ref, rtol=1e-4, atol=1e-4)
