"""An ablation verdict reads the long-QA summary a suite keeps in results.json (`longqa.f1`, a depth bin)."""

from __future__ import annotations

import pytest

from longmix.ablate.verdicts import check_metric_name, metric
from longmix.eval.longqa import QAResult, summarize


def _run(f1s: list[tuple[float, float]]) -> dict:
    rs = [QAResult("x", "factual", d, "q", "a", "p", 5, em=float(f == 1), f1=f, rouge_l=f / 2) for d, f in f1s]
    return {"eval": {"longqa": summarize(rs, skipped=0)}, "training": {}}


def test_longqa_metrics_read_the_summary() -> None:
    run = _run([(0.1, 1.0), (0.9, 0.5), (0.95, 0.0)])
    assert metric(run, "longqa.f1") == pytest.approx(0.5)
    assert metric(run, "longqa.em") == pytest.approx(1 / 3)
    assert metric(run, "longqa.rouge_l") == pytest.approx(0.25)
    assert metric(run, "longqa.f1@0.8-1.0") == pytest.approx(0.25)
    assert metric(run, "longqa.f1@0.4-0.6") is None  # an empty bin
    assert metric(run, "longqa.f1 - longqa.em") == pytest.approx(0.5 - 1 / 3)
    assert metric({"eval": {}, "training": {}}, "longqa.f1") is None  # the arm ran no long QA


def test_longqa_metric_names_are_checked() -> None:
    for ok in ("longqa.f1", "longqa.em@0.0-0.2", "longqa.rouge_l - longqa.f1"):
        check_metric_name(ok)
    for bad, says in (("longqa.bleu", "unknown metric"), ("longqa.f1@deep", "depth bin")):
        with pytest.raises(ValueError, match=says):
            check_metric_name(bad)
