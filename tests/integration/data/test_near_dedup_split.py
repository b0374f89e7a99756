"""Near dedup's global steps as tasks: candidate pairs per band and key range, exact verification per slice
of pairs, connected components in rounds over document ranges, the keep rule per group of components.
However the stage's task memory splits them, the edges, decisions, removed list and clusters are the same,
byte for byte."""

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
    # 1 kB holds a range of one or two documents: components cross ranges and need a second round
    assert c_split["doc_ranges"] == 78 and c_split["component_rounds"] >= 2
    assert c_whole["verify_tasks"] == c_whole["greedy_tasks"] == c_whole["doc_ranges"] == 1
    # 1 kB holds one pair's sets at most, and one component: every pair and every component a task of its own
    assert c_split["verify_tasks"] == c_split["candidate_pairs"] and c_split["pairs_per_task_max"] == 1
    assert c_split["greedy_groups"] == c_split["components"] and c_split["members_per_group_max"] >= 3
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


def test_split_steps_match_the_single_process_rule(tmp_path, demo_corpus):
    """The decisions equal the rule computed in one process the way longmix did before the split (every
    pair verified, scipy's connected components over the whole graph, the greedy rule per component)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from longmix.data.dedup.clusters import best_first
    from longmix.data.dedup.verify import greedy_representatives, jaccard, load_sets

    sources = _corpus(tmp_path, demo_corpus)
    folder, report = _build(tmp_path, sources, memory_gb=1e-5, workers=2)
    assert report["clustering"]["doc_ranges"] > 1
    edges = find_edges(sorted((folder / "bands").glob("*.parquet")), report["lsh"]["bands"])
    set_files = sorted((folder / "sets").glob("*.arrow"))
    docs = np.unique(edges)
    sets = load_sets(set_files, docs)
    pos = lambda d: np.searchsorted(docs, d)  # noqa: E731
    ok = jaccard(sets, pos(edges[:, 0]), pos(edges[:, 1])) >= 0.8
    graph = coo_matrix((np.ones(int(ok.sum())), (pos(edges[ok, 0]), pos(edges[ok, 1]))), shape=(len(docs),) * 2)
    _, labels = connected_components(graph, directed=False)
    upstream = folder.parent / "exact_dedup"
    shards = [upstream / o["path"] for o in json.loads((upstream / "report.json").read_text())["outputs"]]
    meta = pl.concat([pl.read_parquet(p, columns=["id", "source", "n_chars"]) for p in shards]).with_row_index("doc")
    in_pairs = np.bincount(labels)[labels] > 1
    members = meta.with_columns(pl.col("doc").cast(pl.Int64)).filter(pl.col("doc").is_in(docs[in_pairs].tolist()))
    members = members.join(pl.DataFrame({"doc": docs[in_pairs], "component": labels[in_pairs]}), on="doc")
    members = best_first(members, "longest", ["s"])
    m_docs = members["doc"].to_numpy()
    rep, _ = greedy_representatives(members["component"].to_numpy(), pos(m_docs), sets, 0.8,
                                    pos(edges[:, 0]), pos(edges[:, 1]), ok)
    id_of = dict(zip(meta["doc"].to_list(), meta["id"].to_list(), strict=True))
    want = sorted((id_of[d], id_of[k]) for d, k in zip(m_docs.tolist(), m_docs[rep].tolist(), strict=True) if d != k)
    removed = pl.read_parquet(folder / "removed.parquet")
    assert sorted(zip(removed["id"].to_list(), removed["kept_id"].to_list(), strict=True)) == want
    assert len(want) >= 60
