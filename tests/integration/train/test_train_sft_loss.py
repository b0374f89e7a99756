"""SFT training: the loss is a mean over the whole global batch's counted tokens (or examples), so the batch cut
into 1 or 4 micro-batches on one rank, into 2 ranks x 2 micro-batches, or split along the sequence over 2 ranks
(Ulysses, SP=2), gives the same loss and gradients.

The manifest's rows count very different numbers of targets (make_sft_manifest), so a per-micro-batch or
per-rank mean would differ from the global one: the test would catch it (see the last assertion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_train import make_sft_manifest, make_tokenizer, run_longmix, tiny_recipe, write_train_recipe

from longmix.train.trainer import read_metrics

pytestmark = pytest.mark.slow
# ranks, micro_batch_tokens, sequence-parallel size (128-token rows, 8 per step)
LAYOUTS = {"1x1": (1, 1024, 1), "1x4": (1, 256, 1), "2x2": (2, 256, 1), "sp2": (2, 256, 2)}


def _steps(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("sft-loss")
    manifest = make_sft_manifest(root / "sft", make_tokenizer(root / "tok"), 128, 40_000, doc_chars=500)
    out = {}
    for weighting, layouts in (("token", ("1x1", "1x4", "2x2", "sp2")), ("example", ("1x1", "2x2", "sp2"))):
        for name in layouts:
            nproc, micro, sp = LAYOUTS[name]
            recipe = tiny_recipe(root / "unused", [{"manifest": str(manifest), "steps": 2}],
                                 data={"holdout_sequences": 0, "loss_weighting": weighting},
                                 batch={"tokens_per_step": 1024, "micro_batch_tokens": micro},
                                 parallel={"sequence_parallel_size": sp},
                                 checkpoint={"every_steps": 100, "keep_last": 1})
            path = write_train_recipe(root / f"{weighting}-{name}.yaml", **recipe)
            out[weighting, name] = root / f"{weighting}-{name}"
            proc = run_longmix("train", str(path), "--nproc", str(nproc), "-o", str(out[weighting, name]))
            assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return out


@pytest.mark.parametrize("weighting", ["token", "example"])
def test_same_loss_and_gradients_whatever_the_split(runs, weighting: str) -> None:
    ref = _steps(runs[weighting, "1x1"])
    for (w, name), run in runs.items():
        if w != weighting or name == "1x1":
            continue
        got = _steps(run)
        for step in (1, 2):  # step 2's loss is computed with step 1's update: it checks the gradients too
            assert np.isclose(got[step]["loss"], ref[step]["loss"], rtol=1e-5), (name, step)
            assert np.isclose(got[step]["grad_norm"], ref[step]["grad_norm"], rtol=1e-4), (name, step)
        assert got[1]["predicted_tokens"] == ref[1]["predicted_tokens"]


def test_the_two_weightings_differ(runs) -> None:
    """Rows count unequal targets, so a token mean and an example mean are different losses (the equalities
    above are not vacuous)."""
    token, example = _steps(runs["token", "1x1"]), _steps(runs["example", "1x1"])
    assert not np.isclose(token[1]["loss"], example[1]["loss"], rtol=1e-3)
    assert token[1]["predicted_tokens"] == example[1]["predicted_tokens"]
