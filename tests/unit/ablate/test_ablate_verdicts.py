"""Honest reporting of ablations: planted dependencies sit at the distances they state, paired differences
and their 95% intervals are right, and the verdict table is computed from results.json (editing a number
there changes the verdict the rewritten report shows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longmix.ablate.report import rewrite_report, write_report
from longmix.ablate.verdicts import judge, metric, paired, switch_spike, t_interval
from longmix.data.synthetic_longdep import write_longdep_corpus
from longmix.data.tokenize.encode import train_bpe
from longmix.formats.tokenizer_files import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> Path:
    tmp = tmp_path_factory.mktemp("verdicts")
    texts = [json.loads(x)["text"] for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    train_bpe(texts, 1024, tmp / "tokenizer.json")
    return tmp / "tokenizer.json"


def test_planted_dependencies_sit_at_the_stated_distances(tokenizer: Path, demo_corpus: Path,
                                                          tmp_path: Path) -> None:
    distances = (32, 64, 160, 480, 928)
    summary = write_longdep_corpus(tmp_path, tokenizer, [demo_corpus / "code" / "part-00000.jsonl"],
                                   [demo_corpus / "tests" / "part-00000.jsonl"], docs=6, heldout_docs=3, seed=3,
                                   slot=32, n_slots=30, distances=distances, files=2)
    assert all(f["max_distance_error"] == 0 for f in summary["files"].values())
    tok = load_tokenizer(tokenizer)
    records = [json.loads(x) for f in sorted(tmp_path.rglob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(records) == 9
    kinds = set()
    for rec in records:
        enc = tok.encode(rec["text"], add_special_tokens=False)
        assert len(enc.ids) == rec["n_tokens"] <= 30 * 32
        assert sorted(d["planned"] for d in rec["deps"]) == sorted(distances)
        for d in rec["deps"]:
            kinds.add(d["kind"])
            target = rec["text"][d["target"][0]:d["target"][1]]
            source = rec["text"][d["src"][0]:d["src"][1]]
            assert target and target in source  # the target is predictable only from its source
            first = next(i for i, (a, b) in enumerate(enc.offsets) if b > d["src"][0])
            dst_line = rec["text"].rfind("\n", 0, d["target"][0]) + 1
            second = next(i for i, (a, b) in enumerate(enc.offsets) if b > dst_line)
            assert second - first == d["distance"] == d["planned"]
            if d["kind"] == "fact":
                assert target.isdigit() and rec["text"].count(target) >= 2
    assert kinds == {"repeat", "fact"}


def test_t_interval_and_paired_differences() -> None:
    m, sd, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (m, sd) == (2.0, 1.0)
    assert hi - m == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    assert t_interval([1.5])[2:] == (None, None)
    summary = _summary({"rope": [6.0, 6.1, 6.2], "abf": [5.5, 5.7, 5.6]})
    p = paired(summary, "abf", "rope", "loss@1024-2048")
    assert p["n"] == 3 and p["diffs"] == pytest.approx({1: -0.5, 2: -0.4, 3: -0.6})
    assert p["mean"] == pytest.approx(-0.5) and p["high"] < 0


def test_switch_spike_and_recovery() -> None:
    curve = [{"step": i, "loss": v, "seq_len": 256 if i < 4 else 2048}
             for i, v in enumerate([5.0, 4.8, 4.6, 4.4, 5.2, 4.9, 4.5, 4.3])]
    spike, back = switch_spike(curve)
    assert spike == pytest.approx(5.2 - 4.6) and back == 2
    assert switch_spike(curve[:4]) == (None, None)


def _run(arm: str, seed: int, long_loss: float) -> dict:
    return {"arm": arm, "label": arm, "seed": seed, "lineage": [],
            "eval": {"context_ranges": {"0-256": 6.0, "256-1024": 5.9, "1024-2048": long_loss}, "mean_loss": 6.0,
                     "bins": {"context": [1, 2], "loss": [6.0, 5.9], "se": [0.1, 0.1]}, "n_docs": 2,
                     "name": arm, "max_len": 2048},
            "training": {"eval_loss": None, "tokens": 100, "flops_per_rank": 1e12, "steps": 2,
                         "curve": [{"step": 1, "loss": 6.0, "seq_len": 2048}]}}


def _summary(long_losses: dict[str, list[float]]) -> dict:
    arms = [_run(a, s + 1, v) for a, vals in long_losses.items() for s, v in enumerate(vals)]
    findings = [
        {"finding": "ABF beats RoPE far out", "paper": "6.323 vs 6.548", "metric": "loss@1024-2048",
         "arm": "abf", "versus": "rope", "expect": "lower"},
        {"finding": "close at short range", "paper": "6.816 vs 6.780", "metric": "loss@0-256", "arm": "abf",
         "versus": "rope", "expect": "similar", "margin": 0.05},
        {"finding": "RoPE worse far out", "paper": "-", "metric": "loss@1024-2048 - loss@256-1024", "arm": "rope",
         "versus": "abf", "expect": "higher"},
    ]
    return {"suite": "pe", "description": "", "train_tokens": 100, "seeds": [1, 2, 3], "output": "x",
            "eval": {"max_docs": 2, "max_len": 2048, "data": ["held-out"]}, "base": None, "arms": arms,
            "seconds": 1.0, "reference": "rope", "paired_metrics": ["loss@1024-2048"], "findings": findings}


def _verdict_rows(report: Path) -> dict[str, str]:
    rows = {}
    for line in report.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[4].startswith("**"):
            rows[cells[0]] = cells[4].strip("*")
    return rows


def test_verdict_table_is_generated_from_results_json(tmp_path: Path) -> None:
    summary = _summary({"rope": [6.0, 6.1, 6.2], "abf": [5.5, 5.7, 5.6]})
    write_report(summary, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [v["verdict"] for v in results["verdicts"]] == ["reproduced", "reproduced", "reproduced"]
    assert _verdict_rows(tmp_path / "report.md") == {"ABF beats RoPE far out": "reproduced",
                                                     "close at short range": "reproduced",
                                                     "RoPE worse far out": "reproduced"}
    assert "Paired differences against rope" in (tmp_path / "report.md").read_text()
    # the numbers in results.json decide: make ABF worse on every seed and rewrite the report from the file
    for r in results["arms"]:
        if r["arm"] == "abf":
            r["eval"]["context_ranges"]["1024-2048"] += 1.0
    (tmp_path / "results.json").write_text(json.dumps(results))
    rewrite_report(tmp_path / "results.json")
    assert _verdict_rows(tmp_path / "report.md")["ABF beats RoPE far out"] == "contradicted"
    # noisy seeds that disagree in sign: nothing is shown either way
    noisy = _summary({"rope": [6.0, 6.1, 6.2], "abf": [5.8, 6.3, 6.1]})
    assert judge(noisy, noisy["findings"][0])["verdict"] == "not shown"


def test_increasing_finding_and_metric_names() -> None:
    summary = _summary({"small": [6.0], "mid": [5.0], "large": [4.0]})
    f = {"finding": "beta rises", "paper": "0.45 < 0.51", "metric": "loss@1024-2048", "expect": "increasing",
         "arms": ["large", "mid", "small"]}
    v = judge(summary, f)
    assert v["verdict"] == "reproduced" and "no interval" in v["why"]
    assert judge(summary, {**f, "arms": ["small", "mid", "large"]})["verdict"] == "contradicted"
    run = summary["arms"][0]
    assert metric(run, "loss@1024-2048 - loss@256-1024") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        metric(run, "accuracy")


def test_ruler_metrics_read_the_summary_per_length_and_task() -> None:
    from longmix.ablate.verdicts import check_metric_name

    run = _run("abf", 1, 5.0)
    run["eval"]["ruler"] = {"tasks": ["niah_single_1", "vt"], "lengths": [4096, 16384],
                            "table": {"niah_single_1": [100.0, 50.0], "vt": [20.0, 0.0]}, "mean": [60.0, 25.0]}
    assert metric(run, "ruler@16384") == 25.0 and metric(run, "ruler.niah_single_1@16384") == 50.0
    assert metric(run, "ruler.vt@4096") == 20.0
    assert metric(run, "ruler@8192") is None and metric(run, "ruler.fwe@4096") is None  # not measured
    assert metric(_run("rope", 1, 5.0), "ruler@4096") is None  # no RULER section
    check_metric_name("ruler.niah_multikey@16384 - ruler.niah_multikey@4096")
    for bad, match in [("ruler.passkey@4096", "unknown metric"), ("ruler@long", "needs a length")]:
        with pytest.raises(ValueError, match=match):
            check_metric_name(bad)


def test_loss_by_position_is_the_mean_over_seeds_per_arm_and_skips_mismatched_bins() -> None:
    """The per-arm position plot averages each arm's seeds bin by bin (base included); runs binned differently
    cannot share a plot, so none is drawn rather than a misleading one."""
    from longmix.ablate.report import _position_curves

    def run(label: str, losses: list[float], context: list[int] | None = None) -> dict:
        return {"label": label, "eval": {"bins": {"context": context or [1, 2, 4], "loss": losses}}}

    summary = {"base": {"eval": {"bins": {"context": [1, 2, 4], "loss": [3.0, 2.0, 1.0]}}},
               "arms": [run("abf", [2.0, 2.0, 2.0]), run("abf", [4.0, 2.0, 0.0]), run("pi", [5.0, 5.0, 5.0])]}
    curves = _position_curves(summary)
    assert curves == {"base (no continued training)": ([1, 2, 4], [3.0, 2.0, 1.0]),
                      "abf": ([1, 2, 4], [3.0, 2.0, 1.0]), "pi": ([1, 2, 4], [5.0, 5.0, 5.0])}
    summary["arms"].append(run("pi", [1.0, 1.0], context=[1, 2]))
    assert _position_curves(summary) == {}
