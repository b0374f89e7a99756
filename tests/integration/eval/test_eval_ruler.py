"""RULER's tasks as NVIDIA RULER builds them: prompts sized to leave the answer budget, RULER's templates, worked
examples, real-word lists and counts, needles at a stated depth, RULER's scoring, determinism, and a scripted
model that copies the right answer (100) or answers wrong (0) on every task."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from helpers_train import stdlib_texts

from longmix.core.errors import UserError
from longmix.eval import ruler, ruler_score
from longmix.eval import ruler_templates as T
from longmix.formats.tokenizer_files import load_tokenizer

LENGTHS = (1024, 2048)
SLACK = 64  # one more haystack unit (a noise line, a list item, a word) would not fit: the sizing is tight


@pytest.fixture(scope="module")
def gen(smollm2) -> ruler.Generator:
    """A real 49K-token vocabulary (SmolLM2's): RULER's English word lists take a few tokens per word with it,
    where a toy BPE would spend most of the length on them."""
    tok = load_tokenizer(smollm2 / "tokenizer.json")
    return ruler.Generator(tok, bos_id=tok.token_to_id("<|endoftext|>"), haystack=stdlib_texts(200_000))


def _entries(numbered: str) -> list[str]:
    """The items of a "1. word 2. word ..." list (some of RULER's words are two words)."""
    return [e.strip() for e in re.split(r"(?:^|\s)\d+\. ", numbered.split("\n", 1)[-1]) if e.strip()]


def _all(gen: ruler.Generator, seed: int = 0, samples: int = 2) -> list[ruler.RulerSample]:
    return ruler.build_samples(gen, ruler.TASKS, LENGTHS, [0.0, 0.5, 1.0], samples, seed)


def _text(gen: ruler.Generator, s: ruler.RulerSample) -> str:
    return gen.tok.decode(s.prompt[len(gen.bos):])


def test_prompts_leave_the_answer_budget_and_no_more(gen) -> None:
    samples = _all(gen)
    assert {s.task for s in samples} == set(ruler.TASKS)
    for s in samples:
        assert s.max_new_tokens == T.ANSWER_TOKENS[s.task]
        # fwe is sized on RULER's coarse grid (steps of length/32 on its Zipf scale, up to 3 tokens a unit), so
        # its prompts may fall short by one step
        slack = 3 * (s.length // 32) if s.task == "fwe" else SLACK
        assert s.length - slack <= len(s.prompt) + s.max_new_tokens <= s.length, (s.task, s.length, len(s.prompt))
        assert s.prompt[0] == gen.bos[0] and s.answers


def test_niah_uses_rulers_template_needle_and_noise(gen) -> None:
    s = gen.niah("niah_single_1", 1024, None, random.Random(1))
    lines = _text(gen, s).split("\n")
    assert lines[0] == ("A special magic number is hidden within the following text. Make sure to memorize it. I "
                        "will quiz you about the number afterwards.")
    needle = [ln for ln in lines if ln.startswith("One of the special magic")]
    assert len(needle) == 1 and re.fullmatch(r"One of the special magic numbers for [\w-]+-[\w-]+ is: \d{7}\.",
                                             needle[0])
    key = needle[0].split(" for ")[1].split(" is:")[0]
    adjective, noun = key.split("-", 1)
    assert adjective in T.wonderwords("adjective") and noun in T.wonderwords("noun")
    assert set(lines[1:-1]) == {T.NOISE, needle[0]}
    assert lines[-1] == (f"What is the special magic number for {key} mentioned in the provided text? The special "
                         f"magic number for {key} mentioned in the provided text is")
    assert s.answers == [needle[0].split(": ")[1][:-1]]


def _needle_at(gen: ruler.Generator, s: ruler.RulerSample) -> tuple[int, int]:
    """Where the needle starts in the context, and the context's length (characters)."""
    text = _text(gen, s)
    body = text[text.index("afterwards.\n") + len("afterwards.\n"):text.index("\nWhat is the special magic")]
    return body.index("One of the special magic"), len(body)


def test_needle_sits_at_the_stated_depth(gen) -> None:
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):  # between noise lines: fine-grained
        at, size = _needle_at(gen, gen.niah("niah_single_1", 1024, depth, random.Random(1)))
        assert abs(at / size - depth) < 0.08, (depth, at, size)
    for task in ("niah_single_2", "niah_single_3"):  # between sentences, as RULER inserts into essays
        where = [_needle_at(gen, gen.niah(task, 1024, d, random.Random(1))) for d in (0.0, 0.5, 1.0)]
        assert where[0][0] == 0 and where[0][0] <= where[1][0] <= where[2][0]
        assert where[2][1] - where[2][0] < 120  # the needle is the last thing in the context


def test_multi_needle_tasks_hold_every_needle_and_ask_the_right_ones(gen) -> None:
    s = {t: gen.niah(t, 1024, 0.3, random.Random(2)) for t in ("niah_multikey", "niah_multivalue", "niah_multiquery")}
    text = {t: _text(gen, v) for t, v in s.items()}
    assert len(s["niah_multikey"].answers) == 1 and text["niah_multikey"].count("One of the special magic") == 4
    assert len(s["niah_multivalue"].answers) == 4 and all(a in text["niah_multivalue"]
                                                          for a in s["niah_multivalue"].answers)
    assert "What are all the special magic numbers for" in text["niah_multivalue"]
    assert len(s["niah_multiquery"].answers) == 4 and text["niah_multiquery"].count("One of the special magic") == 4


def test_vt_has_rulers_worked_example_then_the_chain(gen) -> None:
    s = gen.vt(1024, random.Random(3))
    text = _text(gen, s)
    example, task = text.split("\n\nMemorize")  # the example, answered, then the task (RULER: two newlines)
    assert example.startswith("Memorize and track the chain(s) of variable assignment hidden in the following text.")
    shown = example.split("they are: ")[1].split()
    assert len(shown) == 5 and all(len(n) == 3 and n.isupper() for n in shown)  # renamed per prompt
    assert "12345" not in example  # and a value of its own
    assert all(f"VAR {v} =" in task for v in s.answers) and len(s.answers) == 5 and all(len(v) == 5 for v in s.answers)
    chain = [ln for ln in task.split("\n") if ln.startswith("VAR ")]
    assert len(chain) == 5 and re.fullmatch(r"VAR [A-Z]{5} = \d{5}", chain[0])
    assert [c.split()[1] for c in chain] == s.answers  # in chain order, each line its own
    assert task.endswith(f"5 variables are assigned the value {chain[0].split()[-1]}, they are: ")


def test_cwe_counts_real_words_as_ruler_does(gen) -> None:
    for length, common, rare in ((1024, 6, 1), (4096, 30, 3)):
        s = gen.cwe(length, random.Random(3))
        text = _text(gen, s)
        example, task = text.rsplit("\nBelow is a numbered list", 1)
        assert example.startswith("Below is a numbered list") and "are: 1. " in example  # the answered example
        listed = _entries(task.split("\nQuestion:")[0])
        counts = Counter(listed)
        assert set(counts) <= set(T.cwe_words())
        assert {counts[w] for w in s.answers} == {common} and len(s.answers) == 10
        assert {c for w, c in counts.items() if w not in s.answers} == {rare}
        assert task.endswith("Question: What are the 10 most common words in the above list? Answer: The top 10 "
                             "words that appear most often in the list are:")


def test_fwe_has_rulers_noise_zipf_counts_and_question(gen) -> None:
    s = gen.fwe(1024, random.Random(3))
    text = _text(gen, s)
    words = text.split("coded words. ")[1].split("\nQuestion:")[0].split()
    counts = Counter(words)
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[0] == "..." and ranked[1:4] == s.answers
    top = [counts[w] for w in ranked[:4]]  # Zipf(2): the k-th most frequent word n / (k^2 zeta(2)) times
    assert top[0] / top[1] == pytest.approx(4, rel=0.05) and top[0] / top[3] == pytest.approx(16, rel=0.1)
    assert len(counts) <= (1024 - 50) // 50 and all(len(w) == 6 for w in ranked[1:])
    assert text.endswith("Please ignore the dots '....'. What are the three most frequently appeared words in the "
                         "above coded text? Answer: According to the coded text above, the three most frequently "
                         "appeared words are:")


def test_scripted_models_score_100_and_0_on_every_task(gen) -> None:
    samples = _all(gen)
    answered = [" " + ", ".join(s.answers) + "." for s in samples]
    right = ruler_score.summarize(ruler_score.score_samples(samples, answered))
    wrong = ruler_score.summarize(ruler_score.score_samples(samples, [" I do not know." for _ in samples]))
    assert set(right["tasks"]) == set(ruler.TASKS)
    for t in ruler.TASKS:
        assert right["table"][t] == [100.0] * len(LENGTHS) and wrong["table"][t] == [0.0] * len(LENGTHS)
    assert right["effective_length"] == max(LENGTHS) and wrong["effective_length"] is None
    assert right["depth_grids"]["niah_single_2"]["depths"] == [0.0, 0.5, 1.0]


def test_scoring_matches_rulers_definitions() -> None:
    assert ruler_score.string_match_all("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 100.0
    assert ruler_score.string_match_all("only 1234567", ["1234567", "7654321"]) == 50.0
    assert ruler_score.string_match_all("Apple, BANANA", ["apple", "banana", "cherry"]) == pytest.approx(200 / 3)
    assert ruler_score.string_match_all("", ["x"]) == 0.0
    assert ruler_score.postprocess("  ABC\x07def\n ") == "ABC\ndef"  # RULER's clean-up: control characters as newlines
    assert ruler_score.effective_length({1024: 99.0, 2048: 90.0, 4096: 80.0, 8192: 95.0}) == 2048
    assert ruler_score.effective_length({1024: 50.0}) is None
    assert ruler_score.effective_length({1024: 91.0, 2048: 89.0}, threshold=90.0) == 1024


def test_prompts_are_deterministic_per_seed(gen) -> None:
    a, b, c = _all(gen, 7, 1), _all(gen, 7, 1), _all(gen, 8, 1)
    assert [s.prompt for s in a] == [s.prompt for s in b]
    assert [s.prompt for s in a] != [s.prompt for s in c]
    # a cell's prompts do not depend on which other cells are built
    only = ruler.build_samples(gen, ["vt"], [1024], [0.5], 1, 7)
    assert only[0].prompt == next(s for s in a if s.task == "vt" and s.length == 1024).prompt


def test_bad_requests_are_one_line_errors(gen) -> None:
    with pytest.raises(UserError, match="unknown RULER task"):
        ruler.build_samples(gen, ["niah_nope"], [1024], [0.5], 1, 0)
    with pytest.raises(UserError, match="too short"):
        ruler.build_samples(gen, ["niah_multivalue"], [160], [0.5], 1, 0)  # 128 of them are the answer budget
    with pytest.raises(UserError, match="prompt style"):
        ruler.Generator(gen.tok, None, [], style="nvidia")


def test_ruler_cli_writes_json_table_and_heatmaps(tmp_path, demo_corpus) -> None:
    import json

    from helpers_eval import tiny_checkpoint
    from typer.testing import CliRunner

    from longmix.cli import app

    ckpt = tiny_checkpoint(tmp_path / "m", steps=0)
    res = CliRunner().invoke(app, ["eval", "ruler", str(ckpt), "--haystack", str(demo_corpus / "docs"),
                                   "--lengths", "1024", "--tasks", "niah_single_2,vt,fwe", "--samples", "1",
                                   "--depths", "0,1", "--device", "cpu", "--rope-theta", "40000",
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "ruler.json").read_text())
    summary = data["checkpoints"][0]["summary"]
    assert summary["tasks"] == ["niah_single_2", "vt", "fwe"] and summary["lengths"] == [1024]
    assert data["style"] == "ruler" and data["template"].startswith("base")
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
