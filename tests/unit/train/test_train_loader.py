"""The loader: every sequence exactly once per epoch across ranks, the same order on any world size,
exact continuation after a resume, holdout kept out, phases with constant tokens per step."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_train import make_manifest, make_tokenizer, tiny_recipe

from longmix.core.errors import UserError
from longmix.formats.manifest import ManifestError
from longmix.train.loader import Loader, PhaseData, plan_phases
from longmix.train.recipe import TrainRecipe

HOLDOUT = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loader")
    tok = make_tokenizer(root / "tok")
    return {"root": root, "m128": make_manifest(root / "d128", tok, 128, 60_000, rows_per_shard=17),
            "m256": make_manifest(root / "d256", tok, 256, 60_000, rows_per_shard=9, skip=30)}


def _recipe(data, steps=(None, None), **batch) -> TrainRecipe:
    n128 = len(PhaseData(data["m128"], verify=False)) - HOLDOUT
    phases = [{"manifest": str(data["m128"]), "steps": steps[0] or -(-2 * n128 // 8)},  # 2 epochs, 8 seqs/step
              {"manifest": str(data["m256"]), "steps": steps[1] or 5}]
    rec = tiny_recipe(data["root"] / "run", phases, batch={"tokens_per_step": 1024, "micro_batch_tokens": 256,
                                                            **batch}, data={"holdout_sequences": HOLDOUT})
    return TrainRecipe.model_validate(rec)


def _loaders(recipe: TrainRecipe, world: int) -> list[Loader]:
    phases = [PhaseData(recipe.resolve(p.manifest), verify=False) for p in recipe.data.phases]
    plans = plan_phases(recipe, phases, world)
    return [Loader(recipe, phases, plans, r, world) for r in range(world)]


def _consumed(loaders: list[Loader], steps: range) -> dict[int, list[np.ndarray]]:
    """Rows each step reads, gathered over all ranks (in rank-major order)."""
    return {s: [mb.rows for ld in loaders for mb in ld.step(s).micro] for s in steps}


def test_each_sequence_once_per_epoch_across_ranks(data) -> None:
    recipe = _recipe(data)
    loaders = _loaders(recipe, 2)
    plan = loaders[0].plans[0]
    assert plan.seqs_per_step == 8 and plan.micro_seqs == 2 and plan.grad_accum == 2
    steps = range(plan.steps)
    consumed = _consumed(loaders, steps)
    order = []
    for s in steps:  # the ranks' micro-batches partition the step's global rows: nothing shared, nothing left
        ranks = np.concatenate(consumed[s])
        _, global_rows = loaders[0].global_rows(s)
        assert np.array_equal(np.sort(ranks), np.sort(global_rows))
        order.append(global_rows)
    order = np.concatenate(order)
    held = set(np.concatenate([ld.holdout(0, 2)[0] for ld in loaders]).tolist())
    train = set(range(len(loaders[0].phases[0]))) - held
    assert len(train) == plan.rows
    for e in range(2):  # each epoch is a permutation of the training rows, in a new order
        epoch = order[e * plan.rows : (e + 1) * plan.rows]
        assert sorted(epoch.tolist()) == sorted(train)
    assert not np.array_equal(order[: plan.rows], order[plan.rows : 2 * plan.rows])
    assert len(set(np.concatenate([ld.holdout(0, 2)[0] for ld in loaders]).tolist())) == HOLDOUT
    # Uneven holdout shares are padded with ignored rows: every rank runs the same forwards.
    shares = [ld.holdout(0, 2) for ld in loaders]
    assert [len(h[0]) for h in shares] == [3, 2] and all(len(h[1]) == 4 for h in shares)
    assert (shares[1][3][2:] == -100).all()


def test_same_global_order_on_any_world_size(data) -> None:
    recipe = _recipe(data)
    steps = range(0, loaders_total := _loaders(recipe, 1)[0].total_steps)
    ref = {s: np.sort(np.concatenate(p)) for s, p in _consumed(_loaders(recipe, 1), steps).items()}
    for world in (2, 4):
        got = _consumed(_loaders(recipe, world), steps)
        for s in steps:
            assert np.array_equal(np.sort(np.concatenate(got[s])), ref[s]), (world, s)
    assert loaders_total == _loaders(recipe, 4)[0].total_steps


def test_resume_continues_at_the_exact_next_sequence(data) -> None:
    recipe = _recipe(data)
    a = _loaders(recipe, 2)
    k = 7
    state = a[0].state(k)
    b = _loaders(recipe, 2)  # a fresh process: nothing but the saved state
    b[0].check_resume(state)
    for s in range(k, k + 6):
        for ra, rb in zip(a, b, strict=True):
            sa, sb = ra.step(s), rb.step(s)
            for ma, mb in zip(sa.micro, sb.micro, strict=True):
                assert np.array_equal(ma.rows, mb.rows) and np.array_equal(ma.input_ids, mb.input_ids)
                assert np.array_equal(ma.targets, mb.targets)
    other = _loaders(_recipe(data, steps=(3, 5)), 2)
    with pytest.raises(UserError, match="different data plan"):
        other[0].check_resume(state)


def test_phases_hold_tokens_per_step(data) -> None:
    recipe = _recipe(data)
    ld = _loaders(recipe, 2)[0]
    first_long = ld.plans[0].steps
    assert ld.phase_of(first_long - 1) == 0 and ld.phase_of(first_long) == 1
    b0, b1 = ld.step(0), ld.step(first_long)
    assert b0.micro[0].input_ids.shape == (2, 128) and b1.micro[0].input_ids.shape == (1, 256)
    assert len(b0.micro) == 2 and len(b1.micro) == 2
    assert ld.plans[0].seqs_per_step * 128 == ld.plans[1].seqs_per_step * 256 == 1024
    # global counts are over the whole step; targets of this rank are a subset
    assert sum(int((mb.targets != -100).sum()) for mb in b0.micro) < b0.global_predicted


def test_batch_shape_errors_are_user_errors(data) -> None:
    recipe = _recipe(data, tokens_per_step=1000)
    with pytest.raises(UserError, match="not a multiple of seq_len"):
        _loaders(recipe, 2)
    recipe = _recipe(data, tokens_per_step=512, micro_batch_tokens=512)
    with pytest.raises(UserError, match="do not split"):
        _loaders(recipe, 2)


def test_corrupt_shard_is_refused(data, tmp_path: Path) -> None:
    copy = tmp_path / "d128"
    shutil.copytree(data["m128"].parent, copy)
    shard = sorted(copy.glob("*.arrow"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        PhaseData(copy / "manifest.json", verify=True)
