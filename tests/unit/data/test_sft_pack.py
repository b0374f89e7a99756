"""SFT packing: every example that fits is one whole segment with its mask, rows keep the packed-shard
invariants, long examples sit alone, too-long ones are dropped and counted, the order follows the seed, and a
packed row never attends across examples (per-example loss equals the example run alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_train import TINY_LLAMA

from longmix.data.sft.sft_build import weighted_uses
from longmix.data.sft.sft_pack import SftExample, SftPackStats, pack_sft
from longmix.formats.packed_rows import PAD_SOURCE
from longmix.formats.packed_shards import check_rows
from longmix.train.masking import IGNORE, build_arrays

PAD = 3


def _examples(n: int, max_len: int, seed: int = 0, vocab: int = 500) -> list[SftExample]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length = int(rng.integers(4, max_len + 1))
        ids = rng.integers(10, vocab, length).astype(np.uint32)
        mask = np.zeros(length, np.uint8)
        mask[int(rng.integers(1, length)):] = 1  # an answer at the end, as chat examples have
        out.append(SftExample(ids, mask, k % 3))
    return out


def _segments(rows) -> list[tuple[bytes, bytes, int]]:
    """(ids, mask, source) of every non-padding segment."""
    out = []
    for r in range(len(rows)):
        row, start = rows.row(r), 0
        for n, src in zip(row["doc_lens"].tolist(), row["doc_sources"].tolist(), strict=True):
            if src != PAD_SOURCE:
                out.append((row["input_ids"][start: start + n].tobytes(), row["loss_mask"][start: start + n].tobytes(),
                            src))
            start += n
    return out


@pytest.mark.parametrize(("long", "threshold"), [("pad", None), ("pad", 40), ("best_fit", 40)])
def test_every_fitting_example_is_one_whole_segment(long: str, threshold: int | None) -> None:
    L = 64
    examples = _examples(120, 90)
    stats = SftPackStats(L, "x")
    rows = pack_sft(examples, L, pad_id=PAD, seed=1, long=long, long_threshold=threshold, stats=stats)
    assert check_rows(rows, L, 3) is None
    fitting = [e for e in examples if len(e.ids) <= L]
    assert stats.too_long == len(examples) - len(fitting) > 0 and stats.examples == len(fitting)
    want = sorted((e.ids.tobytes(), e.loss_mask.tobytes(), e.source) for e in fitting)
    assert sorted(_segments(rows)) == want
    assert stats.loss_tokens == int(rows.loss_mask.sum()) == sum(int(e.loss_mask.sum()) for e in fitting)
    assert np.all(rows.input_ids[np.arange(L)[None, :] >= L - rows.pad[:, None]] == PAD)
    n_seg = np.diff(rows.seg_offsets) - (rows.pad > 0)
    if long == "pad" and threshold is not None:
        # a long example is alone in its row
        lens = [rows.row(r)["doc_lens"][0] for r in range(len(rows))]
        assert all(n_seg[r] == 1 for r in range(len(rows)) if lens[r] > threshold)
        assert stats.long_examples == sum(len(e.ids) > threshold for e in fitting)
    assert n_seg.max() > 1  # short examples share rows


def test_best_fit_beats_one_example_per_row_and_follows_the_seed() -> None:
    examples = _examples(200, 60, seed=2)
    a = pack_sft(examples, 128, pad_id=PAD, seed=5)
    b = pack_sft(examples, 128, pad_id=PAD, seed=5)
    c = pack_sft(examples, 128, pad_id=PAD, seed=6)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.loss_mask, b.loss_mask)
    assert not np.array_equal(a.input_ids, c.input_ids) and sorted(_segments(a)) == sorted(_segments(c))
    padded = pack_sft(examples, 128, pad_id=PAD, seed=5, long_threshold=1)  # everything "long": alone per row
    assert len(padded) == 200 and len(a) < 0.5 * len(padded)


def test_examples_without_a_target_are_dropped_and_the_first_token_never_counts() -> None:
    ids = np.arange(10, 20, dtype=np.uint32)
    stats = SftPackStats(32, "x")
    rows = pack_sft([SftExample(ids, np.ones(10, np.uint8), 0), SftExample(ids, np.eye(1, 10, 0, np.uint8)[0], 1)],
                    32, pad_id=PAD, seed=0, stats=stats)
    assert stats.no_target == 1 and stats.examples == 1
    assert rows.loss_mask[0, 0] == 0 and rows.loss_mask[0, 1:10].all() and check_rows(rows, 32, 2) is None


def test_weights_repeat_then_draw_the_fraction() -> None:
    rng = np.random.default_rng(0)
    uses = weighted_uses(10, 2.5, rng)
    counts = np.bincount(uses, minlength=10)
    assert len(uses) == 25 and set(counts.tolist()) == {2, 3} and (counts == 3).sum() == 5
    half = weighted_uses(9, 0.5, np.random.default_rng(1))
    assert len(half) == 4 and len(set(half.tolist())) == 4  # round(4.5) = 4 (banker's), distinct examples
    assert np.array_equal(half, weighted_uses(9, 0.5, np.random.default_rng(1)))
    assert len(weighted_uses(7, 0.0, rng)) == 0 and len(weighted_uses(7, 1.0, rng)) == 7


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    from longmix.train.model import load_config
    from longmix.train.recipe import TrainRecipe

    recipe = TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json",
        "model": {"config": TINY_LLAMA, "attn_implementation": "sdpa"},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 128, "micro_batch_tokens": 128}})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(load_config(recipe.model, recipe), dtype=torch.float32).eval()


def test_packed_rows_never_attend_across_examples(model) -> None:
    """Each example's masked loss inside a packed row equals its masked loss run alone."""
    L = 96
    examples = _examples(24, 50, seed=4)
    rows = pack_sft(examples, L, pad_id=PAD, seed=0)
    lens = [rows.row(r)["doc_lens"] for r in range(len(rows))]
    ids, pos, tgt = build_arrays(rows.input_ids, lens, rows.pad, True, rows.loss_mask)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos), use_cache=False).logits
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(tgt).reshape(-1),
                                 ignore_index=IGNORE, reduction="none").reshape(tgt.shape)
    by_ids = {e.ids.tobytes(): e for e in examples}
    checked = 0
    for r in range(len(rows)):
        start = 0
        for n, src in zip(lens[r].tolist(), rows.row(r)["doc_sources"].tolist(), strict=True):
            if src != PAD_SOURCE:
                ex = by_ids[ids[r, start: start + n].astype(np.uint32).tobytes()]
                alone_ids = torch.from_numpy(ex.ids.astype(np.int64))[None]
                with torch.no_grad():
                    alone = model(input_ids=alone_ids, use_cache=False).logits[0]
                want = F.cross_entropy(alone[:-1], alone_ids[0, 1:], reduction="none")[ex.loss_mask[1:] == 1].sum()
                got = token_loss[r, start: start + n].sum()
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
                assert int((tgt[r, start: start + n] != IGNORE).sum()) == int(ex.loss_mask[1:].sum())
                checked += 1
            start += n
    assert checked == 24 and max(len(x) for x in lens) > 2  # rows really hold several examples
