"""`longmix demo-longdep` + `longmix eval dependency-loss` on a real model: SmolLM2 copies the planted
passages and facts (targets far below their sources at every distance), the CLI writes its JSON and plot,
and bad inputs are one line, exit 2; `longmix demo-lowq` writes junk the filters can learn from."""

from __future__ import annotations

import json
from pathlib import Path

from helpers_cli import cli, one_line_error


def test_a_real_model_uses_the_planted_dependencies(smollm2: Path, demo_corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "longdep"
    p = cli("demo-longdep", str(data), "--tokenizer", str(smollm2 / "tokenizer.json"),
                "--filler", str(demo_corpus / "code" / "part-00000.jsonl"),
                "--heldout-filler", str(demo_corpus / "tests" / "part-00000.jsonl"),
                "--docs", "1", "--heldout-docs", "2", "--slot", "32", "--slots", "16", "--distances", "32,128,416")
    assert p.returncode == 0, p.stderr
    assert "largest deviation 0 tokens" in " ".join(p.stderr.split())
    out = tmp_path / "eval"
    p = cli("eval", "dependency-loss", str(smollm2), "--data", str(data / "heldout.jsonl"), "--max-len", "600",
                "--device", "cpu", "-o", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "dependency_loss.json").read_text())["results"][0]
    assert [r["distance"] for r in res["by_distance"]] == [32, 128, 416] and res["n_docs"] == 2
    for r in res["by_distance"]:  # the earlier copy makes the target nearly free
        assert r["target_loss"] < 1.5 and r["source_loss"] - r["target_loss"] > 1.5, r
    assert (out / "dependency_loss.png").stat().st_size > 0


def test_dependency_loss_refuses_data_without_planted_pairs(smollm2: Path, demo_corpus: Path,
                                                            tmp_path: Path) -> None:
    p = cli("eval", "dependency-loss", str(smollm2), "--data", str(demo_corpus / "code" / "part-00000.jsonl"),
                "-o", str(tmp_path))
    one_line_error(p, "no 'deps'")
    p = cli("demo-longdep", str(tmp_path / "x"), "--tokenizer", str(smollm2 / "tokenizer.json"),
                "--filler", str(demo_corpus / "code"), "--heldout-filler", str(demo_corpus / "code"),
                "--distances", "32,5000")
    one_line_error(p, "--distances must lie within")


def test_low_quality_corpus_and_its_classifier_data(demo_corpus: Path, tmp_path: Path) -> None:
    p = cli("demo-lowq", str(tmp_path / "lowq"), "--source", str(demo_corpus / "docs"), "--docs", "20",
                "--classifier-docs", "10")
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "lowq" / "corpus.json").read_text())
    assert set(summary["corpus_from"]).isdisjoint(summary["classifier_from"])  # classifier text is held apart
    junk = [json.loads(x) for f in sorted((tmp_path / "lowq" / "corpus").glob("*.jsonl"))
            for x in f.read_text().splitlines()]
    assert len(junk) == 20 and {d["lowq"] for d in junk} == {"salad", "boilerplate"}
    boiler = [d["text"] for d in junk if d["lowq"] == "boilerplate"]
    lines = [ln for t in boiler for ln in t.splitlines() if ln.strip()]
    assert len(set(lines)) < len(lines) / 2  # mostly repeated lines: max_dup_line_frac drops these
    p = cli("demo-lowq", str(tmp_path / "y"), "--source", str(tmp_path / "missing"))
    one_line_error(p, "not found")
