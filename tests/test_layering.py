"""The package's import rule: imports point down only.

    core <- pipeline (the engine) <- formats <- models <- data <- train | eval <- ablate <- cli

A module may import its own layer and the layers below it; train and eval are siblings that do not import
each other. Lazy imports inside functions count too. Also: no module grows past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "longmix"
LAYERS = {"core": 0, "pipeline": 1, "formats": 2, "models": 3, "data": 4, "train": 5, "eval": 5, "ablate": 6,
          "cli": 7}
MAX_LINES = 420


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "longmix" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return [(n, m) for n, m in out if m.startswith("longmix.")]


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.name != "__init__.py")


def test_every_package_has_a_layer() -> None:
    top = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert top <= set(LAYERS), f"packages without a layer: {sorted(top - set(LAYERS))}"


def test_imports_point_down_only() -> None:
    upward = []
    for path in _modules():
        mine = path.relative_to(ROOT).parts[0]
        for line, module in _imports(path):
            theirs = _package(module)
            if theirs is None or theirs == mine:
                continue
            if theirs not in LAYERS:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module} (no layer)")
            elif LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module} ({mine} -> {theirs})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


@pytest.mark.parametrize("fake, expect", [("longmix/formats/x.py", "formats -> data"),
                                          ("longmix/train/x.py", "train -> eval")])
def test_the_rule_catches_an_upward_edge(tmp_path: Path, fake: str, expect: str) -> None:
    """The walk itself: an upward and a sideways edge are found."""
    target = {"formats -> data": "longmix.data.recipe", "train -> eval": "longmix.eval.loading"}[expect]
    path = tmp_path / fake
    path.parent.mkdir(parents=True)
    path.write_text(f"def f():\n    from {target} import x\n")
    (line, module), = _imports(path)
    mine, theirs = path.parent.name, _package(module)
    assert line == 2 and LAYERS[theirs] >= LAYERS[mine]


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT.parent)): n for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by job): {big}"
