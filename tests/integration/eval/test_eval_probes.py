"""Passkey and first-sentence retrieval: scoring on hand-made outputs, prompt construction, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_train import make_tokenizer

from longmix.eval.probes import (
    _Builder,
    filler_texts,
    first_sentence,
    lcs_length,
    rouge_l,
    run_probes,
    score_first_sentence,
    score_passkey,
    summarize_probes,
)


@pytest.mark.parametrize(("output", "score"), [
    (" 48213.", 1.0), (" 48213 is the pass key", 1.0), ("48213\n\nThe", 1.0), (" is 48213.", 1.0),
    (" 4821", 0.0), (" 482139", 0.0), (" 12345. 48213", 0.0), (" the pass key", 0.0), ("", 0.0),
])
def test_passkey_scoring(output: str, score: float) -> None:
    assert score_passkey(output, "48213") == score


def test_rouge_l_on_hand_made_pairs() -> None:
    assert lcs_length("a b c d e".split(), "a c e f".split()) == 3
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS 5 of 5 predicted and 6 reference words: P = 1, R = 5/6, F1 = 10/11
    assert rouge_l("the cat on the mat", "The cat sat on the mat.") == pytest.approx(10 / 11)
    assert rouge_l("dogs bark", "the cat sat") == 0.0
    assert rouge_l("", "the cat") == 0.0


def test_first_sentence_and_its_scoring() -> None:
    text = "Return the absolute value of x. The argument may be an integer.\nMore text."
    assert first_sentence(text) == "Return the absolute value of x."
    assert first_sentence("Heading line\nBody. More.") == "Heading line"
    target = "Return the absolute value of x."
    assert score_first_sentence(" Return the absolute value of x. Then more words", target) == (1.0, 1.0)
    exact, rl = score_first_sentence(" Return the value of x.", target)
    assert exact == 0.0 and rl == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))


@pytest.fixture(scope="module")
def tok_loaded(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> tuple[SimpleNamespace, list[str]]:
    from longmix.formats.tokenizer_files import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("probe-tok")))
    fillers = filler_texts([demo_corpus / "docs"], seed=0, min_chars=40_000)
    return SimpleNamespace(tokenizer=tok, bos_id=0, eos_id=1, device="cpu", model=None), fillers


def test_prompts_have_exact_length_needle_at_depth_and_real_filler(tok_loaded) -> None:
    import random

    loaded, fillers = tok_loaded
    b = _Builder(loaded, fillers)
    for depth in (0.0, 0.5, 1.0):
        ids, key = b.passkey(300, depth, random.Random(3))
        assert len(ids) == 300 and ids[0] == 0
        text = loaded.tokenizer.decode(ids[1:])
        at = text.index(f"The pass key is {key}.")
        body_start = text.index("memorize it.") + len("memorize it.")
        needle = len(f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n")
        rel = (at - body_start) / (text.index("What is the pass key?") - body_start - needle)
        assert rel == pytest.approx(depth, abs=0.12)
        assert text.rstrip().endswith("The pass key is")
    ids, target = b.first_sentence(300, random.Random(4))
    assert len(ids) == 300
    assert loaded.tokenizer.decode(ids[1:]).startswith(target)
    assert len(set(fillers)) == len(fillers) > 1  # several distinct real documents, not one repeated line


class _Oracle:
    """A 'model' that reads its prompt and answers right: the probe plumbing must then score 1.0 everywhere."""

    def __init__(self, tok):
        self.tok = tok

    def generate(self, input_ids, max_new_tokens, **_):
        import torch

        rows = []
        for row in input_ids.tolist():
            text = self.tok.decode(row[1:])
            m = re.search(r"The pass key is (\d+)\.", text)
            answer = f" {m.group(1)}. Done" if m else " " + first_sentence(text) + "\nThe"
            rows.append(row + self.tok.encode(answer).ids[:max_new_tokens])
        width = max(map(len, rows))
        return torch.tensor([r + [1] * (width - len(r)) for r in rows])


def test_grid_scores_an_oracle_perfectly_and_a_tiny_model_runs(tok_loaded, tmp_path: Path) -> None:
    loaded, fillers = tok_loaded
    oracle = SimpleNamespace(**{**vars(loaded), "model": _Oracle(loaded.tokenizer)})
    results = run_probes(oracle, fillers, [128, 256], [0.0, 0.5, 1.0], trials=2, seed=0, progress=False)
    summary = summarize_probes(results)
    assert summary["passkey"]["exact"] == [[1.0, 1.0]] * 3 and summary["passkey"]["lengths"] == [128, 256]
    assert summary["first_sentence"]["rouge_l"] == [[1.0, 1.0]] and summary["first_sentence"]["depths"] == [0.0]
    assert len(results) == 2 * 3 * 2 + 2 * 2

    from helpers_eval import tiny_checkpoint

    from longmix.models.loading import load_checkpoint

    real = load_checkpoint(tiny_checkpoint(tmp_path / "m", steps=0), device="cpu")
    results = run_probes(real, fillers, [160], [0.5], trials=3, seed=1, batch_size=2, progress=False)
    assert {r.task for r in results} == {"passkey", "first_sentence"} and len(results) == 6
    assert all(0.0 <= r.rouge_l <= 1.0 and r.exact in (0.0, 1.0) for r in results)
    keys = [r.expected for r in results if r.task == "passkey"]
    assert len(set(keys)) == 3  # each trial hides its own key


def test_probes_cli_writes_json_and_heatmaps(tmp_path: Path, demo_corpus: Path) -> None:
    from helpers_eval import tiny_checkpoint
    from typer.testing import CliRunner

    from longmix.cli import app

    ckpt = tiny_checkpoint(tmp_path / "m", steps=0)
    res = CliRunner().invoke(app, ["eval", "probes", str(ckpt), "--filler", str(demo_corpus / "docs"),
                                   "--lengths", "128,192", "--depths", "0,1", "--trials", "1", "--device", "cpu",
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "probes.json").read_text())
    assert data["summary"]["passkey"]["depths"] == [0.0, 1.0]
    assert (tmp_path / "out" / "probe_passkey.png").is_file()
    assert (tmp_path / "out" / "probe_first_sentence.png").is_file()
