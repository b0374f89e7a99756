"""Near dedup's global steps as tasks: candidate pairs per band and key range, exact verification per slice
of pairs, the keep rule per group of components. However the stage's task memory splits them, the edges,
decisions, removed list and clusters are the same, byte for byte."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import yaml
from conftest import write_jsonl, write_recipe

from longmix.data.dedup.near import find_edges, key_ranges
from longmix.data.flow import build
from longmix.data.recipe import load_recipe

OUTPUTS = ("decisions.parquet", "removed.parquet", "clusters.parquet")


def _corpus(tmp_path, demo_corpus):
    """Documents with chains of near copies (copies of copies), spread over three input files, so components
    have several members and span shards."""
    docs = [json.loads(x) for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    docs = [d for d in docs if len(d["text"].split()) > 200][:30]
    rng = random.Random(3)
    records = []
    for i, d in enumerate(docs):
        text = d["text"]
        for k in range(4):
            records.append({"id": f"d{i}-{k}", "text": text})
            words = text.split()
            for _ in range(max(1, len(words) // 300)):  # a little drift each generation
                words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta"])
            text = " ".join(words)
    rng.shuffle(records)
    for j in range(3):
        write_jsonl(tmp_path / f"in-{j}.jsonl", records[j::3])
    return [{"name": "s", "paths": [f"in-{j}.jsonl" for j in range(3)]}]


def _build(folder, sources, memory_gb=None, workers=1):
    path = write_recipe(folder / "r.yaml", folder / "out", sources, {"near_dedup": {"threshold": 0.8}},
                        workers=workers)
    if memory_gb is not None:
        raw = yaml.safe_load(path.read_text())
        raw["executor"]["resources"] = {"near_dedup": {"memory_gb": memory_gb}}
        path.write_text(yaml.safe_dump(raw))
    rec = load_recipe(path)
    reports = build(rec, until="near_dedup", progress=False)
    return rec.output_dir / "near_dedup", reports["near_dedup"]


def test_split_bands_give_identical_decisions(tmp_path, demo_corpus):
    sources = _corpus(tmp_path, demo_corpus)
    for j in range(3):
        for a in ("a", "b"):
            (tmp_path / a).mkdir(exist_ok=True)
            (tmp_path / a / f"in-{j}.jsonl").write_bytes((tmp_path / f"in-{j}.jsonl").read_bytes())
    whole, report_whole = _build(tmp_path / "a", sources)
    # 1e-6 GiB (1,073 bytes) per task: 120 documents x 72 bytes of one band need 9 key ranges
    split, report_split = _build(tmp_path / "b", sources, memory_gb=1e-6, workers=2)
    c_whole, c_split = report_whole["clustering"], report_split["clustering"]
    assert c_whole["key_ranges_per_band"] == 1
    assert c_split["key_ranges_per_band"] == key_ranges(120, int(1e-6 * 2**30)) == 9
    assert c_split["edge_tasks"] == c_split["key_ranges_per_band"] * c_whole["edge_tasks"]
    assert c_whole["clusters"] >= 20 and c_whole["largest_cluster"] >= 3  # chains were found
    assert c_whole["verify_tasks"] == c_whole["greedy_tasks"] == 1
    # 1 kB holds one pair's sets at most, and one component: every pair and every component a task of its own
    assert c_split["verify_tasks"] == c_split["candidate_pairs"] and c_split["pairs_per_task_max"] == 1
    assert c_split["greedy_tasks"] == c_split["components"] and c_split["members_per_task_max"] >= 3
    for name in OUTPUTS:
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name
    for key in ("candidate_pairs", "verified_pairs", "components", "greedy_comparisons"):
        assert c_whole[key] == c_split[key], key


def test_edges_are_the_same_over_any_key_ranges(tmp_path, demo_corpus):
    """The split edges equal the grouping of each band's whole key column (the reference: every document
    joined to the smallest document sharing its key), and ranges never cut a group."""
    sources = _corpus(tmp_path, demo_corpus)
    folder, report = _build(tmp_path, sources)
    bands = report["lsh"]["bands"]
    files = sorted((folder / "bands").glob("*.parquet"))
    frame = pl.concat([pl.read_parquet(f) for f in files]).with_row_index("doc")
    frame = frame.filter(pl.col("n_shingles") > 0)
    want = set()
    for j in range(bands):
        roots = {}
        for doc, key in zip(frame["doc"].to_list(), frame[f"b{j}"].to_list(), strict=True):
            roots.setdefault(key, doc)  # rows come in document order: the first is the smallest
            if roots[key] != doc:
                want.add((doc, roots[key]))
    for parts in (1, 2, 7):
        got = find_edges(files, bands, parts)
        assert got.dtype == np.int64 and {tuple(e) for e in got.tolist()} == want
        assert np.array_equal(got, np.unique(got, axis=0))  # unique, sorted: one array however split
