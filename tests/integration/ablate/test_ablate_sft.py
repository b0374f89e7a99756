"""An SFT ablation suite end to end (`base.sft`): each arm's sft-pack recipe is the base's with its overrides,
packed into SFT shards, trained from the base checkpoint with the loss mask, exported with its chat template and
evaluated on held-out long QA, with verdicts; arms differ only in what they override."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from longmix.ablate.runner import AblationRunner
from longmix.ablate.suite import load_suite
from longmix.formats.manifest import load_manifest
from tests.helpers_train import REPO

pytestmark = pytest.mark.slow
WORDS = ("river stone lamp garden window copper violet harbor meadow lantern orchard pebble thunder canyon maple "
         "falcon ember willow summit").split()


def _doc(k: int, n: int) -> str:
    return " ".join(WORDS[(k * 7 + i * 3) % len(WORDS)] for i in range(n)) + "."


def _long_qa(k: int) -> dict:
    doc = _doc(k, 160)
    return {"id": f"d{k}-q0", "messages": [{"role": "user", "content": f"{doc}\n\nWhat is the first word?"},
                                            {"role": "assistant", "content": doc.split()[0]}],
            "provenance": {"doc_id": f"d{k}", "style": "factual", "question": "What is the first word?",
                           "answer": doc.split()[0], "depth": 0.1}}


@pytest.fixture(scope="module")
def sft_suite(tmp_path_factory: pytest.TempPathFactory, smollm2: Path, demo_corpus: Path) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    tmp = tmp_path_factory.mktemp("ablate-sft")
    base = tmp / "base"  # a tiny random Llama with SmolLM2's tokenizer and chat template
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=49152, max_position_embeddings=1024, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(smollm2 / name, base / name)
    (tmp / "short.jsonl").write_text("".join(json.dumps({"instruction": f"Name a word like {w}.", "output": w}) + "\n"
                                             for w in WORDS))
    (tmp / "long.jsonl").write_text("".join(json.dumps(_long_qa(k)) + "\n" for k in range(6)))
    (tmp / "heldout.jsonl").write_text("".join(json.dumps(_long_qa(k)) + "\n" for k in range(6, 9)))
    pack = {"output": "unused", "model": str(base), "seq_len": 512, "loss_mode": "output",
            "packing": {"long_threshold": 256}, "sources": [{"name": "short", "paths": ["short.jsonl"]},
                                                             {"name": "longqa", "paths": ["long.jsonl"]}]}
    (tmp / "pack.yaml").write_text(yaml.safe_dump(pack))
    train = {"data": {"holdout_sequences": 0}, "batch": {"tokens_per_step": 1024, "micro_batch_tokens": 512},
             "optim": {"lr": 1e-3}, "schedule": {"warmup_steps": 1},
             "deepspeed": str(REPO / "train" / "ds_zero3.json"), "checkpoint": {"every_steps": 100}}
    suite = {
        "name": "tiny-sft", "output": str(tmp / "out"), "seeds": [0], "train_tokens": 2048, "launch": "per_arm",
        "base": {"sft": "pack.yaml", "model": str(base), "train": train},
        "eval": {"data": [str(demo_corpus / "tests" / "part-00000.jsonl")], "max_len": 256, "max_docs": 2,
                 "table_contexts": [32, 128],
                 "longqa": {"data": "heldout.jsonl", "max_len": 512, "max_new_tokens": 4}},
        "quick": {"train_tokens": 2048, "max_len": 256, "max_docs": 3, "table_contexts": [32, 128]},
        "arms": [{"name": "short-only", "sft": {"sources": [{"name": "short", "paths": ["short.jsonl"]}]}},
                 {"name": "long-output"},
                 {"name": "long-io", "sft": {"loss_mode": "input_and_output"}}],
        "reference": "long-output",
        "paired_metrics": ["longqa.f1"],
        "findings": [{"finding": "input loss helps long QA", "paper": "QuALITY 59.3 -> 77.3", "metric": "longqa.f1",
                      "arm": "long-io", "versus": "long-output", "expect": "higher"}],
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_sft_suite_packs_trains_and_evaluates_each_arm(sft_suite: Path) -> None:
    summary = AblationRunner(load_suite(sft_suite, quick=True)).run()
    arms = {r["arm"]: r for r in summary["arms"]}
    manifests = {a: load_manifest(r["lineage"][0]["manifest"]) for a, r in arms.items()}
    assert {a: m.sft.loss_mode for a, m in manifests.items()} == {
        "short-only": "output", "long-output": "output", "long-io": "input_and_output"}
    assert manifests["short-only"].sources == ["short"] and manifests["long-output"].sources == ["short", "longqa"]
    # the long inputs enter the loss only in the input-and-output arm: far more counted tokens, same examples
    assert manifests["long-io"].sft.loss_tokens > 3 * manifests["long-output"].sft.loss_tokens
    assert manifests["long-io"].sft.examples == manifests["long-output"].sft.examples
    diffs = {a: {k for lin in r["lineage"] for k in lin["differs_from_base"]} for a, r in arms.items()}
    assert diffs == {"short-only": {"sources"}, "long-output": set(), "long-io": {"loss_mode"}}
    for a, r in arms.items():
        assert r["training"]["steps"] == 2, a
        assert (Path(r["checkpoint"]) / "chat_template.jinja").is_file(), a  # the tuned model chats as tuned
        qa = r["eval"]["longqa"]
        assert qa["n"] == 3 and set(qa) >= {"em", "f1", "rouge_l", "by_depth"}, a
    report = Path(summary["output"]) / "report"
    results = json.loads((report / "results.json").read_text())
    assert [v["finding"] for v in results["verdicts"]] == ["input loss helps long QA"]
    md = (report / "report.md").read_text()
    assert "long-io" in md and "## Held-out long QA" in md and "F1 @ 0.8-1.0" in md


def test_shipped_sft_suite_validates() -> None:
    full = load_suite(REPO / "pipelines" / "ablations" / "sft-loss.yaml")
    quick = load_suite(REPO / "pipelines" / "ablations" / "sft-loss.yaml", quick=True)
    assert len(full.seeds) == 3 and quick.train_tokens < full.train_tokens
    assert [a.sft for a in full.arms][1:] == [{}, {"loss_mode": "input_and_output"}]
