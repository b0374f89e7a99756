"""Mixture plans on real document lengths: Python stdlib files, about four bytes per token."""

from __future__ import annotations

import logging
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from longmix.data.mix.buckets import (
    assign_buckets,
    bucket_names,
    default_edges,
    doc_counts,
    resolve_bucket,
    token_counts,
)
from longmix.data.mix.plan import MixParams, MixShortfallError, SourceMix, plan_mix, sample_order

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SOURCES = ("lib", "tests", "gui")
SEQ_LEN = 4096
EDGES = tuple(int(e) for e in default_edges(SEQ_LEN))  # 512, 2048, 4096


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    groups = [
        sorted(STDLIB.glob("*.py")),
        sorted((STDLIB / "test").glob("test_*.py")),
        sorted([*(STDLIB / "idlelib").rglob("*.py"), *(STDLIB / "tkinter").rglob("*.py")]),
    ]
    src = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    n_tokens = np.array([max(1, f.stat().st_size // 4) for g in groups for f in g], dtype=np.int64)
    return src, n_tokens


def params(**kw) -> MixParams:
    sources = kw.pop("sources", [SourceMix(name=s) for s in SOURCES])
    return MixParams(sources=sources, edges=EDGES, **kw)


def max_len_per_cell(src: np.ndarray, lens: np.ndarray) -> np.ndarray:
    out = np.zeros((len(SOURCES), len(EDGES) + 1), dtype=np.int64)
    np.maximum.at(out, (src, assign_buckets(lens, EDGES)), lens)
    return out


def assert_cells_on_target(plan, src: np.ndarray, lens: np.ndarray) -> None:
    """Stated tolerance: each cell within half its longest document of its target."""
    rep = plan.report
    err = np.abs(rep.achieved_tokens - rep.target_tokens)
    assert np.all(err <= max_len_per_cell(src, lens) // 2 + 1), err
    # The counts are the plan: achieved tokens are exactly what the repetitions add up to.
    bkt = assign_buckets(lens, EDGES)
    np.testing.assert_array_equal(
        token_counts(src, bkt, lens * plan.counts, len(SOURCES), len(EDGES) + 1), rep.achieved_tokens
    )


def test_buckets_on_real_lengths(corpus) -> None:
    src, lens = corpus
    assert bucket_names(EDGES) == ["<512", "<2048", "<4096", ">=4096"]
    bkt = assign_buckets(np.array([0, 511, 512, 2047, 2048, 4095, 4096, 10**9]), EDGES)
    assert bkt.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    tok = token_counts(src, assign_buckets(lens, EDGES), lens, 3, 4)
    docs = doc_counts(src, assign_buckets(lens, EDGES), 3, 4)
    assert tok.sum() == lens.sum() and docs.sum() == len(lens)
    assert np.all(docs > 0), "every source x bucket cell has documents in this corpus"
    assert resolve_bucket(">=4096", EDGES) == 3
    with pytest.raises(ValueError, match="valid buckets"):
        resolve_bucket(">=9999", EDGES)


def test_natural_mix_downsampled_keeps_shares(corpus) -> None:
    src, lens = corpus
    total = int(lens.sum()) // 2
    plan = plan_mix(src, lens, params(total_tokens=total, seed=1))
    rep = plan.report
    assert not rep.shortfalls
    assert_cells_on_target(plan, src, lens)
    assert plan.counts.max() == 1  # half the data needs no repeats
    natural = rep.available_tokens.sum(1) / rep.available_tokens.sum()
    achieved = rep.achieved_tokens.sum(1) / rep.achieved_tokens.sum()
    np.testing.assert_allclose(achieved, natural, atol=0.01)
    assert abs(rep.total_achieved - total) / total < 0.01


def test_shares_and_long_share_with_upsampling(corpus) -> None:
    src, lens = corpus
    # Natural long shares (>= 2048 tokens) are 0.95 for lib and 0.85 for gui: lib's short documents get
    # upsampled about twofold, gui's long ones slightly.
    total = 2_000_000
    mix = [
        SourceMix(name="lib", share=0.3, long_share=0.8),
        SourceMix(name="tests", share=0.5),
        SourceMix(name="gui", share=0.2, long_share=0.9),
    ]
    plan = plan_mix(src, lens, params(total_tokens=total, sources=mix, long_min_tokens=2048, seed=3))
    rep = plan.report
    assert not rep.shortfalls, [s.message for s in rep.shortfalls]
    assert_cells_on_target(plan, src, lens)
    shares = rep.achieved_tokens.sum(1) / rep.total_achieved
    np.testing.assert_allclose(shares, [0.3, 0.5, 0.2], atol=0.01)
    long_share = rep.long_share_achieved()
    assert abs(long_share[0] - 0.8) < 0.01 and abs(long_share[2] - 0.9) < 0.01
    assert plan.counts[(src == 0) & (lens < 2048)].mean() > 1.5  # short lib docs repeated
    assert rep.buckets[rep.long_bucket] == "<4096"  # long = 2048 tokens and more
    assert plan.counts.max() <= 4 and max(rep.repetition_hist) == plan.counts.max()
    assert sum(rep.repetition_hist.values()) == len(lens)


def test_bucket_weights_and_removed_bucket(corpus) -> None:
    src, lens = corpus
    total = int(lens.sum()) // 4
    mix = [
        SourceMix(name="lib", bucket_weights={">=4096": 3.0, 0: 0.5}),
        SourceMix(name="tests", remove_buckets=(">=4096",)),
        SourceMix(name="gui"),
    ]
    plan = plan_mix(src, lens, params(total_tokens=total, sources=mix, seed=5))
    rep = plan.report
    assert not rep.shortfalls
    assert_cells_on_target(plan, src, lens)
    # lib: each bucket's target is proportional to weight x available tokens.
    w = np.array([0.5, 1.0, 1.0, 3.0]) * rep.available_tokens[0]
    np.testing.assert_allclose(rep.target_tokens[0] / rep.target_tokens[0].sum(), w / w.sum(), atol=1e-5)
    # tests: nothing from the removed bucket, and the source still gets its (natural) share.
    bkt = assign_buckets(lens, EDGES)
    assert rep.achieved_tokens[1, 3] == 0 and plan.counts[(src == 1) & (bkt == 3)].sum() == 0
    natural = rep.available_tokens[1].sum() / rep.available_tokens.sum()
    assert abs(rep.achieved_tokens[1].sum() / rep.total_achieved - natural) < 0.01


def test_shortfall_is_loud_and_exact(corpus, caplog: pytest.LogCaptureFixture) -> None:
    src, lens = corpus
    total = 3 * int(lens.sum())
    mix = [
        SourceMix(name="lib", share=0.8, long_share=0.9),
        SourceMix(name="tests", share=0.1),
        SourceMix(name="gui", share=0.1),
    ]
    with caplog.at_level(logging.WARNING, logger="longmix.data.mix.plan"):
        plan = plan_mix(src, lens, params(total_tokens=total, sources=mix, max_epochs=2, seed=0))
    rep = plan.report
    assert plan.counts.max() == 2  # the cap holds
    assert rep.shortfalls and all("mix shortfall" in r.message for r in caplog.records)
    for sf in rep.shortfalls:
        s, b = SOURCES.index(sf.source), rep.buckets.index(sf.bucket)
        assert sf.achievable_tokens == 2 * rep.available_tokens[s, b]
        assert rep.achieved_tokens[s, b] == sf.achievable_tokens  # capped cells use every doc twice
        assert sf.missing_tokens == rep.target_tokens[s, b] - rep.achieved_tokens[s, b] > 0
        assert f"short by {sf.missing_tokens:,}" in sf.message
    # Every cell either meets its target or has a shortfall entry: nothing is silently less.
    short = {(sf.source, sf.bucket) for sf in rep.shortfalls}
    for row in rep.rows():
        if (row["source"], row["bucket"]) not in short:
            assert row["target_tokens"] - row["achieved_tokens"] <= max_len_per_cell(src, lens).max()
    assert rep.to_dict()["shortfalls"][0]["missing_tokens"] > 0
    with pytest.raises(MixShortfallError, match="short by"):
        plan_mix(src, lens, params(total_tokens=total, sources=mix, max_epochs=2, on_shortfall="error"))


def test_removing_every_long_bucket_with_long_share_is_a_shortfall(corpus) -> None:
    src, lens = corpus
    mix = [
        SourceMix(name="lib", share=1.0, long_share=0.5, remove_buckets=(2, 3)),
        SourceMix(name="tests", share=0.0),
        SourceMix(name="gui", share=0.0),
    ]
    rep = plan_mix(src, lens, params(total_tokens=100_000, sources=mix, long_min_tokens=2048)).report
    assert [(s.source, s.bucket, s.target_tokens) for s in rep.shortfalls] == [("lib", "long (>=2048)", 50_000)]
    assert rep.achieved_tokens[0, 2:].sum() == 0


def test_plan_is_deterministic_given_the_seed(corpus) -> None:
    src, lens = corpus
    p = params(total_tokens=int(lens.sum()) * 3 // 2, seed=11)
    a, b = plan_mix(src, lens, p), plan_mix(src, lens, p)
    np.testing.assert_array_equal(a.counts, b.counts)
    c = plan_mix(src, lens, params(total_tokens=int(lens.sum()) * 3 // 2, seed=12))
    assert not np.array_equal(a.counts, c.counts)
    order = sample_order(a.counts, seed=11)
    np.testing.assert_array_equal(np.bincount(order, minlength=len(lens)), a.counts)
    np.testing.assert_array_equal(order, sample_order(a.counts, seed=11))
    assert not np.array_equal(order, np.sort(order))


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        params(sources=[SourceMix(name="a", share=0.5), SourceMix(name="b", share=0.4)])
    with pytest.raises(ValueError, match="for every source or for none"):
        params(sources=[SourceMix(name="a", share=0.5), SourceMix(name="b")])
    with pytest.raises(ValueError, match="listed twice"):
        params(sources=[SourceMix(name="a"), SourceMix(name="a")])
    with pytest.raises(ValueError, match="valid buckets"):
        params(sources=[SourceMix(name="a", remove_buckets=("<123",))])
    with pytest.raises(ValueError, match="one of the edges"):
        params(sources=[SourceMix(name="a")], long_min_tokens=1000)
    with pytest.raises(ValueError, match="must be >= 0"):
        SourceMix(name="a", bucket_weights={0: -1.0})


def test_cells_planned_apart_from_shard_sums_give_the_same_plan(corpus) -> None:
    """The plan as a cluster would run it: per-shard sums added up (the only cross-cell input), targets from
    them, then each cell planned from its own documents' lengths alone; the same counts and report as
    plan_mix, with shares, weights, removed buckets, caps (shortfalls) and long_select all in play."""
    from longmix.data.mix.plan import cell_targets, cell_totals, plan_cell
    from longmix.data.mix.select import select_long

    src, lens = corpus
    rng = np.random.default_rng(5)
    scores = {"longdep_score": np.where(rng.random(len(lens)) < 0.1, np.nan, rng.random(len(lens)))}
    mix = (SourceMix("lib", share=0.5, long_share=0.6, long_select=("longdep_score", 0.5)),
           SourceMix("tests", share=0.3, bucket_weights={0: 0.5}, remove_buckets=(">=4096",)),
           SourceMix("gui", share=0.2, max_epochs=1))
    p = params(sources=mix, total_tokens=int(lens.sum() * 2), max_epochs=3, seed=11)
    whole = plan_mix(src, lens, p, scores)
    assert whole.report.shortfalls and whole.report.long_select  # the hard parts are exercised

    n_src, n_bkt = len(SOURCES), len(EDGES) + 1
    bkt = assign_buckets(lens, EDGES)
    eligible, _ = select_long(src, bkt, lens, p.long_bucket(), {0: ("longdep_score", 0.5)}, scores)
    shards = np.array_split(np.arange(len(lens)), 5)
    parts = [cell_totals(src[i], bkt[i], lens[i], eligible[i], n_src, n_bkt) for i in shards]
    totals = parts[0]
    for part in parts[1:]:
        totals = totals + part
    wants, shortfalls = cell_targets(totals, p)
    counts = np.zeros(len(lens), dtype=np.int32)
    for s, b in reversed([(s, b) for s in range(n_src) for b in range(n_bkt)]):  # any order
        idx = np.concatenate([i[(src[i] == s) & (bkt[i] == b) & eligible[i]] for i in shards])
        counts[idx], achieved = plan_cell(lens[idx], int(wants.want[s, b]), p.seed, s, b)
        assert achieved == whole.report.achieved_tokens[s, b]
    np.testing.assert_array_equal(counts, whole.counts)
    np.testing.assert_array_equal(wants.target, whole.report.target_tokens)
    assert [sf.message for sf in shortfalls] == [sf.message for sf in whole.report.shortfalls]
