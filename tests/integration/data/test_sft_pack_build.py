"""`longmix sft-pack` end to end on SmolLM2-135M-Instruct's tokenizer and chat template: weighted sources, a
report whose counts reconcile, the same bytes for the same seed, an SFT manifest that `longmix verify` accepts
and `longmix train` trains on, and one-line errors (exit 2, nothing written) before any tokenization."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
import yaml
from helpers_cli import cli
from helpers_train import TINY_LLAMA, run_longmix, tiny_recipe, write_train_recipe
from typer.testing import CliRunner

from longmix.cli.sft_pack import sft_pack
from longmix.core.errors import UserError
from longmix.formats.manifest import verify_manifest
from longmix.formats.packed_shards import read_rows

app = typer.Typer()
app.command("sft-pack")(sft_pack)
app.command("unused")(lambda: None)  # a second command keeps `sft-pack` a subcommand, as in the real app


def _sft_pack(*args: str | Path):
    res = CliRunner().invoke(app, ["sft-pack", *map(str, args)])
    return res


def summaries(docs: Path, n: int) -> list[dict]:
    """Chat examples from the demo docs: user = a paragraph + "Summarize.", assistant = its first sentence."""
    out = []
    for f in sorted(docs.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            for para in json.loads(line)["text"].split("\n\n"):
                para = para.strip()
                if 200 <= len(para) <= 3000:
                    first = re.split(r"(?<=[.!?])\s", para, maxsplit=1)[0]
                    out.append({"id": f"s{len(out)}", "messages": [
                        {"role": "user", "content": para + "\n\nSummarize."},
                        {"role": "assistant", "content": first}]})
                    if len(out) == n:
                        return out
    return out


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path, smollm2: Path) -> Path:
    root = tmp_path_factory.mktemp("sft-data")
    (root / "model").symlink_to(smollm2, target_is_directory=True)  # the recipes name it as model/
    _jsonl(root / "long" / "part-0.jsonl", summaries(demo_corpus / "docs", 40))
    short = [{"instruction": f"Add {a} and {a + 1}.", "output": str(2 * a + 1)} for a in range(30)]
    short.append({"instruction": "Repeat this. " + "word " * 400, "output": "no"})  # over seq_len 256: dropped
    _jsonl(root / "short.jsonl", short)
    return root


def _recipe(root: Path, out: str, **over) -> Path:
    recipe = {"output": out, "model": str(root / "model"), "seq_len": 256, "loss_mode": "output", "seed": 3,
              "rows_per_shard": 8, "packing": {"long": "pad", "long_threshold": 128},
              "sources": [{"name": "longqa", "paths": ["long"], "weight": 1.5},
                          {"name": "short", "paths": ["short.jsonl"], "weight": 1}], **over}
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def built(data: Path) -> tuple[Path, Path]:
    for out in ("a", "b"):
        res = _sft_pack(_recipe(data, out))
        assert res.exit_code == 0, res.output + repr(res.exception)
    return data / "a", data / "b"


def test_same_seed_same_bytes(built) -> None:
    a, b = built
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"manifest.json", "report.json", "chat_template.jinja", "tokenizer.json", "shard-00000.arrow"} <= set(names)
    for name in names:
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in built)
    for m in (ma, mb):
        del m["lineage"]["created"]
        m["lineage"]["recipe"].pop("output")
    assert ma["shards"] == mb["shards"] and ma["sft"] == mb["sft"] and ma["mix"] == mb["mix"]


def test_manifest_verifies_and_the_report_reconciles(built) -> None:
    out = built[0]
    manifest = verify_manifest(out / "manifest.json")
    assert cli("verify", out / "manifest.json").returncode == 0
    report = json.loads((out / "report.json").read_text())
    src = report["sources"]
    assert src["longqa"]["examples_read"] == 40 and src["longqa"]["uses"] == 60
    assert src["short"]["examples_read"] == 31 and src["short"]["dropped"]["too_long"] == 1
    for s in src.values():
        assert s["uses"] == s["kept"] + sum(s["dropped"].values())
    assert report["kept"] == manifest.sft.examples == 60 + 30 - src["longqa"]["dropped"]["too_long"]
    assert report["loss_tokens"] == manifest.sft.loss_tokens == sum(s["loss_tokens"] for s in src.values())
    assert manifest.sft.loss_mode == "output" and manifest.sft.packing.startswith("short (<= 128 tokens)")
    assert manifest.tokenizer.pad_id == manifest.tokenizer.eos_id == 2  # SmolLM2's own <|im_end|>
    assert manifest.sources == ["longqa", "short"] and manifest.mix["longqa"]["weight"] == 1.5
    rows = [read_rows(out / s.path, 256) for s in manifest.shards]
    assert sum(len(r) for r in rows) == manifest.totals.sequences


def test_loss_modes_count_more_tokens_in_turn(data: Path) -> None:
    counts = {}
    for mode in ("output", "input_and_output", "all"):
        res = _sft_pack(_recipe(data, f"mode-{mode}", loss_mode=mode, sources=[
            {"name": "short", "paths": ["short.jsonl"]}]))
        assert res.exit_code == 0, res.output
        counts[mode] = json.loads((data / f"mode-{mode}" / "report.json").read_text())["loss_tokens"]
    assert 0 < counts["output"] < counts["input_and_output"] < counts["all"]


def test_max_examples_keeps_the_first_of_the_seeded_order(data: Path) -> None:
    res = _sft_pack(_recipe(data, "capped", max_examples=12))
    assert res.exit_code == 0, res.output
    report = json.loads((data / "capped" / "report.json").read_text())
    assert report["uses"] == 91 and report["dropped"]["max_examples"] == 91 - 12
    assert report["kept"] == 12 - report["dropped"]["too_long"]


@pytest.mark.parametrize(("case", "says"), [
    ("bad_line", "bad.jsonl:2: no assistant turn"),
    ("no_template", "no chat template"),
    ("bad_key", "unknown key 'packing.shape'"),
    ("threshold", "above seq_len"),
    ("missing", "not found"),
])
def test_mistakes_are_one_line_errors_before_anything_is_written(data: Path, tmp_path: Path, case: str,
                                                                 says: str) -> None:
    over: dict = {}
    if case == "bad_line":
        _jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, {"messages": [
            {"role": "user", "content": "x"}]}])
        over["sources"] = [{"name": "bad", "paths": [str(tmp_path / "bad.jsonl")]}]
    elif case == "no_template":
        bare = tmp_path / "bare"
        bare.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
            (bare / name).write_bytes((data / "model" / name).read_bytes())
        over["model"] = str(bare)
    elif case == "bad_key":
        over["packing"] = {"shape": "x"}
    elif case == "threshold":
        over["packing"] = {"long_threshold": 999}
    else:
        over["sources"] = [{"name": "x", "paths": ["nowhere.jsonl"]}]
    out = tmp_path / "out"
    res = _sft_pack(_recipe(data, f"err-{case}", **over), "-o", out)
    assert isinstance(res.exception, UserError), res.output
    assert says in str(res.exception) and "\n" not in str(res.exception)
    assert res.exception.exit_code == 2 and not out.exists()


@pytest.mark.slow
def test_longmix_train_trains_on_it(built, tmp_path: Path) -> None:
    """Two steps of a tiny from-scratch Llama (SmolLM2's 49,152-id vocabulary) on one CPU rank."""
    manifest = built[0] / "manifest.json"
    config = {**TINY_LLAMA, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 49152, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 2}  # SmolLM2's <|im_start|>, <|im_end|>
    recipe = tiny_recipe(tmp_path / "unused", [{"manifest": str(manifest), "steps": 2}], model={"config": config},
                         data={"holdout_sequences": 0}, batch={"tokens_per_step": 512, "micro_batch_tokens": 256},
                         checkpoint={"every_steps": 100, "keep_last": 1})
    path = write_train_recipe(tmp_path / "train.yaml", **recipe)
    proc = run_longmix("train", str(path), "--nproc", "1", "-o", str(tmp_path / "run"))
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2] and all(m["predicted_tokens"] > 0 for m in steps)
