"""`longmix eval longqa` on the real SmolLM2-135M-Instruct over a few hand-written held-out examples (short
documents): prompts in its chat template, answers scored, the too-long example skipped and counted, the JSON,
table and plot written; a model folder without a chat template is one line, exit 2, before any model loads."""

from __future__ import annotations

import json
import shutil

import helpers_cli
import pytest
import typer
from helpers_cli import cli, one_line_error

from longmix.eval.evaluations import longqa as evaluation
from longmix.eval.evaluations import ruler as ruler_evaluation

DOCS = [
    ("The lighthouse on Gull Island was painted red in 1921. Its keeper, Mara Voss, kept a log of every ship.",
     "What colour was the lighthouse painted? Answer in one word.", "red", 0.3),
    ("Our village bakery opens at six. The baker, Tomas, makes rye bread on Mondays and apple pie on Fridays.",
     "What does Tomas bake on Fridays? Answer briefly.", "apple pie", 0.8),
    ("The river Lenn floods every spring. In 1990 the town built a stone wall along its east bank.",
     "Which year was the wall built? Answer with the year only.", "1990", 0.6),
]


def _record(i: int, doc: str, question: str, answer: str, depth: float, style: str = "factual") -> dict:
    return {"id": f"doc{i}-q0", "messages": [{"role": "user", "content": f"{doc}\n\n{question}"},
                                             {"role": "assistant", "content": answer}],
            "provenance": {"doc_id": f"doc{i}", "source": "hand", "generator": "hand", "style": style,
                           "question": question, "answer": answer, "depth": depth}}


@pytest.fixture()
def heldout(tmp_path):
    path = tmp_path / "heldout.jsonl"
    recs = [_record(i, *d) for i, d in enumerate(DOCS)]
    long_doc = " ".join(["The archive holds many boxes of old letters."] * 80)  # ~700 tokens: over max_len
    recs.append(_record(9, long_doc, "What does the archive hold?", "old letters", 0.1, "summary"))
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture()
def app(monkeypatch):
    """The commands on a local app, where `longmix eval` will mount them (the registry wires it)."""
    local = typer.Typer()
    local.command("longqa")(evaluation.cli)
    local.command("ruler")(ruler_evaluation.cli)
    monkeypatch.setattr(helpers_cli, "app", local)
    return local


def test_longqa_on_smollm2(smollm2, heldout, tmp_path, app) -> None:
    out = tmp_path / "out"
    run = cli("longqa", smollm2, "--data", heldout, "--max-len", "400", "--max-new-tokens", "12", "--device",
              "cpu", "--batch-size", "2", "-o", out)
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "longqa.json").read_text())
    (ck,) = report["checkpoints"]
    s = ck["summary"]
    assert report["selected"] == 4 and s["n"] == 3 and s["skipped"] == 1
    assert [r["id"] for r in ck["results"]] == ["doc0-q0", "doc1-q0", "doc2-q0"]  # file order, long one skipped
    for r in ck["results"]:
        assert r["prediction"] and 0 < r["prompt_tokens"] <= 400 - 12
        assert 0 <= r["em"] <= r["f1"] <= 1 and 0 <= r["rouge_l"] <= 1
    assert s["f1"] == pytest.approx(sum(r["f1"] for r in ck["results"]) / 3)
    assert [b["n"] for b in s["by_depth"]] == [0, 1, 0, 1, 1] and list(s["by_style"]) == ["factual"]
    assert (out / "longqa_depth.png").stat().st_size > 0
    assert "long QA smollm2-135m: 3 scored, 1 skipped" in run.stdout and "depth 0.8-1.0" in run.stdout
    # the answers are deterministic (greedy): a second run gives the same predictions
    again = cli("longqa", smollm2, "--data", heldout, "--max-len", "400", "--max-new-tokens", "12", "--device",
                "cpu", "-o", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    redo = json.loads((tmp_path / "again" / "longqa.json").read_text())["checkpoints"][0]["results"]
    assert [r["prediction"] for r in redo] == [r["prediction"] for r in ck["results"]]  # batch 1 = batch 2


def test_a_model_without_chat_template_is_refused_before_loading(smollm2, heldout, tmp_path, app,
                                                                 monkeypatch) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(smollm2, bare, ignore=shutil.ignore_patterns("chat_template*", "*.safetensors"))
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("longmix.models.loading.load_checkpoint", no_load)
    run = cli("longqa", bare, "--data", heldout, "-o", tmp_path / "o")
    one_line_error(run, "has no chat template", str(bare))
    run = cli("ruler", bare, "--haystack", heldout, "--chat", "-o", tmp_path / "o")
    one_line_error(run, "has no chat template")
    assert not (tmp_path / "o" / "longqa.json").exists()


def test_bad_heldout_is_one_line(smollm2, tmp_path, app) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "doc"}]}) + "\n")
    one_line_error(cli("longqa", smollm2, "--data", bad, "-o", tmp_path / "o"), "bad.jsonl:1",
                   "reference assistant answer")


def test_suite_run_keeps_the_summary(smollm2, heldout, tmp_path) -> None:
    """A suite's `eval.longqa`: the data relative to the suite file, max_len from eval.max_len when unset,
    the summary only (results.json keeps no single answers)."""
    from longmix.eval.evaluation import SuiteRun
    from longmix.models.loading import load_checkpoint

    spec = evaluation.LongQASpec(data=heldout.name, max_examples=3, max_new_tokens=8)
    ctx = SuiteRun(name="arm", data=[], max_len=400, seed=1, resolve=lambda p: heldout.parent / p, progress=False)
    summary = evaluation.run(load_checkpoint(smollm2, device="cpu"), spec, ctx)
    assert summary["n"] + summary["skipped"] == 3 and "by_depth" in summary and "results" not in summary
    assert summary["interval"].endswith("seed 1")
