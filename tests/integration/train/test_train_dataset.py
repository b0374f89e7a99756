"""The Python dataset API (`longmix.train.dataset`) for people who keep their own trainer: HF-convention labels
that give transformers' own loss the trainer's loss, per-document positions and cu_seqlens, ranks covering each row
once, and an exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from helpers_train import TINY_LLAMA, make_manifest, make_tokenizer

from longmix.train import masking
from longmix.train.dataset import PackedDataset, PackedIterable


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    return make_manifest(root / "m", make_tokenizer(root / "tok"), 128, 30_000, doc_chars=300)


def test_items_carry_documents(manifest: Path) -> None:
    ds = PackedDataset(manifest)
    assert len(ds) > 10
    for i in range(len(ds)):
        item = ds[i]
        cu, pos, labels, ids = item["cu_seqlens"], item["position_ids"], item["labels"], item["input_ids"]
        assert cu[0] == 0 and cu[-1] == ds.seq_len
        starts = np.flatnonzero(pos.numpy() == 0)
        assert starts.tolist() == cu[:-1].tolist()  # positions restart exactly at each segment
        kept = labels != masking.IGNORE
        assert torch.equal(labels[kept], ids[kept])  # a label is the token itself: the model shifts
        assert not kept[starts].any()  # a document's first token is predicted from nothing
        lens, pads = ds.data.meta(np.array([i]))
        assert int(kept.sum()) == masking.predicted_count(lens[0], int(pads[0]), ds.seq_len, True)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_transformers_loss_on_the_labels_is_the_trainers_loss(manifest: Path) -> None:
    """A Llama given these labels (transformers shifts them itself) computes the mean token loss the trainer
    computes from its own targets on the same rows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = dict(TINY_LLAMA)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config).eval()
    ds = PackedDataset(manifest)
    batch = [ds[i] for i in range(4)]
    ids = torch.stack([b["input_ids"] for b in batch])
    pos = torch.stack([b["position_ids"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    lens, pads = ds.data.meta(np.arange(4))
    _, _, targets = masking.build_arrays(ds.data.tokens(np.arange(4)), lens, pads, True)
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False)
        ours = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]),
                               torch.from_numpy(targets).reshape(-1), ignore_index=masking.IGNORE)
    assert float(out.loss) == pytest.approx(float(ours), rel=1e-6)


def test_ranks_cover_each_row_once_and_resume_exactly(manifest: Path) -> None:
    n = len(PackedDataset(manifest, verify=False))
    seen = [int(item["row"]) for rank in range(2) for item in PackedIterable(manifest, rank, 2, seed=5)]
    assert sorted(seen) == list(range(n))
    whole = [int(item["row"]) for item in PackedIterable(manifest, 1, 2, seed=5, epochs=2)]
    assert whole[: len(whole) // 2] != whole[len(whole) // 2 :]  # a new order each epoch
    first = PackedIterable(manifest, 1, 2, seed=5, epochs=2)
    it = iter(first)
    taken = [int(next(it)["row"]) for _ in range(len(whole) // 2 + 3)]  # into the second epoch
    again = PackedIterable(manifest, 1, 2, seed=5, epochs=2)
    again.load_state_dict(first.state_dict())
    assert taken + [int(item["row"]) for item in again] == whole
    with pytest.raises(ValueError, match="does not fit"):
        PackedIterable(manifest, 0, 2, seed=5).load_state_dict(first.state_dict())


@pytest.mark.slow
def _documented_script():
    """docs/examples/hf_trainer.py, the HF Trainer script docs/interop.md shows, as a module."""
    import importlib.util

    path = REPO / "docs" / "examples" / "hf_trainer.py"
    spec = importlib.util.spec_from_file_location("hf_trainer_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hf_trainer_first_step_loss_equals_longmix_train(manifest: Path, tmp_path: Path) -> None:
    """The documented HF Trainer script, fed `longmix train`'s first-step rows through the dataset API, starts
    from the same checkpoint at the same loss and gradient norm (per-document attention in both: position
    restarts, no attention_mask, no cache), then runs 3 steps."""
    import json

    from helpers_train import run_longmix, tiny_recipe, write_train_recipe
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.train.loader import Loader, plan_phases
    from longmix.train.recipe import load_train_recipe
    from longmix.train.trainer import read_metrics

    torch.manual_seed(0)
    cfg = dict(TINY_LLAMA)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    model.save_pretrained(tmp_path / "base")
    rec = tiny_recipe(tmp_path / "run", [{"manifest": str(manifest), "steps": 1}], data={"holdout_sequences": 0})
    rec["model"] = {"path": str(tmp_path / "base"), "attn_implementation": "sdpa"}
    recipe_path = write_train_recipe(tmp_path / "r.yaml", **rec)
    proc = run_longmix("train", str(recipe_path), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r)

    recipe = load_train_recipe(recipe_path)
    ds = PackedDataset(manifest)
    _, rows = Loader(recipe, [ds.data], plan_phases(recipe, [ds.data], 2), 0, 2).global_rows(0)
    first = torch.utils.data.Subset(ds, rows.tolist() * 3)  # the first step's rows, three times over
    trainer = _documented_script().build_trainer(str(manifest), str(tmp_path / "base"), str(tmp_path / "hf"),
                                                 steps=3, batch_size=len(rows), dataset=first)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and all(np.isfinite(h["loss"]) for h in logged)
    assert logged[0]["loss"] == pytest.approx(ours["loss"], rel=1e-6), json.dumps(trainer.state.log_history)
    assert logged[0]["grad_norm"] == pytest.approx(ours["grad_norm"], rel=1e-4)  # the same gradient, too
