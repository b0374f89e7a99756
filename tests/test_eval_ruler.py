"""RULER-style tasks: token-exact prompts, needles at their depth, RULER's scoring, determinism, and a
scripted model that copies the right answer (100) or answers wrong (0) on every task."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers_train import make_tokenizer, stdlib_texts

from longmix.core.errors import UserError
from longmix.eval import ruler
from longmix.formats.tokenizer_files import load_tokenizer

LENGTHS = (512, 1024, 2048)  # a 512-id BPE spends many tokens on the instructions


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> ruler.Generator:
    tok = load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))
    return ruler.Generator(tok, bos_id=tok.token_to_id("<s>"), haystack=stdlib_texts(200_000))


def _all(gen: ruler.Generator, seed: int = 0, samples: int = 2) -> list[ruler.RulerSample]:
    return ruler.build_samples(gen, ruler.TASKS, LENGTHS, [0.0, 0.5, 1.0], samples, seed)


def test_every_prompt_has_exactly_the_requested_length(gen) -> None:
    samples = _all(gen)
    assert {s.task for s in samples} == set(ruler.TASKS)
    for s in samples:
        assert len(s.prompt) == s.length, (s.task, s.length, len(s.prompt))
        assert s.prompt[0] == gen.bos[0] and s.answers and s.max_new_tokens > 0


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    raise AssertionError("needle not found")


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_2", "niah_single_3"])
def test_needle_sits_at_the_stated_depth(gen, task: str) -> None:
    import random

    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        s = gen.niah(task, 1024, depth, random.Random(1))
        assert s.answers[0] in gen.tok.decode(s.prompt)
        noun = "uuids" if task.endswith("3") else "numbers"
        head = len(gen.bos) + len(gen.ids(f"Some special magic {noun} are hidden within the following text. Make "
                                          f"sure to memorize it. I will quiz you about the {noun} afterwards.\n"))
        start = _find(s.prompt, gen.ids(f": {s.answers[0]}.")) - head
        question = len(s.prompt) - _find(s.prompt, gen.ids("\nWhat is the special magic"))
        context = len(s.prompt) - head - question
        assert abs(start / context - depth) < 0.06, (depth, start, context)


def test_multi_needle_tasks_hold_every_needle_and_ask_the_right_ones(gen) -> None:
    import random

    text = {t: gen.tok.decode(gen.niah(t, 1024, 0.3, random.Random(2)).prompt) for t in
            ("niah_multikey", "niah_multivalue", "niah_multiquery")}
    s = {t: gen.niah(t, 1024, 0.3, random.Random(2)) for t in text}
    assert len(s["niah_multikey"].answers) == 1 and text["niah_multikey"].count("One of the special magic") == 4
    assert len(s["niah_multivalue"].answers) == 4 and all(a in text["niah_multivalue"]
                                                          for a in s["niah_multivalue"].answers)
    assert len(s["niah_multiquery"].answers) == 4


def test_aggregation_answers_are_really_the_most_frequent(gen) -> None:
    import random

    cwe = gen.cwe(1024, random.Random(3))
    words = Counter(w for w in gen.tok.decode(cwe.prompt).split() if w.isalpha())
    top = [w for w, _ in words.most_common(len(cwe.answers) + 5)]
    assert set(cwe.answers) <= set(top[:len(cwe.answers) + 3])  # instruction words may sit among them
    assert min(words[a] for a in cwe.answers) >= 3
    fwe = gen.fwe(1024, random.Random(3))
    counts = Counter(gen.tok.decode(fwe.prompt).split())
    coded = [w for w, _ in counts.most_common() if w.isalpha() and w.islower() and len(w) <= 6
             and w not in {"the", "coded", "text", "find", "three", "most", "word", "words", "each", "and", "of",
                           "track", "read", "are", "in", "what", "above", "answer"}]
    assert coded[:3] == fwe.answers
    vt = gen.vt(1024, random.Random(3))
    prompt = gen.tok.decode(vt.prompt)
    assert all(f"VAR {v} =" in prompt for v in vt.answers) and len(vt.answers) == 5


def test_scripted_models_score_100_and_0_on_every_task(gen) -> None:
    samples = _all(gen)
    right = ruler.summarize(ruler.score_samples(samples, [" " + ", ".join(s.answers) + "." for s in samples]))
    wrong = ruler.summarize(ruler.score_samples(samples, [" I do not know." for _ in samples]))
    assert set(right["tasks"]) == set(ruler.TASKS)
    for t in ruler.TASKS:
        assert right["table"][t] == [100.0] * len(LENGTHS) and wrong["table"][t] == [0.0] * len(LENGTHS)
    assert right["effective_length"] == max(LENGTHS) and wrong["effective_length"] is None
    assert right["depth_grids"]["niah_single_2"]["depths"] == [0.0, 0.5, 1.0]


def test_scoring_matches_rulers_definitions() -> None:
    assert ruler.string_match_all("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 100.0
    assert ruler.string_match_all("only 1234567", ["1234567", "7654321"]) == 50.0
    assert ruler.string_match_all("Apple, BANANA", ["apple", "banana", "cherry"]) == pytest.approx(200 / 3)
    assert ruler.string_match_all("", ["x"]) == 0.0
    assert ruler.effective_length({1024: 99.0, 2048: 90.0, 4096: 80.0, 8192: 95.0}) == 2048
    assert ruler.effective_length({1024: 50.0}) is None
    assert ruler.effective_length({1024: 91.0, 2048: 89.0}, threshold=90.0) == 1024


def test_prompts_are_deterministic_per_seed(gen) -> None:
    a, b, c = _all(gen, 7, 1), _all(gen, 7, 1), _all(gen, 8, 1)
    assert [s.prompt for s in a] == [s.prompt for s in b]
    assert [s.prompt for s in a] != [s.prompt for s in c]
    # a cell's prompts do not depend on which other cells are built
    only = ruler.build_samples(gen, ["vt"], [512], [0.5], 1, 7)
    assert only[0].prompt == next(s for s in a if s.task == "vt" and s.length == 512).prompt


def test_bad_requests_are_one_line_errors(gen) -> None:
    with pytest.raises(UserError, match="unknown RULER task"):
        ruler.build_samples(gen, ["niah_nope"], [512], [0.5], 1, 0)
    with pytest.raises(UserError, match="too short"):
        ruler.build_samples(gen, ["niah_multivalue"], [40], [0.5], 1, 0)


def test_ruler_cli_writes_json_table_and_heatmaps(tmp_path, demo_corpus) -> None:
    import json

    from helpers_eval import tiny_checkpoint
    from typer.testing import CliRunner

    from longmix.cli import app

    ckpt = tiny_checkpoint(tmp_path / "m", steps=0)
    res = CliRunner().invoke(app, ["eval", "ruler", str(ckpt), "--haystack", str(demo_corpus / "docs"),
                                   "--lengths", "512", "--tasks", "niah_single_2,vt,fwe", "--samples", "1",
                                   "--depths", "0,1", "--device", "cpu", "--rope-theta", "40000",
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "ruler.json").read_text())
    summary = data["checkpoints"][0]["summary"]
    assert summary["tasks"] == ["niah_single_2", "vt", "fwe"] and summary["lengths"] == [512]
    assert len(data["checkpoints"][0]["results"]) == 2 + 1 + 1  # two depths for the NIAH task
    assert (tmp_path / "out" / "ruler_m.png").is_file() and (tmp_path / "out" / "ruler_m_niah_single_2.png").is_file()
    bad = CliRunner().invoke(app, ["eval", "ruler", str(ckpt), "--haystack", str(demo_corpus / "docs"),
                                   "--tasks", "nope", "-o", str(tmp_path / "bad")])
    assert bad.exit_code != 0


def test_the_haystack_does_not_depend_on_the_lengths_asked_for(demo_corpus) -> None:
    docs = [demo_corpus / "docs"]
    assert ruler.haystack_texts(docs, 0, [512]) == ruler.haystack_texts(docs, 0, [512, 8192])
    with pytest.raises(UserError, match="filler corpus has"):
        ruler.haystack_texts(docs, 0, [10_000_000])
