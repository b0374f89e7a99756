"""The declared flow and the Stage interface: the engine's checks run before any stage, disabled stages are
skipped in the hash chain, and the sample stage (the worked example of docs/architecture.md) behaves."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import write_recipe

from longmix.core.errors import UserError
from longmix.data.flow import FLOW, STAGES, build
from longmix.data.recipe import load_recipe
from longmix.pipeline.stage import Stage


def _sources(demo_corpus):
    return [{"name": "docs", "paths": [str(demo_corpus / "docs" / "part-0000[0-3].jsonl")]},
            {"name": "legal", "paths": [str(demo_corpus / "legal" / "*.jsonl")]}]


def _build(tmp_path, demo_corpus, stages, name="out", until="sample", **kw):
    rec = load_recipe(write_recipe(tmp_path / f"{name}.yaml", tmp_path / name, _sources(demo_corpus), stages, **kw))
    return rec, build(rec, until=until, progress=False)


def _kept_ids(rec) -> set[str]:
    return set(pl.read_parquet(rec.output_dir / "sample" / "shards" / "**" / "*.parquet")["id"].to_list())


def test_flow_is_declared_once():
    assert STAGES == ["ingest", "sample", "exact_dedup", "near_dedup", "filter", "tokenize", "longdep", "mix", "pack"]
    assert all(isinstance(s, Stage) for s in FLOW)


def test_sample_keeps_a_seeded_share_and_accounts_for_the_rest(tmp_path, demo_corpus):
    rec, reports = _build(tmp_path, demo_corpus, {"sample": {"enabled": True, "fraction": 0.5,
                                                             "per_source": {"legal": 1.0}}})
    r = reports["sample"]
    assert r["in"] == reports["ingest"]["kept"]
    assert r["in"] == r["kept"] + r["dropped"].get("sampled_out", 0)
    docs = r["sources"]["docs"]
    assert 0.35 < docs["kept"] / docs["in"] < 0.65  # ~Binomial(n, 0.5), n in the hundreds
    assert r["sources"]["legal"]["kept"] == r["sources"]["legal"]["in"]
    assert r["fractions"] == {"docs": 0.5, "legal": 1.0}
    assert len(_kept_ids(rec)) == r["kept"]


def test_sample_depends_on_the_document_only(tmp_path, demo_corpus):
    """Other shard sizes and worker counts keep the same documents; a larger fraction keeps a superset."""
    small, _ = _build(tmp_path, demo_corpus, {"sample": {"enabled": True, "fraction": 0.3}}, "a")
    resharded, _ = _build(tmp_path, demo_corpus, {"sample": {"enabled": True, "fraction": 0.3},
                                                  "ingest": {"shard_bytes": 50_000}}, "b", workers=2)
    larger, _ = _build(tmp_path, demo_corpus, {"sample": {"enabled": True, "fraction": 0.6}}, "c")
    assert _kept_ids(small) == _kept_ids(resharded)
    assert _kept_ids(small) < _kept_ids(larger)


def test_disabled_stage_leaves_the_chain_unchanged(tmp_path, demo_corpus):
    """A disabled stage is skipped: the next stage hashes after the one before it, so turning the sample
    stage on and off again reuses what was built without it."""
    _, off = _build(tmp_path, demo_corpus, {}, "x", until="exact_dedup")
    assert "sample" not in off and (tmp_path / "x" / "exact_dedup" / "report.json").is_file()
    _, again = _build(tmp_path, demo_corpus, {"sample": {"enabled": False, "fraction": 0.2}}, "x",
                      until="exact_dedup")
    assert again["exact_dedup"]["settings_hash"] == off["exact_dedup"]["settings_hash"]


def test_every_stage_is_checked_before_any_runs(tmp_path, demo_corpus):
    with pytest.raises(UserError, match="stages.sample.per_source: unknown source nope"):
        _build(tmp_path, demo_corpus, {"sample": {"enabled": True, "per_source": {"nope": 0.5}}})
    assert not (tmp_path / "out" / "ingest").exists()  # nothing ran
