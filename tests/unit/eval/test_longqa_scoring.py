"""Long-QA scoring on hand-built cases (SQuAD normalization, exact match, token F1, ROUGE-L), reading the
held-out format, the seeded selection, the bootstrap interval and the depth / style summary."""

from __future__ import annotations

import json

import pytest

from longmix.core.errors import UserError
from longmix.eval import longqa
from longmix.eval.longqa import QAResult


def test_normalization_is_squads() -> None:
    assert longqa.normalize_answer("  The Cat,  sat on a MAT!  ") == "cat sat on mat"
    assert longqa.normalize_answer("An apple; the end.") == "apple end"
    assert longqa.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match() -> None:
    assert longqa.exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert longqa.exact_match("Eiffel Tower in Paris", "Eiffel Tower") == 0.0
    assert longqa.exact_match("", "") == 1.0


def test_token_f1_by_hand() -> None:
    # prediction tokens: paris frances capital (3), reference: paris (1): p = 1/3, r = 1, F1 = 0.5
    assert longqa.token_f1("Paris, France's capital", "the Paris") == pytest.approx(0.5)
    # multiset overlap: "x y y" vs "y y z": common 2, p = r = 2/3
    assert longqa.token_f1("x y y", "y y z") == pytest.approx(2 / 3)
    assert longqa.token_f1("nothing shared", "else entirely") == 0.0
    assert longqa.token_f1("", "something") == 0.0
    assert longqa.token_f1("the", "a") == 1.0  # both empty after normalization


def test_rouge_l_is_the_probes_one() -> None:
    # LCS of "the cat sat on the mat" and "the cat on a mat": the cat on mat = 4; p = 4/6, r = 4/5
    s = longqa.score("the cat sat on the mat", "the cat on a mat")
    p, r = 4 / 6, 4 / 5
    assert s["rouge_l"] == pytest.approx(2 * p * r / (p + r))
    assert s["em"] == 0.0 and 0 < s["f1"] < 1


def _line(i: int, depth: float, style: str = "factual", answer: str = "yes") -> dict:
    return {"id": f"d{i}-q0", "messages": [{"role": "user", "content": f"doc {i}\n\nQ?"},
                                           {"role": "assistant", "content": answer}],
            "provenance": {"depth": depth, "style": style, "question": "Q?", "answer": answer}}


def test_read_heldout_and_its_mistakes(tmp_path) -> None:
    good = tmp_path / "h.jsonl"
    good.write_text("\n".join(json.dumps(_line(i, i / 4)) for i in range(5)) + "\n\n")
    ex = longqa.read_heldout(good)
    assert [e.id for e in ex] == [f"d{i}-q0" for i in range(5)]
    assert ex[0].messages == [{"role": "user", "content": "doc 0\n\nQ?"}] and ex[4].depth == 1.0
    bad = tmp_path / "b.jsonl"
    for rec, why in [({"messages": [{"role": "user", "content": "x"}]}, "must end with a user turn"),
                     ({**_line(0, 0.5), "provenance": {"depth": 1.5}}, "depth"),
                     ({"messages": [{"role": "bot", "content": "x"}]}, "role")]:
        bad.write_text(json.dumps(_line(1, 0.1)) + "\n" + json.dumps(rec) + "\n")
        with pytest.raises(UserError, match=f"b.jsonl:2: .*{why}"):
            longqa.read_heldout(bad)
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match="b.jsonl:1"):
        longqa.read_heldout(bad)
    with pytest.raises(UserError, match="not found"):
        longqa.read_heldout(tmp_path / "missing.jsonl")


def test_selection_is_seeded_and_in_file_order(tmp_path) -> None:
    f = tmp_path / "h.jsonl"
    f.write_text("\n".join(json.dumps(_line(i, 0.5)) for i in range(20)))
    ex = longqa.read_heldout(f)
    a, b, c = (longqa.select(ex, 5, s) for s in (0, 0, 1))
    assert [e.id for e in a] == [e.id for e in b] != [e.id for e in c]
    assert [e.id for e in a] == sorted((e.id for e in a), key=lambda i: int(i[1:].split("-")[0]))
    assert longqa.select(ex, None, 0) == ex and longqa.select(ex, 50, 0) == ex


def test_bootstrap_interval() -> None:
    assert longqa.bootstrap_interval([]) is None
    assert longqa.bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    values = [0.0, 1.0] * 50
    lo, hi = longqa.bootstrap_interval(values, seed=3)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.05, abs=0.03)  # ~ the normal interval
    assert longqa.bootstrap_interval(values, seed=3) == (lo, hi)  # seeded


def _r(depth: float, f1: float, style: str = "factual") -> QAResult:
    return QAResult("x", style, depth, "q", "a", "p", 10, em=float(f1 == 1.0), f1=f1, rouge_l=f1)


def test_depth_bins_and_summary() -> None:
    assert [longqa.depth_bin(d) for d in (0.0, 0.19, 0.2, 0.5, 0.8, 0.99, 1.0)] == [0, 0, 1, 2, 4, 4, 4]
    rs = [_r(0.1, 1.0), _r(0.15, 0.0), _r(0.9, 0.5, "summary"), _r(1.0, 0.5, "summary")]
    s = longqa.summarize(rs, skipped=2, seed=0)
    assert s["n"] == 4 and s["skipped"] == 2 and s["f1"] == pytest.approx(0.5) and s["em"] == 0.25
    assert "bootstrap" in s["interval"]
    assert s["f1_ci"][0] <= s["f1"] <= s["f1_ci"][1]
    bins = {b["bin"]: b for b in s["by_depth"]}
    assert list(bins) == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert bins["0.0-0.2"]["n"] == 2 and bins["0.0-0.2"]["f1"] == 0.5
    assert bins["0.8-1.0"]["n"] == 2 and bins["0.8-1.0"]["f1_ci"] == [0.5, 0.5]
    assert bins["0.4-0.6"] == {"bin": "0.4-0.6", "lo": 0.4, "hi": 0.6, "n": 0, "em": None, "em_ci": None,
                               "f1": None, "f1_ci": None, "rouge_l": None, "rouge_l_ci": None}
    assert s["by_style"]["factual"]["n"] == 2 and s["by_style"]["summary"]["f1"] == 0.5
    assert longqa.summarize([], skipped=3)["f1"] is None
