"""Filter stage: heuristics drop exactly the documents built to trip them, reasons and counts reconcile,
report-only writes nothing, and bad recipes or model paths fail with one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, write_jsonl, write_recipe
from helpers_cli import cli, one_line_error

from longmix.core.errors import UserError
from longmix.data.filters.heuristics import TextBatch, char_class_counts
from longmix.data.flow import build
from longmix.data.recipe import load_recipe

STRICT = {  # every heuristic on, with values the planted documents below are built around
    "min_chars": 200, "max_chars": 20000, "min_words": 30, "max_words": 3000, "min_mean_word_len": 3.0,
    "max_mean_word_len": 12.0, "max_symbol_ratio": 0.3, "max_bullet_line_frac": 0.5, "min_punct_line_frac": 0.5,
    "max_dup_line_frac": 0.3, "max_dup_line_char_frac": 0.3, "max_dup_ngram_frac": 0.3, "dup_ngram_n": 5,
}
NO_DEDUP = {"exact_dedup": {"enabled": False}, "near_dedup": {"enabled": False}}


def _vocab(rng: random.Random, n: int = 400, lo: int = 3, hi: int = 8) -> list[str]:
    letters = "abcdefghijklmnoprstuvw"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def _sentence(rng: random.Random, vocab: list[str], k: int = 10) -> str:
    words = [rng.choice(vocab) for _ in range(k)]
    return " ".join([words[0].capitalize(), *words[1:]]) + "."


def _prose(rng: random.Random, vocab: list[str], lines: int) -> str:
    return "\n".join(_sentence(rng, vocab, rng.randint(8, 14)) for _ in range(lines))


def planted_docs() -> tuple[list[dict], dict[str, str]]:
    """Clean prose documents plus one document per heuristic that trips it (and no filter before it)."""
    rng = random.Random(3)
    vocab = _vocab(rng)
    short_vocab = _vocab(rng, lo=3, hi=4)
    phrase = " ".join(rng.choice(vocab) for _ in range(20))
    long_line = " ".join(rng.choice(vocab) for _ in range(60)) + "."
    trip = {
        "min_chars": "Too short to keep.",
        "max_chars": _prose(rng, vocab, 400),
        "min_words": " ".join("".join(rng.choice("abcdefgh") for _ in range(11)) for _ in range(20)) + ".",
        "max_words": "\n".join(_sentence(rng, short_vocab, 10) for _ in range(360)),
        "min_mean_word_len": "\n".join(" ".join(rng.choice(["ab", "cd", "ef", "gh", "i"]) for _ in range(12)) + "."
                                       for _ in range(10)),
        "max_mean_word_len": "\n".join(" ".join("".join(rng.choice("abcdefgh") for _ in range(15))
                                                for _ in range(8)) + "." for _ in range(6)),
        "max_symbol_ratio": "\n".join(" ".join(f"{rng.choice(short_vocab)}#$%" for _ in range(10)) + "."
                                      for _ in range(8)),
        "max_bullet_line_frac": "\n".join(f"- {_sentence(rng, vocab)}" for _ in range(12)),
        "min_punct_line_frac": "\n".join(_sentence(rng, vocab)[:-1] for _ in range(12)),
        "max_dup_line_frac": "\n".join([_sentence(rng, vocab) for _ in range(4)] * 4),
        "max_dup_line_char_frac": "\n".join([_sentence(rng, vocab, 3) for _ in range(20)] + [long_line] * 3),
        "max_dup_ngram_frac": "\n".join(f"{rng.choice(vocab).capitalize()} {phrase}." for _ in range(12)),
    }
    docs = [{"id": f"good-{i}", "text": _prose(rng, vocab, 8)} for i in range(8)]
    docs += [{"id": f"trip-{name}", "text": text} for name, text in trip.items()]
    rng.shuffle(docs)
    return docs, {f"trip-{name}": name for name in trip}


def _build(tmp_path: Path, sources: list[dict], filt: dict, stages: dict | None = None, **kw):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources,
                          {**(stages or NO_DEDUP), "filter": {"enabled": True, **filt}})
    rec = load_recipe(recipe)
    return rec, build(rec, progress=False, **kw)


def test_heuristics_drop_exactly_the_planted_documents(tmp_path):
    docs, expected = planted_docs()
    write_jsonl(tmp_path / "a" / "part.jsonl", docs)
    rec, reports = _build(tmp_path, [{"name": "web", "paths": ["a/*.jsonl"]}], {"heuristics": STRICT})
    r = reports["filter"]
    assert r["dropped"] == {name: 1 for name in expected.values()}
    assert r["in"] == len(docs) == r["kept"] + sum(r["dropped"].values())
    assert r["sources"]["web"] == {"in": len(docs), "kept": 8, "dropped": len(expected), "quarantined": 0}
    dropped = pa.concat_tables([pq.read_table(rec.output_dir / "filter" / f) for f in r["dropped_files"]])
    assert dict(zip(dropped["id"].to_pylist(), dropped["reason"].to_pylist(), strict=True)) == expected
    # survivors: same relative path as the input shard, a quality column (null: no model), no lang columns
    up = reports[list(reports)[-2]]
    assert [o["path"] for o in r["outputs"]] == [o["path"] for o in up["outputs"]]
    kept = pq.read_table(rec.output_dir / "filter" / r["outputs"][0]["path"])
    assert sorted(kept["id"].to_pylist()) == [f"good-{i}" for i in range(8)]
    assert kept.schema.field("quality").type == pa.float32() and kept["quality"].null_count == kept.num_rows
    assert "lang" not in kept.schema.names
    # a rerun finds the finished stage
    again = build(rec, progress=False)["filter"]
    assert again["seconds"] == r["seconds"]


def test_per_source_overrides_and_disabled_filters(tmp_path):
    docs, expected = planted_docs()
    write_jsonl(tmp_path / "a" / "part.jsonl", docs)
    write_jsonl(tmp_path / "b" / "part.jsonl", docs)
    off = {k: None for k in STRICT if k != "dup_ngram_n"}
    _, reports = _build(tmp_path, [{"name": "strict", "paths": ["a/*.jsonl"]}, {"name": "lax", "paths": ["b/*.jsonl"]}],
                        {"heuristics": STRICT, "per_source": {"lax": off}})
    r = reports["filter"]
    assert r["sources"]["strict"]["dropped"] == len(expected)
    assert r["sources"]["lax"] == {"in": len(docs), "kept": len(docs), "dropped": 0, "quarantined": 0}


def test_measures_on_known_text():
    b = TextBatch(pa.array(["a b c d e a b c d e", "x.\nx.\ny\n\n- z", "", "ab!! cd"], pa.large_string()))
    assert b.ngram_dup_frac(5).tolist() == [0.5, 0.0, 0.0, 0.0]
    assert b.ngram_dup_frac(6).tolist() == [0.0, 0.0, 0.0, 0.0]
    dup, dup_chars, all_chars = b.dup_lines
    assert dup.tolist() == [0, 1, 0, 0] and dup_chars[1] == 2 and all_chars[1] == 8
    assert b.n_words.tolist() == [10, 5, 0, 2]
    assert b.n_lines.tolist() == [1, 4, 0, 1]
    assert b.lines_matching(r"^[-*+•‣▪◦●○·–][ \t]").tolist() == [0, 1, 0, 0]
    assert char_class_counts("ab!! cd é😀\t").tolist() == [3, 5, 3]


def test_report_only_prints_and_writes_nothing(tmp_path):
    docs, expected = planted_docs()
    write_jsonl(tmp_path / "a" / "part.jsonl", docs)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "web", "paths": ["a/*.jsonl"]}],
                          {**NO_DEDUP, "filter": {"enabled": True, "heuristics": STRICT, "samples_per_reason": 1}})
    proc = cli("build", recipe, "--until", "filter", "--report-only")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out" / "filter").exists()
    assert "web: 20 documents" in proc.stdout and "would keep 8" in proc.stdout
    for name in expected.values():
        assert f"sample documents dropped by {name}" in proc.stdout
    assert "web/trip-min_chars (18 chars, value 18): Too short to keep." in proc.stdout

    rec = load_recipe(recipe)
    r = build(rec, until="filter", report_only=True, progress=False)["filter"]
    f = r["filters"]["web"]["filters"]
    assert {k: v["drops"] for k, v in f.items()} == {name: 1 for name in expected.values()}
    # the max_chars document trips max_words too; it is dropped (and counted) once, by max_chars
    assert f["max_words"]["trips"] == 2 and f["max_words"]["drops"] == 1
    big = next(len(d["text"]) for d in docs if d["id"] == "trip-max_chars")
    share = round(big / sum(len(d["text"]) for d in docs), 4)
    assert f["max_chars"]["trips_share"] == f["max_chars"]["drops_share"] == share  # char-weighted
    assert r["in"] == r["kept"] + sum(r["dropped"].values())

    one_line_error(cli("build", recipe, "--report-only"), "--report-only needs --until filter")


@pytest.mark.parametrize("filt,message", [
    ({"quality": {"model": "missing.bin"}}, "quality model"),
    ({"quality": {"model": "junk.bin", "threshold": 0.5}}, "is not a fastText model"),
    ({"langid": {"model": "missing.bin", "allowed": ["en"]}}, "language-ID model"),
    ({"quality": {"threshold": 0.5}}, "set quality.model too"),
    ({"per_source": {"nope": {"min_chars": 1}}}, "unknown source nope"),
    ({"per_source": {"web": {"min_charz": 1}}}, "unknown heuristic min_charz"),
])
def test_bad_filter_settings_fail_with_one_line(tmp_path, filt, message):
    write_jsonl(tmp_path / "a" / "part.jsonl", [{"id": "x", "text": "hello world " * 30}])
    (tmp_path / "junk.bin").write_bytes(b"this is not a model" * 100)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "web", "paths": ["a/*.jsonl"]}],
                          {"filter": {"enabled": True, **filt}})
    one_line_error(cli("build", recipe), message)
    assert not (tmp_path / "out").exists(), "a bad filter setting must fail before any stage runs"


def test_filter_is_off_by_default(tmp_path):
    write_jsonl(tmp_path / "a" / "part.jsonl", [{"id": "x", "text": "hi"}])
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "web", "paths": ["a/*.jsonl"]}])
    reports = build(load_recipe(recipe), progress=False)
    assert "filter" not in reports and reports["near_dedup"]["kept"] == 1
    with pytest.raises(UserError, match="report-only"):
        build(load_recipe(recipe), until="filter", report_only=True)


def test_demo_filter_drops_only_outliers_of_the_demo_corpus(tmp_path, demo_corpus):
    # pipelines/demo.yaml's filter on the corpus it is meant for: a few outliers go, for heuristic reasons
    demo = REPO / "pipelines" / "demo.yaml"
    sources = [{"name": n, "paths": [str(demo_corpus / n / g)]}
               for n, g in (("code", "*.jsonl"), ("docs", "part-00000.jsonl"), ("legal", "*.jsonl"))]
    stages = {**yaml.safe_load(demo.read_text())["stages"], **NO_DEDUP}
    rec = load_recipe(demo, {"output": str(tmp_path / "out"), "sources": sources, "tokenizer": None,
                             "executor": {"workers": 1}, "stages": stages})
    r = build(rec, until="filter", progress=False)["filter"]
    assert 0 < sum(r["dropped"].values()) <= r["in"] // 100, r["dropped"]
    assert set(r["dropped"]) <= set(rec.stages.filter.heuristics.model_dump()), r["dropped"]


def test_wordless_documents_are_measured_without_nan(tmp_path):
    # a document without words or letters still gets measured and never yields NaN in the report
    write_jsonl(tmp_path / "a" / "part.jsonl", [{"id": "sym", "text": "$$$$"},
                                                   {"id": "ok", "text": " ".join(f"word{i}" for i in range(40))}])
    _, reports = _build(tmp_path, [{"name": "web", "paths": ["a/*.jsonl"]}], {})
    r = reports["filter"]
    assert r["dropped"] == {"min_chars": 1} and r["kept"] == 1
    assert "NaN" not in json.dumps(r)
