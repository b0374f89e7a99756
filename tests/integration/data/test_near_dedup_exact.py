"""Near dedup decides on exact shingle-set Jaccard, with bounded workspace for long documents and shards."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import write_jsonl, write_recipe

from longmix.data.dedup.bands import task_parts
from longmix.data.dedup.kernels import NGRAM_MULTS
from longmix.data.dedup.minhash import _words_unicode, doc_shingles, shingle_hashes, shingle_sets, shingle_text
from longmix.data.dedup.verify import CandidateSets, jaccard
from longmix.data.flow import build
from longmix.data.recipe import load_recipe


def _docs(demo_corpus, n=30, min_words=300):
    rows = [json.loads(x) for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows if len(r["text"].split()) > min_words][:n]


def test_ascii_fast_path_gives_the_regex_paths_words(demo_corpus):
    texts = _docs(demo_corpus, 40, 0) + ["Tabs\tand\x0bform\x0cfeeds\r\nHERE", "", "  --  ", "snake_case x2 ÀÉ"]
    arr = pa.array(texts, type=pa.large_string())
    fast = [[w for w in ws if w] for ws in shingle_text(arr).to_pylist()]
    slow = [[w for w in ws if w] for ws in _words_unicode(arr).to_pylist()]
    assert fast == slow


def _sets_of(texts):
    sh, off = shingle_hashes(pa.array(texts, type=pa.large_string()), 5)
    values, sizes = shingle_sets(sh, off)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    py = [set(sh[off[i]: off[i + 1]].tolist()) for i in range(len(texts))]
    return CandidateSets(values=values, starts=starts, sizes=sizes.astype(np.int64)), py


def test_exact_jaccard_equals_python_sets(demo_corpus):
    rng = random.Random(0)
    base = _docs(demo_corpus, 6)
    texts = []
    for t in base:
        words = t.split()
        texts += [t, " ".join(w for w in words if rng.random() > 0.1), " ".join(words[: len(words) // 2])]
    sets, py = _sets_of(texts)
    a = np.array([i for i in range(len(texts)) for j in range(len(texts)) if i != j])
    b = np.array([j for i in range(len(texts)) for j in range(len(texts)) if i != j])
    got = jaccard(sets, a, b)
    want = [len(py[i] & py[j]) / len(py[i] | py[j]) for i, j in zip(a, b, strict=True)]
    assert np.allclose(got, want, atol=1e-12)


def _reference_shingles(words: list[str], ngram: int) -> list[int]:
    """The shingle hash in plain Python: FNV-1a of each word's UTF-8 bytes, fmix64, the order-dependent
    n-gram mix of kernels.py, top 32 bits."""
    mask = (1 << 64) - 1
    mults = [int(m) for m in NGRAM_MULTS]

    def fmix(x):
        x ^= x >> 33
        x = (x * 0xFF51AFD7ED558CCD) & mask
        x ^= x >> 33
        x = (x * 0xC4CEB9FE1A85EC53) & mask
        return x ^ (x >> 33)

    def word(w):
        h = 0xCBF29CE484222325
        for byte in w.encode():
            h = ((h ^ byte) * 0x100000001B3) & mask
        return fmix(h)

    def mix(window):
        c = (window[0] * mults[0] * 0x9E3779B97F4A7C15) & mask
        for k in range(1, ngram):
            c = ((c ^ ((window[k] * mults[k % 8]) & mask)) * 0x9E3779B97F4A7C15) & mask
        return fmix(c) >> 32

    hashes = [word(w) for w in words]
    if 0 < len(hashes) < ngram:
        return [mix(hashes + [0] * (ngram - len(hashes)))]
    return [mix(hashes[i: i + ngram]) for i in range(len(hashes) - ngram + 1)]


def test_compiled_shingles_equal_the_python_definition(demo_corpus):
    texts = _docs(demo_corpus, 12, 0) + ["", "one", "two words", "Straße ÀÉ naïve — ok", "  --  ", "a b c d e f"]
    arr = pa.array(texts, type=pa.large_string())
    words = [[w for w in ws if w] for ws in shingle_text(arr).to_pylist()]
    sh, off = shingle_hashes(arr, 5)
    for i, ws in enumerate(words):
        assert sh[off[i]: off[i + 1]].tolist() == _reference_shingles(ws, 5), texts[i][:60]


def test_long_document_alone_in_its_group_has_the_same_shingles(demo_corpus):
    text = " ".join(_docs(demo_corpus, 20))
    whole, off = shingle_hashes(pa.array([text, "short one"], type=pa.large_string()), 5)
    grouped, off2 = doc_shingles(pa.array(["short one", text, "short one"], type=pa.large_string()), 5,
                                 long_bytes=1000)
    assert np.array_equal(grouped[off2[1]: off2[2]], whole[off[0]: off[1]])
    assert grouped[off2[0]: off2[1]].tolist() == grouped[off2[2]:].tolist() == whole[off[1]:].tolist()


def _build(tmp_path, records, stages):
    write_jsonl(tmp_path / "in.jsonl", records)
    rec = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "s", "paths": ["in.jsonl"]}],
                                   stages))
    return rec, build(rec, until="near_dedup", progress=False)


def test_a_pair_just_over_the_threshold_is_removed(tmp_path, demo_corpus):
    # True Jaccard 0.72-0.76 at threshold 0.7: a 128-value signature estimate misses about a third of
    # such pairs; exact verification and recall-driven bands miss none here.
    rng = random.Random(3)
    records, planted = [], 0
    for i, text in enumerate(_docs(demo_corpus, 30)):
        words = text.split()
        for _ in range(200):
            copy = " ".join(w if rng.random() > 0.035 else f"x{rng.randrange(10**6)}" for w in words)
            sets, py = _sets_of([text, copy])
            j = len(py[0] & py[1]) / len(py[0] | py[1])
            if 0.72 <= j <= 0.76:
                records += [{"id": f"o{i}", "text": text}, {"id": f"c{i}", "text": copy}]
                planted += 1
                break
    assert planted >= 20
    rec, reports = _build(tmp_path, records, {"near_dedup": {"threshold": 0.7}})
    removed = pl.read_parquet(rec.output_dir / "near_dedup" / "removed.parquet")["id"].to_list()
    assert len(removed) == planted  # one of each pair, nothing else
    assert reports["near_dedup"]["clustering"]["verification"] == "exact shingle-set Jaccard"


def test_a_large_shard_is_split_into_tasks_with_the_same_result(tmp_path, demo_corpus):
    texts = _docs(demo_corpus, 60, 100)
    rng = random.Random(1)
    records = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    records += [{"id": f"c{i}", "text": " ".join(w for w in t.split() if rng.random() > 0.02)}
                for i, t in enumerate(texts[:20])]
    stages = {"ingest": {"shard_bytes": 1 << 30}, "near_dedup": {"threshold": 0.8}}
    rec_a, rep_a = _build(tmp_path / "a", records, stages)
    small = {**stages, "near_dedup": {"threshold": 0.8, "task_bytes": 50_000}}
    # Row groups are the unit of a task: make them small so one shard really splits.
    import longmix.formats.documents as documents
    old = documents._ROW_GROUP_ROWS
    documents._ROW_GROUP_ROWS = 8
    try:
        rec_b, rep_b = _build(tmp_path / "b", records, small)
    finally:
        documents._ROW_GROUP_ROWS = old
    shard = sorted((rec_b.output_dir / "exact_dedup").rglob("shards/**/*.parquet"))
    assert len(shard) == 1 and len(task_parts(shard[0], 50_000)) > 3
    assert rep_b["near_dedup"]["signature_tasks"] > 3 and rep_a["near_dedup"]["signature_tasks"] == 1
    removed = [sorted(pl.read_parquet(r.output_dir / "near_dedup" / "removed.parquet")["id"].to_list())
               for r in (rec_a, rec_b)]
    assert removed[0] == removed[1] and len(removed[0]) >= 15
    kept = [pq.read_table(sorted((r.output_dir / "near_dedup").rglob("shards/**/*.parquet"))[0]).column("id")
            for r in (rec_a, rec_b)]
    assert kept[0].equals(kept[1])
