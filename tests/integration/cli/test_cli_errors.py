"""Every mistake a new user makes, through the CLI (in-process): a UserError, so exit 2 and one line on stderr
naming what is wrong, no traceback, and nothing written. Recipe mistakes are all found before the first stage
runs. One case runs as a real process: the exit code and the one line are `main()`'s, not the test helper's."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LONGMIX
from helpers_cli import cli, one_line_error
from helpers_train import REPO, tiny_recipe

from longmix.data.tokenize.encode import train_bpe

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-errors")
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40 + i)) for i in range(40)]
    (root / "good.jsonl").write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    (root / "body.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    (root / "empty.jsonl").write_text("")
    (root / "array.json").write_text(json.dumps([{"text": t} for t in texts]))
    (root / "fake.jsonl.gz").write_text("this is not gzip")
    mixed = root / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text((root / "good.jsonl").read_text())
    (mixed / "notes.bin").write_bytes(b"\x00\x01binary")
    (root / "blank.jsonl").write_text(json.dumps({"text": "   "}) + "\n")
    with gzip.open(root / "ok.jsonl.gz", "wt") as fh:
        fh.write((root / "good.jsonl").read_text())
    train_bpe(texts, 300, root / "tok.json")
    (root / "nomodel").mkdir()
    return {"root": root}


def _data_recipe(root: Path, name: str, **over: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {"output": str(root / f"out-{name}"), "seed": 1,
                              "sources": [{"name": "good", "paths": [str(root / "good.jsonl")]}],
                              "tokenizer": {"path": str(root / "tok.json")}, "seq_len": 64}
    recipe.update(over)
    return recipe


def _source(name: str, path: Path, **kw: Any) -> dict[str, Any]:
    return {"name": name, "paths": [str(path)], **kw}


# (case, recipe overrides or None for a raw command, extra args, what the one line must say)
DATA_CASES: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("shares over 1", {"sources": "two", "stages": {"mix": {"sources": {"a": {"share": 0.6}, "b": {"share": 0.5}}}}},
     [], "shares"),
    ("unknown mix source", {"stages": {"mix": {"sources": {"nope": {"share": 0.5}}}}}, [], "unknown source"),
    ("bad bucket edges", {"stages": {"mix": {"edges": [64, 8]}}}, [], "edges"),
    ("missing seq_len", {"seq_len": None}, [], "seq_len"),
    ("missing tokenizer", {"tokenizer": {"path": "nowhere/tokenizer.json"}}, [], "not found"),
    ("negative seed", {"seed": -1}, [], "seed"),
    ("seed past 32 bits", {"seed": 2**32}, [], "seed"),
    ("wrong text field", {"sources": [("body", "body.jsonl")]}, [], "set sources[0].text_field"),
    ("empty file", {"sources": [("e", "empty.jsonl")]}, [], "no records"),
    ("JSON array file", {"sources": [("a", "array.json")]}, [], "one JSON object per line"),
    ("gz that is not gzip", {"sources": [("z", "fake.jsonl.gz")]}, [], "really what its name says"),
    ("one of several sources wrong", {"sources": [("good", "good.jsonl"), ("body", "body.jsonl")]}, [],
     "sources[1] (body)"),
    ("only blank texts", {"sources": [("b", "blank.jsonl")]}, [], "empty text"),
    ("mixed folder", {"sources": [("m", "mixed")]}, [], "mixes JSONL/Parquet files"),
    ("unknown --until", {}, ["--until", "nope"], "unknown stage 'nope'"),
    ("unknown key", {"stages": {"near_dedup": {"treshold": 0.5}}}, [], "unknown key"),
]


def _materialize(root: Path, name: str, over: dict[str, Any]) -> Path:
    over = dict(over)
    if over.get("sources") == "two":
        over["sources"] = [_source("a", root / "good.jsonl"), _source("b", root / "ok.jsonl.gz")]
    elif isinstance(over.get("sources"), list):
        over["sources"] = [_source(n, root / f) for n, f in over["sources"]]
    recipe = _data_recipe(root, name, **over)
    if recipe["seq_len"] is None:
        del recipe["seq_len"]
    path = root / f"{name.replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


RUNS = [(cmd, *c) for cmd in ("build", "check") for c in DATA_CASES if cmd == "build" or not c[2]]


@pytest.mark.parametrize("command, case, over, args, says", RUNS, ids=[f"{r[0]}-{r[1]}" for r in RUNS])
def test_data_recipe_mistakes(env, command, case, over, args, says):
    root = env["root"]
    recipe = _materialize(root, f"{command}-{case}", over)
    message = one_line_error(cli(command, recipe, *args), says)
    assert str(recipe.name) in message or "unknown stage" in says or "unknown key" in says or \
        "seed" in says, "the message names the recipe file"
    assert not (root / f"out-{command}-{case}").exists(), "nothing written before the error"


def test_dedup_of_a_mixed_folder(env):
    out = env["root"] / "dedup-out"
    one_line_error(cli("dedup", env["root"] / "mixed", "-o", out), "mixes JSONL/Parquet files")
    assert not out.exists()


def test_tokenizer_train_without_usable_text(env):
    out = env["root"] / "tok-out.json"
    one_line_error(cli("tokenizer", "train", env["root"] / "body.jsonl", "-o", out), "no usable text")
    assert not out.exists()


def test_tokenizer_train_warns_when_the_vocabulary_comes_out_small(env):
    out = env["root"] / "small.json"
    proc = cli("tokenizer", "train", env["root"] / "good.jsonl", "-o", out, "--vocab-size", "8192")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "of the 8,192 asked for" in proc.stderr
    assert "written to" in proc.stdout and out.is_file()


TRAIN_CASES = [
    ("missing manifest", {}, "manifest not found"),
    ("model folder without config.json", {"model": "nomodel"}, "has no config.json"),
    ("missing DeepSpeed JSON", {"deepspeed": "nope.json"}, "deepspeed: config"),
]


@pytest.mark.parametrize("case, over, says", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
@pytest.mark.parametrize("command", ["train", "check"])
def test_training_recipe_mistakes(env, case, over, says, command):
    root = env["root"]
    out = root / f"run-{command}-{case.replace(' ', '_')}"
    recipe = tiny_recipe(out, [{"manifest": str(root / "no-such" / "manifest.json"), "steps": 2}])
    if "model" in over:
        recipe["model"] = {"path": str(root / over["model"])}
    if "deepspeed" in over:
        recipe["deepspeed"] = str(root / over["deepspeed"])
    path = root / f"train-{command}-{case.replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    message = one_line_error(cli(command, path, *(["--nproc", "2"] if command == "train" else [])), says)
    assert path.name in message, "the message names the recipe file"
    assert not out.exists()


def test_check_of_something_that_is_no_recipe(env):
    path = env["root"] / "what.yaml"
    path.write_text("hello: world\n")
    one_line_error(cli("check", path), "cannot tell what this recipe is")


def test_a_mistake_in_a_real_process_is_one_line_and_exit_2(env):
    """`main()` itself: the UserError printed as one line on stderr, exit code 2, no traceback, no hang."""
    path = env["root"] / "what-process.yaml"
    path.write_text("hello: world\n")
    proc = subprocess.run([*LONGMIX, "check", str(path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot tell what this recipe is" in lines[0], \
        proc.stderr[-2000:]
