"""Document masking is exact: a packed row's logits and loss equal each document run on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_train import TINY_LLAMA, make_manifest, make_tokenizer

from longmix.formats.manifest import load_manifest
from longmix.formats.packed_shards import read_rows
from longmix.train.attention import DOC_SDPA
from longmix.train.masking import (
    IGNORE,
    attention_pairs,
    build_arrays,
    predicted_count,
    row_positions,
    row_targets,
)
from longmix.train.model import load_config
from longmix.train.recipe import TrainRecipe


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mask")
    man = make_manifest(root / "d", make_tokenizer(root / "tok"), 128, 30_000, doc_chars=300)
    m = load_manifest(man)
    return [read_rows(man.parent / s.path, 128) for s in m.shards]


@pytest.fixture(scope="module", params=["sdpa", "doc_sdpa"])
def model(request):
    """transformers' sdpa (mask built from restarting positions) and longmix's per-document core."""
    from transformers import AutoModelForCausalLM

    recipe = TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json",
        "model": {"config": TINY_LLAMA, "attn_implementation": request.param},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 128, "micro_batch_tokens": 128}})
    config = load_config(recipe.model, recipe)
    assert config.use_cache is False
    assert config._attn_implementation == {"sdpa": "sdpa", "doc_sdpa": DOC_SDPA}[request.param]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _pick(rows, want_pad: bool):
    """A row with at least 3 segments (and a padding tail when ``want_pad``)."""
    for block in rows:
        for r in range(len(block)):
            row = block.row(r)
            if len(row["doc_lens"]) >= 3 and (row["pad"] > 0) == want_pad:
                return row
    pytest.skip("no suitable packed row")


def test_positions_and_targets_by_hand() -> None:
    ids = np.arange(10, 20)
    lens = np.array([3, 4, 3])  # last segment is padding
    assert row_positions(lens, 10, True).tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    assert row_positions(lens, 10, False).tolist() == list(range(10))
    t = row_targets(ids, lens, pad=3, doc_masking=True)
    assert t.tolist() == [11, 12, IGNORE, 14, 15, 16, IGNORE, IGNORE, IGNORE, IGNORE]
    t = row_targets(ids, lens, pad=3, doc_masking=False)
    assert t.tolist() == [11, 12, 13, 14, 15, 16, IGNORE, IGNORE, IGNORE, IGNORE]
    assert predicted_count(lens, 3, 10, True) == 5 and predicted_count(lens, 3, 10, False) == 6
    assert attention_pairs(lens, 3, 10, True) == 9 + 16 and attention_pairs(lens, 3, 10, False) == 49


def test_metadata_counts_match_targets_on_real_shards(rows) -> None:
    for block in rows:
        for r in range(len(block)):
            row = block.row(r)
            for masking in (True, False):
                t = row_targets(row["input_ids"].astype(np.int64), row["doc_lens"], row["pad"], masking)
                assert int((t != IGNORE).sum()) == predicted_count(row["doc_lens"], row["pad"], 128, masking)


@pytest.mark.parametrize("want_pad", [False, True])
def test_packed_row_equals_documents_alone(model, rows, want_pad: bool) -> None:
    row = _pick(rows, want_pad)
    ids, pos, tgt = build_arrays(row["input_ids"][None], [row["doc_lens"]], np.array([row["pad"]]), True)
    ids_t, tgt_t = torch.from_numpy(ids), torch.from_numpy(tgt)
    with torch.no_grad():
        packed = model(input_ids=ids_t, position_ids=torch.from_numpy(pos), use_cache=False).logits[0]
    packed_loss = F.cross_entropy(packed, tgt_t[0], ignore_index=IGNORE, reduction="sum")
    alone_loss, start = torch.zeros(()), 0
    n_docs = len(row["doc_lens"]) - (1 if row["pad"] else 0)
    for n in row["doc_lens"][:n_docs].tolist():
        doc = ids_t[:, start : start + n]
        with torch.no_grad():
            alone = model(input_ids=doc, use_cache=False).logits[0]
        torch.testing.assert_close(packed[start : start + n], alone, rtol=1e-5, atol=1e-5)
        alone_loss += F.cross_entropy(alone[:-1], doc[0, 1:], reduction="sum")
        start += n
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-6, atol=1e-4)


def test_masking_off_attends_across_documents(model, rows) -> None:
    row = _pick(rows, False)
    ids, pos, _ = build_arrays(row["input_ids"][None], [row["doc_lens"]], np.array([0]), False)
    first = int(row["doc_lens"][0])
    second = torch.from_numpy(ids[:, first : first + int(row["doc_lens"][1])])
    with torch.no_grad():
        packed = model(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos), use_cache=False).logits
        alone = model(input_ids=second, use_cache=False).logits
    assert not torch.allclose(packed[0, first : first + second.shape[1]], alone[0], atol=1e-3)


def test_guards_matter(model, rows) -> None:
    """The two transformers pitfalls: with a cache or an attention_mask, sdpa lets packed documents leak.
    The per-document core takes documents from the positions alone, so neither pitfall applies to it."""
    row = _pick(rows, False)
    ids, pos, _ = build_arrays(row["input_ids"][None], [row["doc_lens"]], np.array([0]), True)
    ids_t, pos_t = torch.from_numpy(ids), torch.from_numpy(pos)
    with torch.no_grad():
        good = model(input_ids=ids_t, position_ids=pos_t, use_cache=False).logits
        cached = model(input_ids=ids_t, position_ids=pos_t, use_cache=True).logits
        masked = model(input_ids=ids_t, position_ids=pos_t, attention_mask=torch.ones_like(ids_t),
                       use_cache=False).logits
    if model.config._attn_implementation == DOC_SDPA:
        torch.testing.assert_close(cached, good)
        torch.testing.assert_close(masked, good)
    else:
        assert not torch.allclose(good, cached, atol=1e-3)
        assert not torch.allclose(good, masked, atol=1e-3)


def test_model_config_turns_cache_off(tmp_path: Path) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model(**TINY_LLAMA).save_pretrained(tmp_path / "m")
    recipe = TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json", "model": {"path": str(tmp_path / "m")},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 128, "micro_batch_tokens": 128}})
    assert load_config(recipe.model, recipe).use_cache is False
