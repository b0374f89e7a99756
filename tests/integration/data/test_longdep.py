"""The longdep stage, scored by a real model (SmolLM2-135M) at short lengths, and the mix's long_select."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import LONGMIX, write_jsonl, write_recipe
from helpers_cli import cli, one_line_error
from helpers_mix import assert_plan_matches_one_process

from longmix.data.flow import build
from longmix.data.recipe import load_recipe
from longmix.data.tokenize.encode import train_bpe

LONGDEP = {"enabled": True, "window": 48, "max_len": 512, "min_tokens": 96, "batch_size": 4, "margin": 0.5}
SYLLABLES = ["kra", "vel", "mon", "tis", "dra", "qu", "zen", "lor", "phi", "ska", "bru", "nax", "ot", "wim"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def _planted(demo_corpus: Path) -> list[dict]:
    """Per seed: a document whose second half restates the made-up names and numbers of its first half, and
    the same second half after an unrelated first half (real text of about the same length)."""
    fillers = [json.loads(x)["text"] for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    fillers = [f for f in fillers if len(f) > 2000]
    records = []
    for k in range(2):
        rng = random.Random(k)
        facts = [(_name(rng), rng.randrange(10_000, 99_999), _name(rng)) for _ in range(8)]
        first = " ".join(f"The registry lists {a} with code {n}, kept by {b}." for a, n, b in facts)
        rng.shuffle(facts)
        second = " ".join(f"Later, {b} confirmed that {a} still holds code {n}." for a, n, b in facts)
        unrelated = " ".join(fillers[k].split()[: len(first.split())])
        records.append({"id": f"linked{k}", "text": f"{first}\n\n{second}"})
        records.append({"id": f"unrelated{k}", "text": f"{unrelated}\n\n{second}"})
    records.append({"id": "short", "text": "Too short to score: a few words only."})
    return records


def _recipe(tmp: Path, demo_corpus: Path, smollm2: Path, name: str, workers: int = 1, **longdep) -> Path:
    tok = tmp / "tok.json"
    if not tok.exists():  # written once: a rewritten input would (rightly) invalidate earlier builds
        write_jsonl(tmp / "planted.jsonl", _planted(demo_corpus))
        write_jsonl(tmp / "notes.jsonl", [{"id": "note", "text": "A second source, whose shard has the same name."}])
        train_bpe([r["text"] for r in _planted(demo_corpus)] * 4, 512, tok)
    stages = {"ingest": {"shard_bytes": 1000}, "near_dedup": {"enabled": False},
              "longdep": {**LONGDEP, "scorer": str(smollm2), **longdep}}
    sources = [{"name": "planted", "paths": ["planted.jsonl"]}, {"name": "notes", "paths": ["notes.jsonl"]}]
    path = write_recipe(tmp / f"{name}.yaml", tmp / name, sources, stages, workers=workers)
    data = yaml.safe_load(path.read_text())
    data.update(tokenizer={"path": str(tok)}, seq_len=256)
    path.write_text(yaml.safe_dump(data))
    return path


def _scores(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "longdep" / "scores" / "**" / "*.parquet").sort("id")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, demo_corpus, smollm2):
    tmp = tmp_path_factory.mktemp("longdep")
    recipe = _recipe(tmp, demo_corpus, smollm2, "ref")
    reports = build(load_recipe(recipe), until="longdep", progress=False)
    return tmp, recipe, reports


def test_linked_halves_score_clearly_above_unrelated_halves(scored):
    tmp, _, reports = scored
    s = {r["id"]: r for r in _scores(tmp / "ref").to_dicts()}
    for k in range(2):
        linked, unrelated = s[f"linked{k}"]["longdep_score"], s[f"unrelated{k}"]["longdep_score"]
        assert linked > unrelated + 0.3 and linked > 2 * max(unrelated, 0.05), (k, linked, unrelated)
        assert s[f"linked{k}"]["longdep_share"] > s[f"unrelated{k}"]["longdep_share"]
    assert np.isnan(s["short"]["longdep_score"]) and s["short"]["windows"] == 0
    r = reports["longdep"]
    assert r["in"] == r["kept"] == 6 and r["dropped"] == {}
    # one scores file per tokenized shard, the same documents in the same order
    tokenized = sorted((tmp / "ref" / "tokenize").rglob("*.arrow"))
    scores = sorted((tmp / "ref" / "longdep" / "scores").rglob("*.parquet"))
    assert [p.relative_to(tmp / "ref" / "longdep" / "scores").with_suffix("") for p in scores] == \
        [p.relative_to(tmp / "ref" / "tokenize").with_suffix("") for p in tokenized]
    for t, sc in zip(tokenized, scores, strict=True):
        assert pl.read_ipc(t)["id"].to_list() == pl.read_parquet(sc)["id"].to_list()
    assert r["histograms"]["planted"]["scored"] == 4 and sum(r["histograms"]["planted"]["counts"]) == 4
    assert r["scorer"]["forward_tokens"] > r["scorer"]["scored_tokens"] > 0 and r["scorer"]["tokens_per_second"] > 0


def test_scores_do_not_depend_on_batch_size_or_workers(scored, demo_corpus, smollm2):
    tmp, _, _ = scored
    other = _recipe(tmp, demo_corpus, smollm2, "other", workers=2, batch_size=1)
    build(load_recipe(other), until="longdep", progress=False)
    a, b = _scores(tmp / "ref"), _scores(tmp / "other")
    assert a["id"].to_list() == b["id"].to_list()
    sa, sb = a["longdep_score"].to_numpy(), b["longdep_score"].to_numpy()
    assert np.array_equal(np.isnan(sa), np.isnan(sb))
    assert np.allclose(sa[~np.isnan(sa)], sb[~np.isnan(sb)], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_killed_scoring_resumes_to_identical_scores(scored, demo_corpus, smollm2):
    tmp, _, _ = scored
    ref = _recipe(tmp, demo_corpus, smollm2, "cli-ref")
    assert cli("build", ref, "--until", "longdep").returncode == 0
    killed = _recipe(tmp, demo_corpus, smollm2, "killed")
    proc = subprocess.Popen([*LONGMIX, "build", str(killed), "--until", "longdep"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # a real process to kill -9
    markers, deadline = tmp / "killed" / "longdep" / "_tasks", time.time() + 600
    while (len(list(markers.glob("score-*.json"))) if markers.is_dir() else 0) < 2 and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp / "killed" / "longdep" / "report.json").exists(), "the run finished before the kill"
    again = cli("build", killed, "--until", "longdep")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already done, resuming" in again.stderr
    assert _scores(tmp / "killed").equals(_scores(tmp / "cli-ref"))


def test_a_missing_or_unloadable_scorer_is_one_line(tmp_path, demo_corpus, smollm2):
    missing = _recipe(tmp_path, demo_corpus, tmp_path / "no-such-model", "missing")
    one_line_error(cli("build", missing), "stages.longdep.scorer")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"}')
    (broken / "tokenizer.json").write_text("{}")
    one_line_error(cli("build", _recipe(tmp_path, demo_corpus, broken, "broken")), "cannot load")


def test_long_select_keeps_the_top_scored_long_documents(scored):
    tmp, recipe, _ = scored
    data = yaml.safe_load(recipe.read_text())
    data["stages"]["mix"] = {"edges": [64, 200], "long_min_tokens": 200,
                             "sources": {"planted": {"long_select": {"by": "longdep_score", "top": 0.5}}}}
    recipe.write_text(yaml.safe_dump(data))
    reports = build(load_recipe(recipe), progress=False)  # tokenize and longdep are reused
    mix = reports["mix"]
    sel = mix["mix"]["long_select"]["planted"]
    assert sel["long_documents"] == 4 and sel["selected"] == 2 and sel["scored"] == 4
    assert sel["min_selected_score"] > sel["max_unselected_score"]
    assert mix["dropped"]["long_not_selected"] == 2
    plan = pl.read_ipc(tmp / "ref" / "mix" / "plan.arrow")
    outputs = json.loads((tmp / "ref" / "tokenize" / "report.json").read_text())["outputs"]
    tokenized = pl.concat([pl.read_ipc(tmp / "ref" / "tokenize" / o["path"]) for o in outputs])
    used = set(tokenized["id"].gather(np.flatnonzero(plan["count"].to_numpy() > 0)).to_list())
    assert {"linked0", "linked1"} <= used and not used & {"unrelated0", "unrelated1"}
    manifest = json.loads((tmp / "ref" / "manifest.json").read_text())
    assert manifest["mix"]["long_select"]["planted"]["selected"] == 2
    assert_plan_matches_one_process(load_recipe(recipe), mix)  # selected per source as a task, as in one process


def test_long_select_without_the_stage_fails_before_any_work(tmp_path, demo_corpus, smollm2):
    recipe = _recipe(tmp_path, demo_corpus, smollm2, "nostage", enabled=False)
    data = yaml.safe_load(recipe.read_text())
    data["stages"]["mix"] = {"sources": {"planted": {"long_select": {"top": 0.5}}}}
    recipe.write_text(yaml.safe_dump(data))
    one_line_error(cli("build", recipe), "needs the longdep stage")
    assert not (tmp_path / "nostage" / "ingest").exists()
