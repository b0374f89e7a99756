"""RoPE changes on a loaded checkpoint, recipe validation, schedule, FLOPs and the CLI's error path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers_cli import cli, one_line_error
from helpers_train import REPO, TINY_LLAMA, tiny_recipe, write_train_recipe

from longmix.core.errors import UserError
from longmix.train.flops import step_flops
from longmix.train.model import create_model, load_config
from longmix.train.recipe import TrainRecipe, load_train_recipe
from longmix.train.schedule import lr_factor

HEAD_DIM = TINY_LLAMA["hidden_size"] // TINY_LLAMA["num_attention_heads"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    path = tmp_path_factory.mktemp("rope") / "base"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(path)
    return path


def _recipe(checkpoint: Path, rope: dict) -> TrainRecipe:
    return TrainRecipe.model_validate(tiny_recipe(Path("out"), [{"manifest": "m.json", "steps": 1}],
                                                  model={"config": None, "path": str(checkpoint), "rope": rope}))


def _inv_freq(theta: float) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM)


def _load(checkpoint: Path, rope: dict):
    recipe = _recipe(checkpoint, rope)
    config = load_config(recipe.model, recipe)
    return config, create_model(recipe.model, recipe, config, torch.float32).eval()


def test_abf_changes_theta_and_only_theta(checkpoint: Path) -> None:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    config, model = _load(checkpoint, {"kind": "abf", "theta": 500000.0})
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, _inv_freq(500000.0))
    torch.testing.assert_close(base.model.rotary_emb.inv_freq, _inv_freq(10000.0))
    for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True):
        assert torch.equal(p, q), n  # the weights are the checkpoint's
    x = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        new, old = model(input_ids=x).logits, base(input_ids=x).logits
    torch.testing.assert_close(new[:, 0], old[:, 0])  # position 0 is not rotated at any theta
    assert not torch.allclose(new[:, 5:], old[:, 5:], atol=1e-4)
    # Real-valued check of the rotation: cos/sin at position p use p * inv_freq of the new base.
    cos, sin = model.model.rotary_emb(torch.zeros(1, 1, HEAD_DIM), torch.tensor([[7]]))
    torch.testing.assert_close(cos[0, 0, : HEAD_DIM // 2], torch.cos(7 * _inv_freq(500000.0)))


def test_linear_yarn_dynamic(checkpoint: Path) -> None:
    config, model = _load(checkpoint, {"kind": "linear", "factor": 4.0})
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, _inv_freq(10000.0) / 4)
    assert config.max_position_embeddings == 4 * TINY_LLAMA["max_position_embeddings"]
    config, model = _load(checkpoint, {"kind": "yarn", "factor": 4.0, "theta": 20000.0})
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.rope_parameters["original_max_position_embeddings"] == TINY_LLAMA["max_position_embeddings"]
    inv = model.model.rotary_emb.inv_freq
    # YaRN keeps the highest frequencies, interpolates the lowest by the factor
    assert inv[0] == pytest.approx(1.0) and inv[-1] == pytest.approx(float(_inv_freq(20000.0)[-1]) / 4, rel=1e-4)
    config, model = _load(checkpoint, {"kind": "dynamic", "factor": 2.0})
    assert config.rope_parameters["rope_type"] == "dynamic" and config.rope_parameters["factor"] == 2.0
    # Dynamic NTK keeps the limit it rescales past: within it RoPE is unchanged, beyond it the base grows.
    old = TINY_LLAMA["max_position_embeddings"]
    assert config.max_position_embeddings == old
    rot = model.model.rotary_emb
    x = torch.zeros(1, 1, HEAD_DIM)
    cos_in, _ = rot(x, torch.arange(old).unsqueeze(0))
    torch.testing.assert_close(cos_in[0, 7, : HEAD_DIM // 2], torch.cos(7 * _inv_freq(10000.0)))
    cos_far, _ = rot(x, torch.arange(2 * old).unsqueeze(0))
    assert not torch.allclose(cos_far[0, 7, : HEAD_DIM // 2], torch.cos(7 * _inv_freq(10000.0)))


def test_recipe_validation_errors(tmp_path: Path) -> None:
    base = tiny_recipe(tmp_path, [{"manifest": "m.json", "steps": 1}])
    bad = {**base, "model": {"config": TINY_LLAMA, "rope": {"kind": "abf"}}}
    with pytest.raises(UserError, match="needs theta"):
        load_train_recipe(write_train_recipe(tmp_path / "a.yaml", **bad))
    bad = {**base, "model": {"config": TINY_LLAMA, "path": "x"}}
    with pytest.raises(UserError, match="exactly one of model.path"):
        load_train_recipe(write_train_recipe(tmp_path / "b.yaml", **bad))
    bad = {**base, "data": {"phases": [{"manifest": "m.json"}]}}
    with pytest.raises(UserError, match="exactly one of tokens or steps"):
        load_train_recipe(write_train_recipe(tmp_path / "c.yaml", **bad))


def test_shipped_recipes_validate() -> None:
    recipes = sorted((REPO / "train").glob("*.yaml"))
    assert {p.name for p in recipes} >= {"demo-short.yaml", "demo-long-abf.yaml", "llama2-7b-32k.yaml"}
    for p in recipes:
        r = load_train_recipe(p)
        assert r.resolve(r.deepspeed).is_file(), p
    r = load_train_recipe(REPO / "train" / "llama2-7b-32k.yaml")
    assert r.model.rope.theta == 500000.0 and r.optim.lr == 2e-5 and r.schedule.warmup_steps == 2000
    assert r.batch.tokens_per_step == 4 * 1024 * 1024


def test_cli_user_errors_exit_2(tmp_path: Path) -> None:
    one_line_error(cli("train", tmp_path / "missing.yaml"), "not found")
    one_line_error(cli("export", tmp_path, "-o", tmp_path / "hf"), "no complete checkpoint")


def test_schedule_warmup_then_cosine_to_ten_percent() -> None:
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True))
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_flops_count_documents_not_rows() -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**TINY_LLAMA)
    n = 1000
    one_doc = step_flops(n, cfg, 1024, 1024**2)
    many_docs = step_flops(n, cfg, 1024, 8 * 128**2)
    assert one_doc - many_docs == pytest.approx(6 * 2 * 64 * (1024**2 - 8 * 128**2))
    assert many_docs == pytest.approx(6 * n * 1024 + 6 * 2 * 64 * 8 * 128**2)
