"""RoPE / PI / ABF analysis against closed forms and the paper's ABF-vs-PI granularity comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longmix.eval.rope_analysis import analyse, decay_bound, expected_score, granularity, rope_thetas


def test_thetas_match_llama_inv_freq() -> None:
    th = rope_thetas(128, 10000.0)
    assert len(th) == 64 and th[0] == 1.0
    assert th[1] == pytest.approx(10000 ** (-2 / 128))
    assert np.allclose(rope_thetas(128, 10000.0, 4.0), th / 4)


def test_granularity_closed_form_equals_mean_angle() -> None:
    for d, b, s in ((128, 1e4, 1.0), (128, 5e5, 1.0), (32, 1e4, 4.0), (64, 1e6, 2.0)):
        assert granularity(d, b, s) == pytest.approx(rope_thetas(d, b, s).mean(), rel=1e-12)


def test_abf_keeps_more_granularity_than_pi() -> None:
    """Llama 2 Long, App. B: for the same 4x extension ABF (base 10k -> 500k) spreads neighbouring positions
    further apart than PI (scale 4). With d = 128: PI keeps exactly 1/4 of RoPE's mean angle per token,
    ABF keeps 72.3%, so ABF / PI = 4 * G(500k) / G(10k) = 2.89 (docs/evaluation.md derives it)."""
    rope, abf, pi = granularity(128, 1e4), granularity(128, 5e5), granularity(128, 1e4, 4)
    assert pi / rope == pytest.approx(0.25)
    assert abf / rope == pytest.approx(0.7231, abs=1e-3)
    assert abf / pi == pytest.approx(2.892, abs=1e-3)
    # the ratio holds whatever the head dimension: ABF always beats PI here
    for d in (32, 64, 256):
        assert granularity(d, 5e5) > granularity(d, 1e4, 4)


def test_pi_curves_are_stretched_rope_curves() -> None:
    th, th_pi = rope_thetas(64, 1e4), rope_thetas(64, 1e4, 4)
    n = np.array([0, 4, 40, 400, 4000])
    assert np.allclose(expected_score(n, th_pi), expected_score(n / 4, th))
    assert np.allclose(decay_bound(n, th_pi), decay_bound(n / 4, th))


def test_decay_known_values() -> None:
    th = rope_thetas(128, 1e4)
    # at distance 0 every partial sum S_j has |S_j| = j, so the bound is mean(1..64) = 32.5; the score is 1
    assert decay_bound(np.array([0]), th)[0] == pytest.approx(32.5)
    assert expected_score(np.array([0]), th)[0] == pytest.approx(1.0)
    # long-range decay, and ABF decays slower than RoPE over the mid range (the paper's Fig. 4)
    n = np.array([256, 512, 1024, 2048])
    assert np.all(decay_bound(n, th) < 10)
    assert np.all(decay_bound(n, rope_thetas(128, 5e5)) > decay_bound(n, th))


def test_rope_cli_writes_table_json_and_plot(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from longmix.cli import app

    res = CliRunner().invoke(app, ["eval", "rope", "--base", "10000", "--base", "500000", "--pi-scale", "4",
                                   "--max-distance", "4096", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rope.json").read_text())
    names = [v["name"] for v in data["variants"]]
    assert names == ["RoPE base 10000", "ABF base 500000", "PI x4 (base 10000)"]
    assert data["variants"][1]["granularity"] / data["variants"][2]["granularity"] == pytest.approx(2.892, abs=1e-3)
    assert (tmp_path / "rope.png").stat().st_size > 10_000
    assert "ABF base 500000" in res.output
    assert analyse([1e4], [], 16, 100)["variants"][0]["granularity_vs_rope"] == 1.0


def test_rope_cli_rejects_bad_base(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from longmix.cli import app

    res = CliRunner().invoke(app, ["eval", "rope", "--base", "1", "-o", str(tmp_path)])
    assert res.exit_code != 0
