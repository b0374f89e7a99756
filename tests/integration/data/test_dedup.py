"""Exact and near dedup: what is removed, what is kept, and why."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from conftest import write_jsonl, write_recipe

from longmix.data.dedup.minhash import candidate_probability, lsh_params, shingle_hashes, signatures
from longmix.data.flow import build
from longmix.data.recipe import load_recipe


def _build(tmp_path, sources, stages=None, until=None):
    rec = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources, stages or {}))
    return rec, build(rec, until=until, progress=False)


def test_signatures_estimate_jaccard_without_bias():
    # rensa's MinHash: the share of equal signature values is an unbiased estimate of the Jaccard of the
    # shingle sets, with the binomial spread of num_perm independent trials.
    rng = np.random.default_rng(0)
    n, perms = 2000, 128
    for target in (0.5, 0.75, 0.9):
        common = round(2 * n * target / (1 + target))
        true_j = common / (2 * n - common)
        est = []
        for _ in range(100):
            u = rng.choice(2**32, 2 * n - common, replace=False).astype(np.uint32)
            flat = np.concatenate([u[:n], u[:common], u[n:]])
            sig = signatures(flat, np.array([0, n, 2 * n]), perms, seed=3)
            est.append((sig[0] == sig[1]).mean())
        sd = (true_j * (1 - true_j) / perms) ** 0.5
        assert abs(np.mean(est) - true_j) < 4 * sd / 10  # mean of 100 draws
        assert 0.7 * sd < np.std(est) < 1.3 * sd
    sig = signatures(np.zeros(0, dtype=np.uint32), np.array([0, 0]), 16, seed=3)
    assert (sig == np.iinfo(np.uint32).max).all()  # no shingles: never a candidate


def test_shingles_ignore_case_and_punctuation():
    a, _ = shingle_hashes(pa.array(["Hello, World: this is it"]), 2)
    b, _ = shingle_hashes(pa.array(["hello world   this -- is it!"]), 2)
    assert np.array_equal(a, b)


def test_signature_similarity_tracks_jaccard(demo_corpus):
    text = json.loads((demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()[5])["text"]
    words = text.split()
    rng = random.Random(0)
    edited = [w if rng.random() > 0.1 else "zzz" for w in words]
    shingles, offsets = shingle_hashes(pa.array([text, " ".join(edited)]), 5)
    sig = signatures(shingles, offsets, 256, seed=1)
    sa, sb = set(shingles[: offsets[1]].tolist()), set(shingles[offsets[1]:].tolist())
    true_j = len(sa & sb) / len(sa | sb)
    assert abs((sig[0] == sig[1]).mean() - true_j) < 0.08


def test_bands_rows_are_chosen_for_recall():
    # Verification is exact, so bands x rows favour recall: a pair 0.05 above the threshold becomes a
    # candidate with probability >= 0.995, with the fewest false candidates among such choices.
    for threshold in (0.7, 0.8):
        p = lsh_params(threshold, 128, 5, 1)
        assert p.bands * p.rows <= 128
        assert candidate_probability(threshold + 0.05, p.bands, p.rows) >= 0.995
        # one more row per band (fewer bands) would miss the recall target
        rows = p.rows + 1
        assert candidate_probability(threshold + 0.05, 128 // rows, rows) < 0.995
    assert (lsh_params(0.8, 128, 5, 1).bands, lsh_params(0.8, 128, 5, 1).rows) == (18, 7)
    assert lsh_params(0.8, 128, 5, 1, bands=9, rows=13).bands == 9
    with pytest.raises(ValueError):
        lsh_params(0.8, 16, 5, 1, bands=5, rows=5)


def test_exact_dedup_global_across_sources_and_duplicate_ids(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a1", "text": "shared text"}, {"id": "a2", "text": "only in a"},
                                       {"id": "a2", "text": "same id, other text"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "b1", "text": "shared text"}, {"id": "b2", "text": "only in b"},
                                       {"id": "b3", "text": "only  in b"}])
    sources = [{"name": "a", "paths": ["a.jsonl"]}, {"name": "b", "paths": ["b.jsonl"]}]
    rec, reports = _build(tmp_path, sources, {"near_dedup": {"enabled": False}})
    r = reports["exact_dedup"]
    assert r["dropped"] == {"exact_duplicate": 1} and r["quarantined"] == {"duplicate_id": 1}
    assert r["sources"]["b"] == {"in": 3, "kept": 2, "dropped": 1, "quarantined": 0}
    removed = pl.read_parquet(rec.output_dir / "exact_dedup" / "removed.parquet").to_dicts()
    assert [(x["id"], x["kept_id"], x["kept_source"]) for x in removed] == [("b1", "a1", "a")]
    kept = pl.concat([pl.read_parquet(rec.output_dir / "exact_dedup" / o["path"]) for o in r["outputs"]])
    assert kept["id"].to_list() == ["a1", "a2", "b2", "b3"]


def _perturb(text: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    out = []
    for w in words:
        x = rng.random()
        if x < rate / 3:
            continue
        out.append(f"w{rng.randrange(10**6)}" if x < 2 * rate / 3 else w)
        if rate / 3 * 2 <= x < rate:
            out.append(f"ins{rng.randrange(10**6)}")
    return " ".join(out)


def _norm_shingles(text: str, n: int = 5) -> set:
    words = re.sub(r"[^\w\s]+", " ", text.lower()).split()
    return {tuple(words[i: i + n]) for i in range(max(1, len(words) - n + 1))}


def test_near_dedup_finds_planted_copies(tmp_path, demo_corpus):
    docs = [json.loads(x) for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    docs = [d for d in docs if len(d["text"].split()) > 300][:40]
    rng = random.Random(1)
    records, truth = [], {}
    for i, d in enumerate(docs):
        records.append({"id": f"orig{i}", "text": d["text"]})
        for rate in (0.005, 0.01, 0.3, 0.6):
            copy = _perturb(d["text"], rate, rng)
            cid = f"copy{i}-{rate}"
            records.append({"id": cid, "text": copy})
            a, b = _norm_shingles(d["text"]), _norm_shingles(copy)
            truth[cid] = len(a & b) / len(a | b)
    rng.shuffle(records)
    write_jsonl(tmp_path / "in.jsonl", records)
    rec, reports = _build(tmp_path, [{"name": "s", "paths": ["in.jsonl"]}], {"near_dedup": {"threshold": 0.7}})
    removed = set(pl.read_parquet(rec.output_dir / "near_dedup" / "removed.parquet")["id"].to_list())
    should = {c for c, j in truth.items() if j >= 0.8}
    should_not = {c for c, j in truth.items() if j < 0.5}
    assert len(should) >= 60 and len(should_not) >= 60
    # A pair (original, close copy) is found when at most one of the two survives: which one is kept
    # depends on length (insertions can make the copy the longest).
    found = sum(1 for c in should if c in removed or f"orig{c[4:].split('-')[0]}" in removed)
    assert found / len(should) >= 0.97
    assert not (should_not & removed)
    assert reports["near_dedup"]["kept"] + reports["near_dedup"]["dropped"]["near_duplicate"] == len(records)


def test_keep_rule_longest_and_source_priority(tmp_path):
    base = " ".join(f"word{i}" for i in range(400))
    longer = base + " extra tail words here"
    for folder in (tmp_path, tmp_path / "p"):
        write_jsonl(folder / "web.jsonl", [{"id": "w", "text": longer}])
        write_jsonl(folder / "books.jsonl", [{"id": "b", "text": base}])
    sources = [{"name": "books", "paths": ["books.jsonl"]}, {"name": "web", "paths": ["web.jsonl"]}]
    rec, _ = _build(tmp_path, sources, {"near_dedup": {"keep": "longest"}})
    removed = pl.read_parquet(rec.output_dir / "near_dedup" / "removed.parquet").to_dicts()
    assert [(r["id"], r["kept_id"]) for r in removed] == [("b", "w")]
    rec, _ = _build(tmp_path / "p", sources, {"near_dedup": {"keep": "source_priority"}})
    removed = pl.read_parquet(rec.output_dir / "near_dedup" / "removed.parquet").to_dicts()
    assert [(r["id"], r["kept_id"], r["kept_source"]) for r in removed] == [("w", "b", "books")]


def test_shingles_do_not_depend_on_earlier_calls(demo_corpus):
    # pyarrow's utf8_split_whitespace once gave different words for the same text after other calls.
    batches = [pa.array([json.loads(x)["text"] for x in f.read_text().splitlines()])
               for f in sorted((demo_corpus / "docs").glob("*.jsonl"))[:6]]
    first = [shingle_hashes(b, 5) for b in batches]
    again = [shingle_hashes(b, 5) for b in reversed(batches)][::-1]
    for (s1, o1), (s2, o2) in zip(first, again, strict=True):
        assert np.array_equal(o1, o2) and np.array_equal(s1, s2)


def test_non_latin_words_are_shingled():
    shingles, offsets = shingle_hashes(pa.array(["Привет, мир! Это тест.", "日本語 テキスト", "!!! ..."]), 2)
    assert list(np.diff(offsets)) == [3, 1, 0]
