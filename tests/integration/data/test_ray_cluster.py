"""The Ray executor on a real multi-node cluster (a head and a second node, each its own raylet): tasks run on
both nodes, the output is byte-identical to the local executor, and killing a node's raylet mid-stage leaves
a run that resumes to identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LONGMIX, write_recipe
from helpers_tree import assert_same_tree

from longmix.data.flow import build
from longmix.data.recipe import load_recipe

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray_cluster_utils = pytest.importorskip("ray.cluster_utils")

_STAGES = {"ingest": {"shard_bytes": 400_000}}
_NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


def _sources(corpus: Path) -> list[dict]:
    return [{"name": s, "paths": [str(corpus / s / "*.jsonl")]} for s in ("code", "docs", "legal")]


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, demo_corpus) -> Path:
    tmp = tmp_path_factory.mktemp("ray-reference")
    build(load_recipe(write_recipe(tmp / "r.yaml", tmp / "out", _sources(demo_corpus), _STAGES, workers=2)),
          progress=False)
    return tmp / "out"


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    c = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={**_NODE, "include_dashboard": False})
    worker = c.add_node(**_NODE)
    c.wait_for_nodes(timeout=600)  # a loaded machine starts raylets slowly
    try:
        yield c, worker
    finally:
        c.shutdown()


def _build(recipe: Path, address: str, args: tuple[str, ...] | list[str] = (), **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([*LONGMIX, "build", str(recipe), "--address", address, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)


def _nodes_per_stage(out: Path) -> dict[str, dict[str, int]]:
    return {p.parent.name: json.loads(p.read_text()).get("nodes", {}) for p in sorted(out.glob("*/report.json"))}


def test_build_on_two_node_cluster_matches_local(tmp_path, demo_corpus, local_reference, cluster):
    c, _ = cluster
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2)
    proc = _build(recipe, c.address)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"joined the Ray cluster at {c.address}: 2 node(s)" in err
    nodes = _nodes_per_stage(tmp_path / "out")
    # every task's marker names its node; the stages with many tasks spread over both nodes
    assert any(len(n) == 2 for n in nodes.values()), nodes
    marker = next((tmp_path / "out" / "ingest" / "_tasks").glob("*.json"))
    assert json.loads(marker.read_text())["stats"]["node"] in nodes["ingest"]
    assert_same_tree(tmp_path / "out", local_reference)


def test_near_dedup_split_into_small_tasks_on_two_nodes_decides_the_same(tmp_path, demo_corpus, local_reference,
                                                                      cluster):
    """A task memory of 64 kB splits near dedup's bands into key ranges, its pairs into slices and its
    components into groups, run on both nodes: the same decisions as the local build with one task each."""
    c, _ = cluster
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2)
    text = recipe.read_text().replace("executor:", "executor:\n  resources: {near_dedup: {memory_gb: 0.00006}}", 1)
    recipe.write_text(text)
    proc = _build(recipe, c.address, args=["--until", "near_dedup"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    split = json.loads((tmp_path / "out" / "near_dedup" / "report.json").read_text())["clustering"]
    whole = json.loads((local_reference / "near_dedup" / "report.json").read_text())["clustering"]
    assert split["key_ranges_per_band"] > 1 and whole["key_ranges_per_band"] == 1
    assert split["verify_tasks"] > 1 and whole["verify_tasks"] == 1, (split, whole)
    for name in ("decisions.parquet", "removed.parquet", "clusters.parquet"):
        got, want = tmp_path / "out" / "near_dedup" / name, local_reference / "near_dedup" / name
        assert got.read_bytes() == want.read_bytes(), name


def test_unschedulable_task_and_unreachable_cluster_are_one_line(tmp_path, demo_corpus, cluster):
    c, _ = cluster
    stages = {**_STAGES, "near_dedup": {"enabled": False}}
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus)[2:], stages)
    text = recipe.read_text().replace("executor:", "executor:\n  resources: {ingest: {memory_gb: 100000}}", 1)
    recipe.write_text(text)
    proc = _build(recipe, c.address)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "no node of the Ray cluster can run a task needing 1 CPUs and 100000.0 GiB" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "ingest").exists(), "work started before the check"
    proc = _build(recipe, "127.0.0.1:1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "no Ray cluster answers at '127.0.0.1:1'" in err


def test_node_killed_mid_stage_resumes_identically(tmp_path, demo_corpus, local_reference, cluster):
    c, worker = cluster
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2)
    proc = _build(recipe, c.address)
    markers = tmp_path / "out" / "near_dedup" / "_tasks"
    deadline = time.time() + 300
    while (not markers.is_dir() or len(list(markers.glob("bands*.json"))) < 2) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before the kill"
    raylet = worker.all_processes["raylet"][0].process
    os.kill(raylet.pid, signal.SIGKILL)  # the second node dies mid-stage, its workers with it
    raylet.wait()
    c.remove_node(worker, allow_graceful=False)  # the cluster object stops counting it (and ends its workers)
    try:
        _, err = proc.communicate(timeout=600)  # Ray reschedules on the head, or the run stops with one line
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print("interrupted run:", proc.returncode, err[-600:])
    assert proc.returncode in (0, 2) and "Traceback" not in err, err[-3000:]
    done = _build(recipe, c.address)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-3000:]
    assert_same_tree(tmp_path / "out", local_reference)


@pytest.mark.parametrize("step", ["cc-", "greedy-"])
def test_node_killed_during_components_or_keep_rule_resumes_identically(tmp_path, demo_corpus, local_reference,
                                                                         cluster, step):
    """Near dedup split into many small tasks on a fresh second node, whose raylet is killed once the first
    component-round (or keep-rule) tasks have finished: Ray reruns the lost tasks or the rerun resumes from
    the finished ones, and the decisions are the local build's."""
    c, _ = cluster
    node = c.add_node(**_NODE)
    c.wait_for_nodes(timeout=600)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", _sources(demo_corpus), _STAGES, workers=2)
    recipe.write_text(recipe.read_text().replace(
        "executor:", "executor:\n  resources: {near_dedup: {memory_gb: 0.000004}}", 1))
    proc = _build(recipe, c.address, args=["--until", "near_dedup"])
    markers = tmp_path / "out" / "near_dedup" / "_tasks"
    try:
        while (not markers.is_dir() or len(list(markers.glob(f"{step}*.json"))) < 2) and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the build ended before the kill"
        raylet = node.all_processes["raylet"][0].process
        os.kill(raylet.pid, signal.SIGKILL)
        raylet.wait()
        c.remove_node(node, allow_graceful=False)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (0, 2) and "Traceback" not in err, err[-3000:]
    done = _build(recipe, c.address, args=["--until", "near_dedup"])
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-3000:]
    report = json.loads((tmp_path / "out" / "near_dedup" / "report.json").read_text())["clustering"]
    assert report["doc_ranges"] > 4 and report["component_rounds"] >= 2, report
    for name in ("decisions.parquet", "removed.parquet", "clusters.parquet"):
        got, want = tmp_path / "out" / "near_dedup" / name, local_reference / "near_dedup" / name
        assert got.read_bytes() == want.read_bytes(), name
