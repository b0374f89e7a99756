"""Object storage against a real S3 API (moto's server on 127.0.0.1): ingest from S3, a whole build written to
S3, verify on an S3 manifest, kill mid-stage and resume from an empty cache, the trainer's loader reading S3
shards, and one-line errors for a missing bucket or a denied write."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import yaml
from conftest import LONGMIX
from helpers_cli import cli
from helpers_s3 import S3Server, start_s3_server
from helpers_tree import tree_digest

pytestmark = pytest.mark.slow
SEQ = 256


@pytest.fixture(scope="module")
def s3(tmp_path_factory, demo_corpus):
    server = start_s3_server()
    saved = {k: os.environ.get(k) for k in (*server.env, "LONGMIX_CACHE")}
    os.environ.update(server.env)
    os.environ["LONGMIX_CACHE"] = str(tmp_path_factory.mktemp("cache-main"))
    fs = server.fs()
    for bucket in ("raw", "runs"):
        fs.create_dir(bucket)
    for source in ("docs", "legal"):
        server.put_tree(demo_corpus / source, f"raw/corpus/{source}")
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def tokenizer(docs_tokenizer) -> Path:
    return docs_tokenizer


def _recipe(path: Path, output: str, tokenizer: Path) -> Path:
    recipe = {
        "output": output, "seed": 3, "executor": {"workers": 2},
        "sources": [{"name": "docs", "paths": ["s3://raw/corpus/docs/*.jsonl"]},
                    {"name": "legal", "paths": ["s3://raw/corpus/legal/*.jsonl"]}],
        "tokenizer": {"path": str(tokenizer)}, "seq_len": SEQ,
        "stages": {"ingest": {"shard_bytes": 100_000}, "pack": {"rows_per_shard": 64}},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _longmix(*args: str, cache: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "LONGMIX_CACHE": str(cache)}
    return subprocess.Popen([*LONGMIX, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kw)


def _run(*args: str, cache: Path) -> tuple[int, str, str]:
    done = cli(*args, env={"LONGMIX_CACHE": str(cache)})
    return done.returncode, done.stdout, done.stderr


def _store_digest(s3: S3Server, prefix: str, tmp: Path) -> dict:
    """The store's files under prefix: data byte for byte, JSON without timings, nodes, times and the names
    that differ between two runs (the output URI and its cache folder)."""
    local = s3.get_tree(prefix, tmp / prefix.replace("/", "_"))
    digest = tree_digest(local)
    text = re.sub(r'[^"]*/objects/[0-9a-f]{12}-[A-Za-z0-9._-]+', "<cache>", json.dumps(digest, sort_keys=True))
    for a in (f"s3://{prefix}", prefix):
        text = text.replace(a, "<out>")
    out = json.loads(text)
    for rel in [k for k in out if k.endswith("manifest.json")]:
        for key in ("created", "recipe_sha256"):  # the recipe names its output URI
            out[rel]["lineage"].pop(key, None)
    for rel in [k for k in out if k == "pack/report.json"]:
        out[rel].pop("manifest", None)
    return out


@pytest.fixture(scope="module")
def uninterrupted(s3, tokenizer, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("s3-run-a")
    rc, out, err = _run("build", str(_recipe(tmp / "r.yaml", "s3://runs/a", tokenizer)), cache=tmp / "cache")
    assert rc == 0, err[-3000:]
    assert "outputs in s3://runs/a" in out
    return {"tmp": tmp, "digest": _store_digest(s3, "runs/a", tmp)}


def test_build_reads_and_writes_s3(s3, uninterrupted):
    digest = uninterrupted["digest"]
    assert "manifest.json" in digest and "pack/report.json" in digest
    ingest = digest["ingest/report.json"]
    assert ingest["in"] == ingest["kept"] + sum(ingest["dropped"].values()) + sum(ingest["quarantined"].values())
    assert all(i["path"].startswith("s3://raw/corpus/") for i in ingest["inputs"])
    # every stage's report went up, and every task's marker with it
    for stage in ("ingest", "exact_dedup", "near_dedup", "tokenize", "mix", "pack"):
        assert f"{stage}/report.json" in digest and f"{stage}/stage.json" in digest
    assert not [k for k in digest if k.rsplit("/", 1)[-1].startswith(".")], "temporary objects left behind"


def test_killed_mid_stage_resumes_from_an_empty_cache(s3, tokenizer, uninterrupted, tmp_path):
    recipe = _recipe(tmp_path / "r.yaml", "s3://runs/b", tokenizer)
    fs = s3.fs()
    proc = _longmix("build", str(recipe), cache=tmp_path / "cache-1")
    deadline = time.time() + 300

    def markers() -> int:
        sel = pafs.FileSelector("runs/b/near_dedup/_tasks", recursive=True, allow_not_found=True)
        return len(fs.get_file_info(sel))

    while markers() < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert fs.get_file_info("runs/b/pack/report.json").type == pafs.FileType.NotFound, "finished before the kill"
    # a fresh machine: nothing in its cache, everything it knows comes from the store
    rc, _, err = _run("build", str(recipe), cache=tmp_path / "cache-2")
    assert rc == 0, err[-3000:]
    assert "already done, resuming" in err
    resumed = _store_digest(s3, "runs/b", tmp_path)
    assert sorted(resumed) == sorted(uninterrupted["digest"])
    differ = [k for k in resumed if resumed[k] != uninterrupted["digest"][k]]
    assert not differ, [d for k in differ for d in _diff(resumed[k], uninterrupted["digest"][k], k)][:10]


@pytest.mark.ray
def test_ray_nodes_with_their_own_caches_build_to_s3(s3, tokenizer, uninterrupted, tmp_path):
    """Two Ray nodes that share nothing but the store (each its own LONGMIX_CACHE, neither the driver's):
    tasks pull their inputs from S3 and put their outputs there, and the result equals the local run's."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")

    def node(name: str) -> dict:
        return {"num_cpus": 1, "object_store_memory": 80 * 2**20,
                "env_vars": {**s3.env, "LONGMIX_CACHE": str(tmp_path / name), "RAY_DISABLE_USAGE_STATS": "1"}}

    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={**node("head"), "include_dashboard": False})
    try:
        cluster.add_node(**node("second"))
        cluster.wait_for_nodes()
        recipe = _recipe(tmp_path / "r.yaml", "s3://runs/c", tokenizer)
        proc = _longmix("build", str(recipe), "--address", cluster.address, cache=tmp_path / "driver")
        _, err = proc.communicate(timeout=600)  # a real driver process: Ray's client state stays out of pytest
        rc = proc.returncode
    finally:
        cluster.shutdown()
    assert rc == 0, err[-3000:]
    digest = _store_digest(s3, "runs/c", tmp_path)
    nodes = {p.parent.name: json.loads(p.read_text()).get("nodes", {})
             for p in (tmp_path / "runs_c").glob("*/report.json")}
    assert any(len(n) == 2 for n in nodes.values()), nodes
    for cache in ("head", "second"):  # each node pulled upstream shards it had never seen into its own cache
        assert list((tmp_path / cache).rglob("ingest/shards/*/*.parquet")), cache
    expected = dict(uninterrupted["digest"])
    differ = [k for k in digest if digest[k] != expected.get(k)]
    assert sorted(digest) == sorted(expected) and not differ, differ


def _copy_task(source_file: str, out: str) -> dict:
    Path(out).write_bytes(Path(source_file).read_bytes().upper())
    return {"read": source_file, "wrote": out}


def test_a_task_pulls_exactly_its_declared_inputs(s3, tmp_path, monkeypatch):
    """A task made on one node and run on another (its own cache): it pulls the inputs it declares, whatever
    their argument's name, and nothing else; its function gets str paths under that node's cache; its output
    reaches the store before its marker does."""
    import pickle

    from longmix.pipeline.folder import FolderPath, MirroredFolder
    from longmix.pipeline.tasks import Task, run_task

    fs = s3.fs()
    for name in ("a.txt", "b.txt"):
        with fs.open_output_stream(f"runs/typed/st/{name}") as out:
            out.write(name.encode())
    monkeypatch.setenv("LONGMIX_CACHE", str(tmp_path / "driver"))
    made = Task("t", _copy_task, {"source_file": FolderPath("st/a.txt", read=True), "out": FolderPath("st/o.txt")},
                marker=FolderPath("st/_tasks/t.json"), folder=MirroredFolder("s3://runs/typed"))
    monkeypatch.setenv("LONGMIX_CACHE", str(tmp_path / "node"))
    stats = run_task(pickle.loads(pickle.dumps(made)))  # as a worker on another node receives it
    assert stats["read"].startswith(str(tmp_path / "node")) and stats["wrote"].startswith(str(tmp_path / "node"))
    node = next((tmp_path / "node").rglob("st"))
    assert sorted(p.relative_to(node).as_posix() for p in node.rglob("*") if p.is_file()) == \
        ["_tasks/t.json", "a.txt", "o.txt"], "pulled only the declared input"
    with fs.open_input_stream("runs/typed/st/o.txt") as got:
        assert got.read() == b"A.TXT"
    assert fs.get_file_info("runs/typed/st/_tasks/t.json").type == pafs.FileType.File
    assert not (tmp_path / "driver").exists(), "nothing resolved under the driver's cache"


@pytest.mark.parametrize(("message", "kind"), [
    ("When initiating multiple part upload for key 'run/x' in bucket 'b': AWS Error NO_SUCH_BUCKET during "
     "CreateMultipartUpload operation: The specified bucket does not exist", "no_bucket"),
    ("When getting information for key 'run/x' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject "
     "operation: No response body.", "denied"),
    ("When getting information for key 'run/x' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject "
     "operation: curlCode: 7, Could not connect to server", None),
])
def test_store_refusals_are_classified_in_one_table(message, kind):
    """pyarrow's messages (a plain OSError each, no errno), as it raised them against moto's server."""
    from longmix.core.storage import refusal_kind, storage_error

    assert refusal_kind(OSError(message)) == kind
    line = str(storage_error("s3://b/run", OSError(message), "writing to"))
    assert {"no_bucket": "bucket 'b' does not exist", "denied": "access denied writing to s3://b/run",
            None: "is AWS_ENDPOINT_URL right?"}[kind] in line


def test_verify_on_s3_manifest(s3, uninterrupted, tmp_path):
    rc, out, err = _run("verify", "s3://runs/a/manifest.json", cache=tmp_path / "cache")
    assert rc == 0, err
    assert out.startswith("ok: ") and "s3://runs/a/manifest.json" in out
    # a shard changed in the store is caught (verify reads the store, not a cached copy)
    fs = s3.fs()
    shard = json.loads(fs.open_input_stream("runs/a/manifest.json").read())["shards"][0]["path"]
    fs.copy_file(f"runs/a/{shard}", "runs/a-backup-shard")
    with fs.open_output_stream(f"runs/a/{shard}") as f:
        f.write(b"not a shard")
    try:
        rc, _, err = _run("verify", "s3://runs/a/manifest.json", cache=tmp_path / "cache")
    finally:
        fs.copy_file("runs/a-backup-shard", f"runs/a/{shard}")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"s3://runs/a/manifest.json: shard {shard}: sha256 mismatch" in err


def test_trainer_loader_stages_s3_shards(s3, uninterrupted, tmp_path, monkeypatch):
    from longmix.formats.staging import stage_manifest
    from longmix.train.loader import PhaseData

    monkeypatch.setenv("LONGMIX_CACHE", str(tmp_path / "node-cache"))
    local = stage_manifest("s3://runs/a/manifest.json")
    assert local.is_relative_to(tmp_path / "node-cache")
    data = PhaseData(local, verify=True)
    copy = s3.get_tree("runs/a", tmp_path / "copy")
    ref = PhaseData(copy / "manifest.json", verify=True)
    idx = np.arange(len(ref))
    assert len(data) == len(ref) > 0 and np.array_equal(data.tokens(idx), ref.tokens(idx))
    stamp = next(local.parent.glob(".manifest.json.staged.json"))
    mtime = stamp.stat().st_mtime_ns
    assert stage_manifest("s3://runs/a/manifest.json") == local and stamp.stat().st_mtime_ns == mtime


def test_missing_bucket_is_one_line_before_any_work(s3, tokenizer, tmp_path):
    rc, _, err = _run("build", str(_recipe(tmp_path / "r.yaml", "s3://no-such-bucket/run", tokenizer)),
                      cache=tmp_path / "cache")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "bucket 'no-such-bucket' does not exist" in err
    assert not list((tmp_path / "cache").rglob("stage.json")), "work started before the bucket was checked"


def test_denied_write_is_one_line(tokenizer, tmp_path, demo_corpus):
    """A server that enforces IAM: the first requests (unauthenticated) make a bucket and a read-only user."""
    import boto3

    server = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        kw = {"endpoint_url": server.endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
              "region_name": "us-east-1"}
        boto3.client("s3", **kw).create_bucket(Bucket="readonly")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:HeadBucket"], "Resource": "*"}]}
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        recipe = {"output": "s3://readonly/run", "sources": [
            {"name": "legal", "paths": [str(demo_corpus / "legal" / "*.jsonl")]}]}
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
        env = {**os.environ, **server.env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "LONGMIX_CACHE": str(tmp_path / "cache")}
        done = subprocess.run([*LONGMIX, "build", str(tmp_path / "r.yaml")], env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "access denied writing to s3://readonly/run" in done.stderr


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _diff(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {str(a)[:200]} != {str(b)[:200]}"


def test_export_data_from_and_to_s3(s3, uninterrupted, tmp_path):
    """`longmix export-data` reads a store manifest and writes to a store prefix: the objects are the bytes a
    local export of the same mix writes, the sidecar among them."""
    rc, _, err = _run("export-data", "s3://runs/a/manifest.json", "--to", "olmo", "-o", "s3://runs/a-olmo",
                      cache=tmp_path / "cache")
    assert rc == 0, err
    copy = s3.get_tree("runs/a", tmp_path / "copy")
    rc, _, err = _run("export-data", str(copy / "manifest.json"), "--to", "olmo", "-o", str(tmp_path / "local"),
                      cache=tmp_path / "cache")
    assert rc == 0, err
    remote = s3.get_tree("runs/a-olmo", tmp_path / "remote")
    names = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    assert "longmix-export.json" in names and any(n.endswith(".csv.gz") for n in names)
    for name in names:
        if name != "longmix-export.json":  # it names the manifest's path, which differs
            assert (remote / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
