"""The shipped recipes load, and the data-mix ablation arms differ only in what they override."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO

from longmix.data.recipe import load_recipe

PIPELINES = REPO / "pipelines"
ARMS = ["natural", "remove-long", "upsample-long", "filtered", "filtered-upsample", "select-long"]


SUITES = sorted((PIPELINES / "ablations").glob("*.yaml"))  # ablation suites, not data recipes
SFT_DATA = sorted((PIPELINES / "sft").glob("*qa.yaml"))  # longmix sft-data recipes
SFT_PACK = sorted([*(PIPELINES / "sft").glob("*pack*.yaml"), PIPELINES / "ablations" / "sft-loss" / "pack.yaml"])
RECIPES = sorted(p for p in PIPELINES.rglob("*.yaml") if p not in {*SUITES, *SFT_DATA, *SFT_PACK})


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(PIPELINES)))
def test_recipe_writes_outside_the_source_tree(path):
    # a relative output resolves against the recipe's folder: it must land in build/, never among the sources
    recipe = load_recipe(path)
    out = Path(os.path.normpath(Path(recipe.base_dir) / recipe.output))  # not resolved: build/ may be a link
    assert Path(recipe.output).is_absolute() or out.is_relative_to(PIPELINES.parent / "build"), out


@pytest.mark.parametrize("path", SFT_DATA + SFT_PACK, ids=lambda p: str(p.relative_to(PIPELINES)))
def test_sft_recipe_writes_outside_the_source_tree(path):
    from longmix.cli.sft import settings_of
    from longmix.data.sft.sft_settings import load_sft_recipe

    if path in SFT_DATA:
        out = Path(os.path.normpath(settings_of(path).output))
    else:
        recipe = load_sft_recipe(path)
        out = Path(os.path.normpath(recipe.resolve(recipe.output)))
    if path.name != "pack.yaml":  # the suite's pack recipe leaves its output to the runner
        assert out.is_relative_to(PIPELINES.parent / "build"), out


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suite_validates(path):
    from longmix.ablate.suite import load_suite

    for quick in (False, True):
        assert load_suite(path, quick=quick).arms


def _without(recipe, *keys):
    data = recipe.model_dump(mode="json")
    for key in keys:
        node = data
        *head, last = key.split(".")
        for k in head:
            node = node[k]
        node.pop(last)
    return data


def test_data_mix_arms_share_everything_but_the_mix_and_filter():
    arms = {a: load_recipe(PIPELINES / "ablations" / "data-mix" / f"{a}.yaml") for a in ARMS}
    for arm in ARMS:
        assert _without(arms[arm], "name", "output", "stages.mix.sources", "stages.filter", "stages.longdep") == \
            _without(arms["natural"], "name", "output", "stages.mix.sources", "stages.filter", "stages.longdep"), arm
        assert [s.name for s in arms[arm].sources] == ["code", "web"]
    budgets = {a: r.stages.mix.total_tokens for a, r in arms.items()}
    assert len(set(budgets.values())) == 1  # equal token budgets, as in the paper
    removed = arms["remove-long"].stages.mix.sources
    assert all(set(s.remove_buckets) == {"<2048", ">=2048"} for s in removed.values())
    assert arms["upsample-long"].stages.mix.sources["web"].long_share == 0.6
    # quality: only the filtered arms filter, with the quality model on the web source
    assert [a for a in ARMS if arms[a].stages.filter.enabled] == ["filtered", "filtered-upsample"]
    for a in ("filtered", "filtered-upsample"):
        q = arms[a].stages.filter.quality
        assert q.sources == ["web"] and q.threshold == 0.5 and q.model.endswith("lowq-quality.bin")
    assert arms["filtered-upsample"].stages.mix.sources == arms["upsample-long"].stages.mix.sources
    # select-long: upsample-long's shares, its long docs chosen by the longdep score; nothing else differs
    select = arms["select-long"]
    assert select.stages.longdep.enabled and not arms["upsample-long"].stages.longdep.enabled
    web = select.stages.mix.sources["web"]
    assert (web.share, web.long_share, web.long_select.top) == (0.6, 0.6, 0.5)


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text("output: out\nsources: [{name: a, paths: [x]}]\n"
                                        "stages: {near_dedup: {threshold: 0.7, ngram: 3}}\n")
    (tmp_path / "arm.yaml").write_text("extends: base.yaml\nstages: {near_dedup: {threshold: 0.9}}\n"
                                       "sources: [{name: b, paths: [y]}]\n")
    r = load_recipe(tmp_path / "arm.yaml")
    assert (r.stages.near_dedup.threshold, r.stages.near_dedup.ngram) == (0.9, 3)
    assert [s.name for s in r.sources] == ["b"]
