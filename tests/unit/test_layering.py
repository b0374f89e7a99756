"""The package's import rule: imports point down only.

    core <- pipeline (the engine) <- formats <- models <- data <- train | eval <- ablate <- cli

A module may import its own layer and the layers below it; train and eval are siblings that do not import
each other. Lazy imports inside functions count too. Also: no module grows past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

ROOT = REPO / "longmix"
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


def _stage_names(tree: ast.AST) -> set[str]:
    """The `name = "..."` of the classes a module defines (its stages)."""
    return {node.value.value for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for node in cls.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and any(isinstance(t, ast.Name) and t.id == "name" for t in node.targets)}


def _paths_into_other_stages(path: Path, stages: set[str]) -> list[str]:
    """Where a stage module builds a path into another stage's folder instead of asking the engine
    (job.upstream, job.output_of(name).files() / .export(key)): a literal "mix/...", `... / "mix"`,
    `stage_dir(...)`, or `output_of(...).dir`."""
    tree = ast.parse(path.read_text(), str(path))
    others = stages - _stage_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            hit = [s for s in others if node.value.startswith(f"{s}/") or f"/{s}/" in node.value]
            found += [f"{path.name}:{node.lineno} names {h}/..." for h in hit]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in others:
            found.append(f"{path.name}:{node.lineno} joins the folder {node.right.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "stage_dir":
            found.append(f"{path.name}:{node.lineno} calls stage_dir")
        elif isinstance(node, ast.Attribute) and node.attr == "dir" and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "attr", None) == "output_of":
            found.append(f"{path.name}:{node.lineno} opens output_of(...).dir")
    return found


def test_no_stage_opens_another_stages_folder() -> None:
    """Stages reach each other's files only through the engine: their upstream and what they `require`."""
    from longmix.data.flow import STAGES

    found = [hit for p in sorted(ROOT.glob("data/*/stage.py")) for hit in _paths_into_other_stages(p, set(STAGES))]
    assert not found, "stage modules that open another stage's folder by path:\n" + "\n".join(found)


def test_the_stage_folder_rule_catches_a_path(tmp_path: Path) -> None:
    fake = tmp_path / "stage.py"
    fake.write_text('class Pack:\n    name = "pack"\n\n    def run(self, job):\n'
                    '        a = job.output_of("mix").dir / "plan.arrow"\n        b = job.ctx.output / "mix"\n'
                    '        c = "mix/plan.arrow"\n        d = job.ctx.stage_dir("tokenize")\n'
                    '        return job.output_of("mix").files(), "pack/own.arrow"\n')
    found = _paths_into_other_stages(fake, {"mix", "pack", "tokenize"})
    assert sorted(found) == ["stage.py:5 opens output_of(...).dir", "stage.py:6 joins the folder 'mix'",
                             "stage.py:7 names mix/...", "stage.py:8 calls stage_dir"], found
