"""The command line (in-process): clear one-line errors with exit code 2, and the standalone commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
from conftest import write_jsonl
from helpers_cli import cli, one_line_error


def test_recipe_errors_are_one_line(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "hello"}\n')
    cases = {
        "unknown_key.yaml": ("output: out\nsources: [{name: a, paths: [data.jsonl]}]\n"
                             "stages: {near_dedup: {threshhold: 0.5}}\n", ["unknown key", "near_dedup.threshhold"]),
        "missing.yaml": ("sources: [{name: a, paths: [data.jsonl]}]\n", ["missing required key 'output'"]),
        "bad_value.yaml": ("output: out\nsources: [{name: a, paths: [data.jsonl]}]\n"
                           "stages: {near_dedup: {threshold: 1.5}}\n", ["near_dedup.threshold", "less than 1"]),
        "bad_yaml.yaml": ("output: out\nsources: [\n", ["not valid YAML"]),
        "no_match.yaml": ("output: out\nsources: [{name: a, paths: [nothing/*.jsonl]}]\n", ["matches no file"]),
        "dupe.yaml": ("output: out\nsources: [{name: a, paths: [data.jsonl]}, {name: a, paths: [data.jsonl]}]\n",
                      ["unique"]),
    }
    for name, (text, needles) in cases.items():
        (tmp_path / name).write_text(text)
        one_line_error(cli("build", str(tmp_path / name)), *needles)
    one_line_error(cli("build", str(tmp_path / "absent.yaml")), "not found")
    (tmp_path / "ok.yaml").write_text("output: out\nsources: [{name: a, paths: [data.jsonl]}]\n")
    one_line_error(cli("build", str(tmp_path / "ok.yaml"), "--until", "nope"), "unknown stage 'nope'")


def test_dedup_command(tmp_path):
    text = " ".join(f"token{i}" for i in range(300))
    write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": text}, {"id": "2", "text": "unrelated short text"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "3", "text": text + " plus one"}, {"id": "4", "text": text}])
    proc = cli("dedup", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", str(tmp_path / "out"),
                   "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert pl.read_parquet(out / "exact_dedup" / "removed.parquet")["id"].to_list() == ["4"]
    removed = pl.read_parquet(out / "near_dedup" / "removed.parquet")
    assert removed.select("id", "kept_id").rows() == [("1", "3")]
    kept = pl.read_parquet(out / "near_dedup" / "shards" / "**" / "*.parquet")
    assert sorted(kept["id"].to_list()) == ["2", "3"]
    assert "near_dedup" in proc.stdout
    one_line_error(cli("dedup", str(tmp_path / "missing.jsonl"), "-o", str(out)), "not found")


def test_demo_corpus_is_deterministic(tmp_path, demo_corpus):
    proc = cli("demo-corpus", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = digest(demo_corpus), digest(tmp_path / "again")
    assert first == second
    assert {p.split("/")[0] for p in first} == {"code", "docs", "legal", "tests", "corpus.json"}
