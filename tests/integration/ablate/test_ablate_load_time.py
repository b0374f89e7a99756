"""Load-time arms (`train: none`): the base checkpoint with its RoPE changed when loaded, no training. The arm's
checkpoint holds the base's very weights (linked, not copied) and a config that differs from the base's only in
the RoPE keys; a suite of such arms needs no data recipe, evaluates each seed as its own draw, and says in its
report that no training happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from longmix.ablate.load_time import write_load_time_checkpoint
from longmix.ablate.runner import AblationRunner
from longmix.ablate.suite import load_suite
from longmix.core.errors import UserError
from longmix.train.recipe import RopeConfig
from tests.helpers_train import TINY_LLAMA


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, docs_tokenizer: Path) -> Path:
    """A tiny random Llama whose vocabulary is the demo docs tokenizer's (evaluations tokenize real text)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.formats.tokenizer_files import load_tokenizer

    path = tmp_path_factory.mktemp("load-time") / "base"
    torch.manual_seed(0)
    vocab = load_tokenizer(docs_tokenizer).get_vocab_size()
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**TINY_LLAMA, "vocab_size": vocab})).save_pretrained(path)
    shutil.copy(docs_tokenizer, path / "tokenizer.json")
    return path


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize(("rope", "rope_keys", "max_pos"), [
    ({"kind": "abf", "theta": 40000.0}, {"rope_type": "default", "rope_theta": 40000.0}, 1024),
    ({"kind": "linear", "factor": 4.0}, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, 4096),
    ({"kind": "dynamic", "factor": 2.0}, {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, 1024),
])
def test_checkpoint_is_the_base_with_new_rope_keys(base: Path, tmp_path: Path, rope: dict, rope_keys: dict,
                                                   max_pos: int) -> None:
    from safetensors.torch import load_file

    out = write_load_time_checkpoint(base, tmp_path / "arm", RopeConfig(**rope), None)
    got, want = _config(out), _config(base)
    changed = {k for k in set(got) | set(want) if got.get(k) != want.get(k)} - {"transformers_version"}
    assert changed <= {"rope_parameters", "max_position_embeddings"}
    assert got["rope_parameters"] == rope_keys and got["max_position_embeddings"] == max_pos
    weights = out / "model.safetensors"
    assert weights.stat().st_ino == (base / "model.safetensors").stat().st_ino  # linked: the very same bytes
    a, b = load_file(weights), load_file(base / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _suite(tmp: Path, base: Path, demo_corpus: Path, arms: list[dict]) -> Path:
    tests = str(demo_corpus / "tests" / "part-00000.jsonl")
    suite = {"name": "tiny-pe-load", "output": str(tmp / "out"), "seeds": [0, 1], "train_tokens": 1024,
             "base": {"model": str(base)},
             "eval": {"data": [tests], "max_len": 256, "max_docs": 2, "table_contexts": [32, 128, 256]},
             "quick": {"train_tokens": 1024, "max_len": 256, "max_docs": 2, "table_contexts": [32, 128, 256]},
             "arms": arms, "reference": arms[0]["name"],
             "findings": [{"finding": "abf differs", "paper": "-", "metric": "loss@128-256", "arm": arms[1]["name"],
                           "versus": arms[0]["name"], "expect": "lower"}]}
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_suite_of_load_time_arms(base: Path, demo_corpus: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    arms = [{"name": "rope", "train": "none", "rope": {"kind": "keep"}},
            {"name": "abf", "train": "none", "rope": {"kind": "abf", "theta": 1_000_000.0}}]
    monkeypatch.setattr(AblationRunner, "_launch", lambda self, jobs: pytest.fail(f"trained {jobs}"))
    summary = AblationRunner(load_suite(_suite(tmp_path, base, demo_corpus, arms))).run()
    runs = {(r["arm"], r["seed"]): r for r in summary["arms"]}
    assert all(r["training"] is None and r["lineage"] == [] for r in runs.values())
    # the same weights for every seed, other evaluation draws (haystacks, needles, documents where drawn)
    assert [runs["abf", s]["eval_seed"] for s in (0, 1)] == [summary["eval"]["seed"], summary["eval"]["seed"] + 1]
    assert runs["abf", 0]["eval"]["mean_loss"] != runs["abf", 1]["eval"]["mean_loss"]  # other documents
    # RoPE unchanged is the base itself (the same draw as the base's own evaluation at seed 0)
    assert runs["rope", 0]["eval"]["mean_loss"] == summary["base"]["eval"]["mean_loss"]
    md = (Path(summary["output"]) / "report" / "report.md").read_text()
    assert "No training happened for abf, rope" in md and "none (load time)" in md
    assert "training_curves.png" not in md and "RoPE changed at load time (kind abf" in md


def test_load_time_mistakes_are_one_line(base: Path, demo_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train: none needs rope"):
        load_suite(_suite(tmp_path, base, demo_corpus, [{"name": "a", "train": "none"}, {"name": "b"}]))
    with pytest.raises(UserError, match="set base.data"):
        load_suite(_suite(tmp_path, base, demo_corpus, [{"name": "a", "train": "none", "rope": {"kind": "keep"}},
                                                        {"name": "b"}]))
    bad = [{"name": "a", "train": "none", "rope": {"kind": "keep"}},
           {"name": "b", "train": "none", "rope": {"kind": "abf", "theta": 5.0, "layer_types": ["full_attention"]}}]
    with pytest.raises(UserError, match="arm b: .*layer_types"):
        AblationRunner(load_suite(_suite(tmp_path, base, demo_corpus, bad))).check()
