"""fastText models: a quality classifier and a small language-ID model, trained on the spot from the
demo corpus (prose = pydoc topics, the other class = stdlib code), then applied by the filter stage.

No lid.176.bin can be downloaded here, so language ID uses code vs prose as stand-in "languages"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl, write_recipe
from helpers_cli import cli, one_line_error

from longmix.data.filters import fasttext_models as ft
from longmix.data.filters.train import langid_accuracy, train_labelled, train_quality
from longmix.data.flow import build
from longmix.data.recipe import load_recipe

SMALL = ft.TrainParams(epochs=10, lr=0.5, dim=16, bucket=20_000, max_chunks=4)  # seconds to train, ~3 MB
HEURISTICS_OFF = {"min_chars": None, "min_words": None, "min_mean_word_len": None, "max_mean_word_len": None,
                  "max_symbol_ratio": None, "max_bullet_line_frac": None, "max_dup_line_frac": None,
                  "max_dup_line_char_frac": None, "max_dup_ngram_frac": None}
NO_DEDUP = {"exact_dedup": {"enabled": False}, "near_dedup": {"enabled": False}}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.open()]


@pytest.fixture(scope="module")
def classes(demo_corpus: Path) -> dict[str, list[str]]:
    """Clearly separable classes: prose reference pages vs Python source (every 9th file: balanced)."""
    topics = [d["text"] for d in _read(demo_corpus / "docs") if d["id"].startswith("topic/")]
    code = [d["text"] for d in _read(demo_corpus / "code")][::9]
    return {"prose": topics, "code": code}


@pytest.fixture(scope="module")
def quality_model(classes, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("models") / "quality.bin"
    result = train_quality(classes["prose"], classes["code"], out, SMALL, holdout=0.25)
    return out, result


def test_quality_model_held_out_accuracy(quality_model):
    path, result = quality_model
    m = result["held_out"]
    assert m["n_pos"] >= 15 and m["n_neg"] >= 15
    assert m["accuracy"] >= 0.9 and m["precision"] >= 0.9 and m["recall"] >= 0.9, m
    assert path.stat().st_size < 10 << 20


def test_long_documents_are_scored_over_the_whole_text(quality_model, classes):
    model = ft.load_model(quality_model[0], "quality")
    prose = classes["prose"][0][:1800]
    code = "\n".join(classes["code"][:6])
    doc = prose + "\n" + code
    chunks = ft.chunk_text(doc, 2000, 8)
    assert len(chunks) == 8 and all("\n" not in c for c in chunks)
    assert chunks[-1].split()[-1] in doc[-2100:]  # the last chunk comes from the end of the document
    label = "__label__hq"
    first_only = ft.score_label(model, [doc], label, 2000, 1)[0]
    whole = ft.score_label(model, [doc], label, 2000, 8)[0]
    assert first_only > 0.5 > whole, (first_only, whole)


def test_quality_cli_train_and_eval(tmp_path, classes):
    write_jsonl(tmp_path / "pos.jsonl", [{"text": t} for t in classes["prose"]])
    write_jsonl(tmp_path / "neg.jsonl", [{"text": t} for t in classes["code"]])
    common = ["--positive", str(tmp_path / "pos.jsonl"), "--negative", str(tmp_path / "neg.jsonl")]
    train = cli("quality", "train", *common, "-o", tmp_path / "q.bin", "--dim", "16", "--bucket", "20000",
                "--max-chunks", "4", "--lr", "0.5", "--holdout", "0.25")
    assert train.returncode == 0, train.stderr
    acc = float(re.search(r"held-out: precision [\d.]+\s+recall [\d.]+\s+f1 [\d.]+\s+accuracy ([\d.]+)",
                          train.stderr).group(1))
    assert acc >= 0.9, train.stderr
    ev = cli("quality", "eval", tmp_path / "q.bin", *common, "--max-chunks", "4")
    assert ev.returncode == 0 and "eval: precision" in ev.stderr, ev.stderr
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 64)
    one_line_error(cli("quality", "eval", junk, *common), "not a fastText model")


def _two_sources(tmp_path: Path, classes: dict[str, list[str]]) -> list[dict]:
    write_jsonl(tmp_path / "prose" / "p.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(classes["prose"])])
    write_jsonl(tmp_path / "code" / "c.jsonl", [{"id": f"c{i}", "text": t} for i, t in enumerate(classes["code"])])
    return [{"name": "prose", "paths": ["prose/*.jsonl"]}, {"name": "code", "paths": ["code/*.jsonl"]}]


def _kept(rec, report) -> pa.Table:
    return pa.concat_tables([pq.read_table(rec.output_dir / "filter" / o["path"]) for o in report["outputs"]])


def test_stage_drops_below_the_quality_threshold(tmp_path, classes, quality_model):
    sources = _two_sources(tmp_path, classes)
    filt = {"enabled": True, "heuristics": HEURISTICS_OFF,
            "quality": {"model": str(quality_model[0]), "threshold": 0.5}, "chunk_chars": 2000, "max_chunks": 4}
    rec = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources, {**NO_DEDUP, "filter": filt}))
    r = build(rec, progress=False)["filter"]
    model = ft.load_model(quality_model[0])
    expected = {name: ft.score_label(model, texts, "__label__hq", 2000, 4) for name, texts in classes.items()}
    low = int(sum((s < 0.5).sum() for s in expected.values()))
    assert r["dropped"] == {"quality": low} and r["kept"] == r["in"] - low
    assert r["sources"]["code"]["dropped"] >= 0.9 * len(classes["code"])
    assert r["sources"]["prose"]["kept"] >= 0.9 * len(classes["prose"])
    kept = _kept(rec, r)
    assert kept.schema.field("quality").type == pa.float32() and kept["quality"].null_count == 0
    assert min(kept["quality"].to_pylist()) >= 0.5
    dropped = pq.read_table(rec.output_dir / "filter" / r["dropped_files"][0])
    assert set(dropped["reason"].to_pylist()) == {"quality"} and max(dropped["value"].to_pylist()) < 0.5

    # score only, and only one source: nothing dropped, code rows have a null quality
    filt["quality"] = {"model": str(quality_model[0]), "sources": ["prose"]}
    rec = load_recipe(write_recipe(tmp_path / "r2.yaml", tmp_path / "out2", sources, {**NO_DEDUP, "filter": filt}))
    r = build(rec, progress=False)["filter"]
    assert r["dropped"] == {} and r["kept"] == r["in"]
    kept = _kept(rec, r).to_pydict()
    q = {s: [v for v, src in zip(kept["quality"], kept["source"], strict=True) if src == s] for s in classes}
    assert all(v is None for v in q["code"]) and all(v is not None for v in q["prose"])
    np.testing.assert_allclose(sorted(q["prose"]), sorted(expected["prose"].tolist()), rtol=1e-6)


def test_language_id_code_vs_prose(tmp_path, classes):
    model_path = tmp_path / "lid.bin"
    params = ft.TrainParams(epochs=10, lr=0.5, ngrams=1, dim=16, max_chunks=4)
    model, held = train_labelled({"en": classes["prose"], "py": classes["code"]}, model_path, params, 0.25)
    assert langid_accuracy(model, held, params)["accuracy"] >= 0.9

    sources = _two_sources(tmp_path, classes)
    filt = {"enabled": True, "heuristics": HEURISTICS_OFF, "max_chunks": 4,
            "langid": {"model": str(model_path), "allowed": ["en"], "min_score": 0.6}}
    rec = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources, {**NO_DEDUP, "filter": filt}))
    r = build(rec, progress=False)["filter"]
    langs = {name: ft.identify(model, texts, 2000, 4) for name, texts in classes.items()}
    not_en = sum(lang != "en" for ls, _ in langs.values() for lang in ls)
    low = sum(lang == "en" and s < 0.6 for ls, ss in langs.values() for lang, s in zip(ls, ss, strict=True))
    assert r["dropped"].get("lang", 0) == not_en and r["dropped"].get("lang_score", 0) == low
    assert r["sources"]["code"]["dropped"] >= 0.9 * len(classes["code"])
    kept = _kept(rec, r)
    assert set(kept["lang"].to_pylist()) == {"en"} and min(kept["lang_score"].to_pylist()) >= 0.6
    assert kept.schema.field("lang_score").type == pa.float32()


def test_truncated_model_fails_with_one_line(tmp_path, quality_model):
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(quality_model[0].read_bytes()[: 1 << 20])
    write_jsonl(tmp_path / "a" / "x.jsonl", [{"id": "x", "text": "some words " * 30}])
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "web", "paths": ["a/*.jsonl"]}],
                          {"filter": {"enabled": True, "quality": {"model": str(trunc)}}})
    one_line_error(cli("build", recipe), "is truncated")
    assert not (tmp_path / "out").exists()  # found by the recipe check, before ingest
