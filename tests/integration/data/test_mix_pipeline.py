"""tokenize -> mix -> pack as pipeline stages: manifest, verify, determinism, shortfalls, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_cli import cli, one_line_error
from helpers_mix import assert_plan_matches_one_process
from helpers_tree import tree_digest

from longmix.data.flow import build
from longmix.data.recipe import load_recipe
from longmix.formats.ipc import read_ipc
from longmix.formats.manifest import verify_manifest
from longmix.formats.packed_shards import read_rows
from longmix.formats.tokenizer_files import load_tokenizer

SEQ = 512


@pytest.fixture(scope="module")
def tokenizer(docs_tokenizer) -> Path:
    return docs_tokenizer


def _recipe(tmp: Path, corpus: Path, tokenizer: Path, workers: int = 1, mix: dict | None = None,
            pack: dict | None = None) -> Path:
    recipe = {
        "output": str(tmp / "out"), "seed": 3, "executor": {"workers": workers},
        "sources": [{"name": "docs", "paths": [str(corpus / "docs" / "*.jsonl")]},
                    {"name": "legal", "paths": [str(corpus / "legal" / "*.jsonl")]}],
        "tokenizer": {"path": str(tokenizer)}, "seq_len": SEQ,
        "stages": {"ingest": {"shard_bytes": 100_000}, "near_dedup": {"enabled": False},
                   "mix": mix or {}, "pack": {"rows_per_shard": 64, **(pack or {})}},
    }
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_manifest_round_trip(tmp_path, demo_corpus, tokenizer):
    rec = load_recipe(_recipe(tmp_path, demo_corpus, tokenizer))
    reports = build(rec, progress=False)
    manifest = verify_manifest(rec.output_dir / "manifest.json")
    assert manifest.seq_len == SEQ and manifest.sources == ["docs", "legal"]
    # Natural mix, one pass: every tokenized token is packed exactly once.
    tokenized = sum(o["tokens"] for o in reports["tokenize"]["outputs"])
    assert manifest.totals.tokens == tokenized == manifest.mix["achieved_tokens"]
    rows = [read_rows(rec.output_dir / s.path, SEQ) for s in manifest.shards]
    # Every row's segments sum to seq_len and every source index is valid.
    for r in rows:
        seg_sums = np.add.reduceat(r.seg_lens, r.seg_offsets[:-1]) if len(r.seg_lens) else []
        assert np.all(np.asarray(seg_sums) == SEQ)
        assert set(np.unique(r.seg_sources).tolist()) <= {-1, 0, 1}
    # The multiset of tokens out equals the tokens in (packing only moves tokens around).
    tok_in = np.concatenate([np.concatenate(read_ipc(rec.output_dir / "tokenize" / o["path"])
                                            .column("input_ids").to_numpy(zero_copy_only=False))
                             for o in reports["tokenize"]["outputs"]])
    out = np.concatenate([r.input_ids[i, : SEQ - r.pad[i]] for r in rows for i in range(len(r.pad))])
    assert np.array_equal(np.bincount(tok_in), np.bincount(out, minlength=len(np.bincount(tok_in))))
    # BOS/EOS framing from the recipe: documents start with <s> and end with </s>.
    tok = load_tokenizer(tokenizer)
    first = read_ipc(rec.output_dir / "tokenize" / reports["tokenize"]["outputs"][0]["path"]).column("input_ids")[0]
    assert first.values[0].as_py() == tok.token_to_id("<s>") and first.values[-1].as_py() == tok.token_to_id("</s>")


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, demo_corpus, tokenizer):
    mix = {"total_tokens": 150_000, "sources": {"docs": {"share": 0.9, "long_share": 0.8},
                                                "legal": {"share": 0.1}}}
    digests = []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        rec = load_recipe(_recipe(folder, demo_corpus, tokenizer, workers, mix))
        build(rec, progress=False)
        digests.append({k: v for k, v in tree_digest(rec.output_dir / "pack").items() if k.endswith(".arrow")})
    assert digests[0] == digests[1] and len(digests[0]) >= 3


def test_upsampling_long_text_and_shortfall_in_manifest(tmp_path, demo_corpus, tokenizer):
    # Long = at least seq_len tokens here; docs' natural long share is about 0.82.
    mix = {"total_tokens": 200_000, "max_epochs": 2, "long_min_tokens": SEQ,
           "sources": {"docs": {"share": 0.8, "long_share": 0.95}, "legal": {"share": 0.2}}}
    rec = load_recipe(_recipe(tmp_path, demo_corpus, tokenizer, mix=mix))
    build(rec, progress=False)
    manifest = json.loads((rec.output_dir / "manifest.json").read_text())
    long_share = {x["source"]: x for x in manifest["mix"]["long_share"]}
    assert long_share["docs"]["achieved"] == pytest.approx(0.95, abs=0.01)
    natural = [c for c in manifest["mix"]["cells"] if c["source"] == "docs"]
    avail_long = sum(c["available_tokens"] for c in natural if c["bucket"] == ">=512")
    assert avail_long / sum(c["available_tokens"] for c in natural) < 0.85
    # legal has ~16k tokens; 2 epochs cannot give 40k: the shortfall is recorded with its exact size.
    short = [s for s in manifest["mix"]["shortfalls"] if s["source"] == "legal"]
    assert short and all(s["missing_tokens"] == s["target_tokens"] - s["achievable_tokens"] > 0 for s in short)
    legal_cells = [c for c in manifest["mix"]["cells"] if c["source"] == "legal"]
    assert sum(s["missing_tokens"] for s in short) == 40_000 - sum(c["achieved_tokens"] for c in legal_cells)
    mix_report = json.loads((rec.output_dir / "mix" / "report.json").read_text())
    assert mix_report["in"] == mix_report["kept"] + sum(mix_report["dropped"].values())


def test_plan_as_tasks_equals_the_plan_in_one_process(tmp_path, demo_corpus, tokenizer):
    """Shards, cells and the plan as tasks (2 workers, several shards, a removed bucket, bucket weights, a
    long share and a capped cell) give the counts and the report of plan_mix over the whole corpus."""
    mix = {"total_tokens": 150_000, "max_epochs": 2, "long_min_tokens": SEQ,
           "sources": {"docs": {"share": 0.7, "long_share": 0.9, "remove_buckets": [0]},
                       "legal": {"share": 0.3, "bucket_weights": {"1": 2.0}}}}
    rec = load_recipe(_recipe(tmp_path, demo_corpus, tokenizer, workers=2, mix=mix))
    reports = build(rec, progress=False)
    mix_report = reports["mix"]
    assert mix_report["split"]["shard_tasks"] >= 3 and mix_report["split"]["cell_tasks"] == 2 * len(
        mix_report["mix"]["buckets"])
    assert mix_report["mix"]["shortfalls"] and mix_report["dropped"]["bucket_removed"] > 0
    assert_plan_matches_one_process(rec, mix_report)
    plan = read_ipc(rec.output_dir / "mix" / "plan.arrow")
    assert mix_report["kept"] == int((plan.column("count").to_numpy() > 0).sum())


def test_cli_verify_names_corrupted_shard_and_inspect_writes_plots(tmp_path, demo_corpus, tokenizer):
    rec = load_recipe(_recipe(tmp_path, demo_corpus, tokenizer))
    build(rec, progress=False)
    manifest = rec.output_dir / "manifest.json"
    shown = cli("inspect", manifest)
    assert shown.returncode == 0, shown.stderr
    assert "achieved" in shown.stdout
    for name in ("lengths_before_after.png", "tokens_per_bucket.png", "packing.png"):
        assert (rec.output_dir / "plots" / name).stat().st_size > 10_000
    assert cli("verify", manifest).returncode == 0
    shard = rec.output_dir / json.loads(manifest.read_text())["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    one_line_error(cli("verify", manifest), shard.name, "sha256")


def test_mix_errors_are_one_line(tmp_path, demo_corpus, tokenizer):
    cases = [({"sources": {"books": {"share": 1.0}}}, "unknown source"),
             ({"sources": {"docs": {"share": 0.5}, "legal": {"share": 0.4}}}, "sum to 1"),
             ({"sources": {"docs": {"remove_buckets": ["<999"]}}}, "<999")]
    for mix, needle in cases:
        path = _recipe(tmp_path, demo_corpus, tokenizer, mix=mix)
        one_line_error(cli("build", path), needle)
