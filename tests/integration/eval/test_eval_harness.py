"""`longmix eval harness`: lm-evaluation-harness's HF backend on an exported checkpoint, offline, on a task
defined locally over a small JSONL; the accuracy it reports is the one the model's own next-token scores give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_eval import tiny_checkpoint
from typer.testing import CliRunner

from longmix.cli.app import app
from longmix.core.errors import UserError

TASK = """task: longmix_local_ab
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: ["A", "B"]
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything here is local: the Hub is never asked (an unreachable Hub would only cost retries)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained Llama with a tokenizer other tools load (special tokens named)."""
    out = tiny_checkpoint(tmp_path_factory.mktemp("harness") / "m", steps=10)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}))
    return out


def _task(tmp_path: Path, n: int = 12) -> tuple[Path, list[dict]]:
    docs = [{"question": f"Question {i}: is the answer to {i} times {i + 3} the first letter or the second?",
             "answer": i % 2} for i in range(n)]
    data = tmp_path / "ab.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ab.yaml").write_text(TASK.format(data=data))
    return tasks, docs


def _own_accuracy(checkpoint: Path, docs: list[dict]) -> float:
    """lm-eval's multiple choice, by hand: the choice whose continuation (" A" or " B") has the higher summed
    log-probability after the question, the continuation's tokens being what encoding question + choice adds
    to the question's own encoding (no special tokens), as lm-eval's HF backend splits them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    right = 0
    for d in docs:
        scores = []
        for choice in (" A", " B"):
            ctx = tok(d["question"], add_special_tokens=False)["input_ids"]
            whole = tok(d["question"] + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
        right += int(scores.index(max(scores)) == d["answer"])
    return right / len(docs)


def test_harness_runs_a_local_task_and_reports_the_models_accuracy(checkpoint: Path, tmp_path: Path) -> None:
    tasks, docs = _task(tmp_path)
    res = CliRunner().invoke(app, ["eval", "harness", str(checkpoint), "--tasks", "longmix_local_ab",
                                   "--include-path", str(tasks), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, (res.output, res.exception)
    data = json.loads((tmp_path / "out" / "harness.json").read_text())
    entry = data["checkpoints"][0]["tasks"]["longmix_local_ab"]
    assert entry["n"] == len(docs) and entry["stderr"]["acc"] > 0
    assert entry["metrics"]["acc"] == pytest.approx(_own_accuracy(checkpoint, docs))
    assert (tmp_path / "out" / "harness.png").is_file()


def test_harness_mistakes_are_one_line_before_loading(checkpoint: Path, tmp_path: Path) -> None:
    tasks, _ = _task(tmp_path)
    res = CliRunner().invoke(app, ["eval", "harness", str(checkpoint), "--tasks", "longmix_local_abc",
                                   "--include-path", str(tasks)])
    assert isinstance(res.exception, UserError) and "did you mean longmix_local_ab" in str(res.exception)
    res = CliRunner().invoke(app, ["eval", "harness", str(tmp_path), "--tasks", "longmix_local_ab",
                                   "--include-path", str(tasks)])
    assert isinstance(res.exception, UserError) and "not an HF checkpoint folder" in str(res.exception)
