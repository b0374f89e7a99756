"""Resume after kill -9 and executor equivalence: outputs byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LONGMIX, write_recipe
from helpers_cli import cli, one_line_error
from helpers_tree import assert_same_tree

from longmix.data.flow import build
from longmix.data.recipe import load_recipe


def _sources(corpus: Path) -> list[dict]:
    return [{"name": s, "paths": [str(corpus / s / "*.jsonl")]} for s in ("code", "docs", "legal")]


# Small shards so that every stage has many tasks to be killed between.
_STAGES = {"ingest": {"shard_bytes": 400_000}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_corpus) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    rec = load_recipe(write_recipe(tmp / "r.yaml", tmp / "out", _sources(demo_corpus), _STAGES, workers=1))
    build(rec, progress=False)
    return tmp / "out"


def _markers(out: Path, stage: str, prefix: str) -> int:
    folder = out / stage / "_tasks"
    return len(list(folder.glob(f"{prefix}*.json"))) if folder.is_dir() else 0


@pytest.mark.slow
@pytest.mark.parametrize("stage,prefix,after", [("ingest", "", 3), ("near_dedup", "bands", 4),
                                                 ("near_dedup", "edges", 5), ("near_dedup", "apply", 5)])
def test_kill_and_resume_is_byte_identical(tmp_path, demo_corpus, reference, stage, prefix, after):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=1)
    proc = subprocess.Popen([*LONGMIX, "build", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # a real process to kill -9
    deadline = time.time() + 120
    while _markers(tmp_path / "out", stage, prefix) < after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "near_dedup" / "report.json").exists(), "the run finished before the kill"
    done = cli("build", recipe)
    assert done.returncode == 0, done.stderr
    assert "already done, resuming" in done.stderr or stage == "ingest"
    assert_same_tree(tmp_path / "out", reference)


@pytest.mark.slow
@pytest.mark.parametrize("prefix,folder", [("verify", "verify"), ("cc-", "components"), ("greedy-", "greedy")])
def test_kill_during_split_clustering_resumes_from_the_finished_tasks(tmp_path, demo_corpus, reference, prefix,
                                                                      folder):
    """Near dedup split fine (4 kB tasks: many document ranges): killed -9 after a few verification, component
    round or keep-rule tasks, the rerun keeps their results (markers and files untouched) and decides the same
    as the unsplit reference."""
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=1)
    recipe.write_text(recipe.read_text().replace(
        "executor:", "executor:\n  resources: {near_dedup: {memory_gb: 0.000004}}", 1))
    proc = subprocess.Popen([*LONGMIX, "build", str(recipe), "--until", "near_dedup"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # a real process to kill -9
    try:
        while _markers(tmp_path / "out", "near_dedup", prefix) < 2 and proc.poll() is None:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stage = tmp_path / "out" / "near_dedup"
    assert not (stage / "decisions.parquet").exists(), "the clustering finished before the kill"
    markers = list((stage / "_tasks").glob(f"{prefix}*.json"))
    # A finished task's files carry its name (a killed task may have written files but not its marker yet)
    names = [m.stem.removeprefix(prefix).lstrip("-") for m in markers]
    outputs = [f for f in (stage / folder).glob("*.arrow") if any(f.stem.endswith("-" + n) for n in names)]
    finished = {p: p.stat().st_mtime_ns for p in [*markers, *outputs]}
    assert len(finished) >= 4
    done = cli("build", recipe, "--until", "near_dedup")
    assert done.returncode == 0, done.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not run again
    report = json.loads((stage / "report.json").read_text())["clustering"]
    assert report["verify_tasks"] > 2 and report["doc_ranges"] > 4
    for name in ("decisions.parquet", "removed.parquet", "clusters.parquet"):
        assert (stage / name).read_bytes() == (reference / "near_dedup" / name).read_bytes(), name


def test_rerun_of_finished_recipe_does_nothing(tmp_path, demo_corpus, reference):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2)
    first = build(load_recipe(recipe), progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.parquet")}
    second = build(load_recipe(recipe), progress=False)
    assert first == second
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.parquet")}
    assert_same_tree(tmp_path / "out", reference)  # 2 workers give the same bytes as 1


@pytest.mark.ray
@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, demo_corpus, reference):
    pytest.importorskip("ray")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2,
                          kind="ray")
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    done = subprocess.run([*LONGMIX, "build", str(recipe)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tree(tmp_path / "out", reference)


def test_changed_settings_refuse_to_mix_outputs(tmp_path, demo_corpus):
    sources = _sources(demo_corpus)[2:]
    build(load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources)), progress=False)
    changed = write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources, {"near_dedup": {"threshold": 0.5}})
    one_line_error(cli("build", changed), "near_dedup", "other settings")
