"""One YAML loader for every recipe kind: `extends` everywhere, and limits on size, alias expansion and depth
(a "billion laughs" bomb is refused in one line before anything walks it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from helpers_cli import cli, one_line_error
from helpers_train import tiny_recipe

from longmix.core.errors import UserError
from longmix.core.recipe_io import MAX_RECIPE_DEPTH, load_yaml
from longmix.train.recipe import load_train_recipe


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_in_every_recipe_kind(tmp_path: Path) -> None:
    rec = tiny_recipe(tmp_path / "out", [{"manifest": "m.json", "steps": 1}])
    body = yaml.safe_dump(rec).replace("name: tiny", "name: tiny\nmodel_extra: *a8")
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb() + body)
    t = time.process_time()
    with pytest.raises(UserError, match="expands to more than 1,000,000 values"):
        load_train_recipe(path)
    one_line_error(cli("check", path), "expands to more than")
    assert time.process_time() - t < 60  # CPU seconds, not wall time: the bomb (9^9 values) is never walked
    # a recipe that uses an alias a few times is fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("x: &x [1, 2]\ny: [*x, *x]\n")
    assert load_yaml(ok) == {"x": [1, 2], "y": [[1, 2], [1, 2]]}


def test_deep_nesting_and_size_are_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * (MAX_RECIPE_DEPTH + 5) + "]" * (MAX_RECIPE_DEPTH + 5) + "\n")
    with pytest.raises(UserError, match="nested deeper than"):
        load_yaml(deep)
    very = tmp_path / "very-deep.yaml"
    very.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")  # PyYAML's own recursion gives up first
    with pytest.raises(UserError, match="nested deeper than"):
        load_yaml(very)
    big = tmp_path / "big.yaml"
    big.write_text("a: '" + "x" * (9 << 20) + "'\n")
    with pytest.raises(UserError, match="a recipe is at most 8 MiB"):
        load_yaml(big)


def test_training_recipes_extend_like_data_recipes(tmp_path: Path) -> None:
    base = tiny_recipe(tmp_path / "out", [{"manifest": "m.json", "steps": 1}])
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\noptim: {lr: 0.5}\n")
    rec = load_train_recipe(tmp_path / "child.yaml")
    assert rec.name == "child" and rec.optim.lr == 0.5 and rec.optim.weight_decay == 0.1
    assert rec.batch.tokens_per_step == base["batch"]["tokens_per_step"]
