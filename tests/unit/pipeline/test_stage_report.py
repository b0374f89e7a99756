"""The engine's stage contract: the typed report, declared reads between stages, and batch counting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob, StageOutput
from longmix.pipeline.stats import Counts, merge


def _report(**extras) -> StageReport:
    c = Counts()
    c.add(["a", "b"], [3, 4], [None, "short"])
    return StageReport.from_merged("s", merge([c.to_dict(outputs=[{"path": "x"}], quarantine_files=[])]), extras, "h")


def test_extras_may_not_overwrite_counts() -> None:
    with pytest.raises(ValueError, match="kept"):
        _report(kept=99)
    with pytest.raises(ValueError, match="outputs"):
        _report(outputs=[])


def test_report_json_round_trips() -> None:
    r = _report(tokens=7)
    data = r.to_json()
    assert list(data)[:3] == ["stage", "in", "kept"] and data["tokens"] == 7 and data["dropped"] == {"short": 1}
    assert StageReport.from_json(data) == r
    assert r["kept"] == 1 and r.extra("tokens") == 7
    with pytest.raises(KeyError):
        r["tokens"]  # extras are read as extras, never as counts


def test_counts_add_matches_one_document_at_a_time() -> None:
    rng = np.random.default_rng(0)
    sources = rng.choice(["a", "b", "c"], 200).tolist()
    nbytes = rng.integers(0, 1000, 200)
    reasons = [None if r < 0.6 else ("short" if r < 0.8 else "lang") for r in rng.random(200)]
    quarantined = rng.random(200) < 0.1
    one = Counts()
    for s, nb, why, q in zip(sources, nbytes.tolist(), reasons, quarantined.tolist(), strict=True):
        one.saw(s, nb)
        if why is None:
            one.keep(s, nb)
        elif q:
            one.quarantine(s, why)
        else:
            one.drop(s, why)
    batch = Counts()
    batch.add(sources[:50], nbytes[:50], reasons[:50], quarantined[:50])
    batch.add(sources[50:], nbytes[50:], reasons[50:], quarantined[50:])
    batch.add([], np.zeros(0, np.int64))
    assert batch.to_dict() == one.to_dict()


class _Reader(Stage):
    name = "reader"
    requires = ("first",)


class _Ctx:
    def stage_dir(self, name: str) -> Path:
        return Path("/nowhere") / name

    def output_of(self, name: str) -> StageOutput:
        return StageOutput(name, _report(inputs=[1]), Path("/nowhere") / name, exports=("inputs",))


def test_a_stage_reads_only_what_it_requires_and_what_is_exported() -> None:
    job = StageJob(_Ctx(), _Reader(), None, "h", None)  # type: ignore[arg-type]
    assert job.output_of("first").export("inputs") == [1]
    with pytest.raises(RuntimeError, match="requires"):
        job.output_of("second")
    with pytest.raises(RuntimeError, match="does not export"):
        job.output_of("first").export("tokens")


class _Fake(Stage):
    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key  # type: ignore[misc]

    def enabled(self, recipe: dict) -> bool:
        return self.key in recipe

    def prepare(self, recipe: dict) -> object:
        if recipe[self.key] is None:
            from longmix.core.errors import UserError

            raise UserError("cannot prepare")
        return recipe[self.key]

    def settings(self, recipe: dict, plan: object) -> list:
        return [plan]


def test_common_stages_follow_the_settings_hash_chain() -> None:
    """What an ablation arm shares with its upstream recipe: the leading stages with the same chained hash."""
    from longmix.pipeline.runner import common_stages

    flow = [_Fake("ingest", "i"), _Fake("tokenize", "t"), _Fake("longdep", "l"), _Fake("mix", "m")]
    shared = {"i": 1, "t": 2, "m": None}  # the shared recipe cannot prepare the mix (no seq_len)
    assert common_stages(flow, {"i": 1, "t": 2, "m": 5}, shared) == ["ingest", "tokenize"]
    assert common_stages(flow, {"i": 1, "t": 2, "l": 0, "m": 5}, shared) == ["ingest", "tokenize"]
    assert common_stages(flow, {"i": 1, "t": 3, "m": 5}, shared) == ["ingest"]
    assert common_stages(flow, {"i": 0, "t": 2, "m": 5}, shared) == []  # a changed upstream changes every hash
