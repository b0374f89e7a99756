"""Packed shards and the manifest end to end on stdlib text, built by the real flow (ingest, tokenize, mix,
pack): round trip, determinism, verification."""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from conftest import write_jsonl
from helpers_packed import segments

from longmix.core.errors import UserError
from longmix.data.flow import build as build_flow
from longmix.data.recipe import load_recipe
from longmix.data.tokenize.encode import train_bpe
from longmix.formats.ipc import read_ipc
from longmix.formats.manifest import (
    FORMAT,
    ManifestError,
    load_manifest,
    verify_manifest,
    write_manifest,
)
from longmix.formats.packed_rows import PackedRows
from longmix.formats.packed_shards import (
    check_rows,
    open_shard,
    read_rows,
    sha256_file,
    shard_schema,
    write_shard,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEQ_LEN = 2048
SOURCES = ["small", "large"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Two sources of stdlib modules (the smaller ones, some larger ones), a BPE trained on half of them, and
    the corpus's tokens (EOS included)."""
    root = tmp_path_factory.mktemp("stdlib")
    by_size = sorted(STDLIB.glob("*.py"), key=lambda f: (f.stat().st_size, f.name))
    for name, files in zip(SOURCES, (by_size[:100:3], by_size[100:160:6]), strict=True):
        write_jsonl(root / name / "part.jsonl", [{"id": f.name, "text": f.read_text(encoding="utf-8",
                                                                                      errors="replace")}
                                                 for f in files])
    texts = [json.loads(x)["text"] for n in SOURCES for x in (root / n / "part.jsonl").read_text().splitlines()]
    tok = train_bpe(texts[::2], vocab_size=2000, out_path=root / "tokenizer.json")
    return root, sum(len(e.ids) + 1 for e in tok.encode_batch(texts))


def build(corpus: tuple[Path, int], out: Path, seed: int, batch_docs: int = 16, workers: int = 1) -> Path:
    """The real flow on the corpus: a mix of 1.5x its tokens (so some documents repeat), best-fit packed."""
    root, tokens = corpus
    recipe = {"name": "stdlib", "output": str(out), "seed": seed, "executor": {"workers": workers},
              "sources": [{"name": n, "paths": [str(root / n / "*.jsonl")]} for n in SOURCES],
              "tokenizer": {"path": str(root / "tokenizer.json")}, "seq_len": SEQ_LEN,
              "stages": {"exact_dedup": {"enabled": False}, "near_dedup": {"enabled": False},
                         "mix": {"total_tokens": tokens * 3 // 2, "sources": {"small": {"share": 0.4},
                                                                      "large": {"share": 0.6, "long_share": 0.8}}},
                         "pack": {"strategy": "best_fit", "window": 32, "batch_docs": batch_docs,
                                  "rows_per_shard": 10}}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    build_flow(load_recipe(path), progress=False)
    return out / "manifest.json"


def planned_segments(out: Path) -> Counter:
    """What the shards must hold: each tokenized document as often as the mix plan (one row per document, in
    the order of tokenize's recorded outputs) says, cut into seq_len pieces where longer (best_fit splits them)."""
    plan = read_ipc(out / "mix" / "plan.arrow")
    outputs = json.loads((out / "tokenize" / "report.json").read_text())["outputs"]
    docs = [ids for o in outputs for ids in read_ipc(out / "tokenize" / o["path"], ["input_ids"]).column(0).to_pylist()]
    want: Counter = Counter()
    for ids, source, count in zip(docs, *(plan.column(c).to_pylist() for c in ("source", "count")), strict=True):
        tokens = np.asarray(ids, dtype=np.uint32)
        for a in range(0, len(tokens), SEQ_LEN):
            want[(tokens[a : a + SEQ_LEN].tobytes(), source)] += count
    return +want  # documents the plan left out (count 0) are not expected


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(corpus, tmp_path_factory.mktemp("packed") / "out", seed=7)


def test_manifest_round_trip(built, corpus) -> None:
    path = built
    manifest = verify_manifest(path)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT == "longmix.manifest/1"
    assert set(data) >= {"seq_len", "tokenizer", "sources", "shards", "totals", "mix", "lineage"}
    assert manifest.sources == SOURCES and manifest.seq_len == SEQ_LEN
    assert manifest.tokenizer.sha256 == sha256_file(corpus[0] / "tokenizer.json") and manifest.tokenizer.eos_id == 1
    assert manifest.lineage.seed == 7 and manifest.lineage.versions["pyarrow"] == pa.__version__
    assert len(manifest.shards) > 2 and all(s.path.startswith("pack/shards/shard-") for s in manifest.shards)
    # The shuffled shards hold exactly the mix plan's documents: each as often as planned, with its source.
    rows = PackedRows.concat([read_rows(path.parent / s.path, SEQ_LEN) for s in manifest.shards], SEQ_LEN)
    got = Counter((t.tobytes(), s) for t, s in segments(rows))
    assert got == planned_segments(path.parent)
    assert max(got.values()) > 1  # some documents repeat (the mix asks for 1.5x the corpus)
    assert check_rows(rows, SEQ_LEN, len(SOURCES)) is None
    assert manifest.totals.sequences == len(rows)
    assert manifest.totals.tokens == int((SEQ_LEN - rows.pad).sum()) == manifest.packing["tokens"]
    # Tokens in = tokens out: the mix plan's achieved tokens (EOS included) are what got packed.
    assert manifest.mix["achieved_tokens"] == manifest.totals.tokens


def test_shards_have_the_contract_schema_and_memory_map(built) -> None:
    path = built
    shard = path.parent / load_manifest(path).shards[0].path
    before = pa.total_allocated_bytes()
    table = open_shard(shard)
    assert table.schema.equals(shard_schema(SEQ_LEN))
    assert table.schema.field("input_ids").type == pa.list_(pa.uint32(), SEQ_LEN)
    assert str(table.schema.field("doc_lens").type) == "list<item: int32>"
    assert str(table.schema.field("doc_sources").type) == "list<item: int16>"
    assert table.schema.field("pad").type == pa.int32()
    # Memory-mapped: reading the shard allocates (almost) nothing on the heap.
    assert pa.total_allocated_bytes() - before < shard.stat().st_size // 10
    with pa.memory_map(str(shard)) as src:
        assert pa.ipc.open_file(src).num_record_batches == 1


def test_same_seed_gives_byte_identical_shards(built, corpus, tmp_path: Path) -> None:
    path = built
    # Other pack batches and two workers instead of one: the same bytes.
    again = build(corpus, tmp_path / "again", seed=7, batch_docs=5, workers=2)
    first = load_manifest(path)
    second = load_manifest(again)
    assert [s.path for s in first.shards] == [s.path for s in second.shards]
    for a, b in zip(first.shards, second.shards, strict=True):
        assert (path.parent / a.path).read_bytes() == (again.parent / b.path).read_bytes()
    other = build(corpus, tmp_path / "other", seed=8)
    assert [s.sha256 for s in load_manifest(other).shards] != [s.sha256 for s in first.shards]


def copy_build(built, tmp_path: Path) -> Path:
    src = built
    m = load_manifest(src)
    for f in [src, src.parent / m.tokenizer.path, *[src.parent / s.path for s in m.shards]]:
        copy = tmp_path / f.relative_to(src.parent)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(f.read_bytes())
    return tmp_path / "manifest.json"


def test_corrupted_shard_fails_verify_naming_it(built, tmp_path: Path) -> None:
    path = copy_build(built, tmp_path)
    bad = tmp_path / load_manifest(path).shards[1].path
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ManifestError) as err:
        verify_manifest(path)
    msg = str(err.value)
    assert bad.name in msg and "sha256 mismatch" in msg and "\n" not in msg
    assert isinstance(err.value, UserError) and err.value.exit_code == 2 and isinstance(err.value, ValueError)


def test_missing_shard_and_bad_manifests(built, tmp_path: Path) -> None:
    path = copy_build(built, tmp_path)
    manifest = load_manifest(path)
    (tmp_path / manifest.shards[-1].path).unlink()
    with pytest.raises(ManifestError, match=f"shard {manifest.shards[-1].path}: file is missing"):
        verify_manifest(path)
    with pytest.raises(ManifestError, match="manifest not found"):
        verify_manifest(tmp_path / "nope.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(ManifestError, match="expected 'longmix.manifest/1'"):
        load_manifest(other)
    data = json.loads(path.read_text())
    del data["totals"]
    other.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="field 'totals'"):
        load_manifest(other)


def test_hash_match_but_wrong_schema_or_rows_fails(built, tmp_path: Path) -> None:
    path = copy_build(built, tmp_path)
    manifest = load_manifest(path)
    wrong_len = manifest.model_copy(update={"seq_len": SEQ_LEN // 2})
    write_manifest(wrong_len, path)
    with pytest.raises(ManifestError, match="not a packed shard"):
        verify_manifest(path)
    shards = [s.model_copy(update={"rows": s.rows + 1}) if i == 0 else s for i, s in enumerate(manifest.shards)]
    write_manifest(manifest.model_copy(update={"shards": shards}), path)
    with pytest.raises(ManifestError, match=f"{shards[0].path}: has {shards[0].rows - 1} rows, manifest says"):
        verify_manifest(path)


def test_shard_breaking_row_invariants_fails_verify(built, tmp_path: Path) -> None:
    path = copy_build(built, tmp_path)
    manifest = load_manifest(path)
    rows = read_rows(tmp_path / manifest.shards[0].path, SEQ_LEN).take(np.arange(manifest.shards[0].rows))
    rows.seg_sources[0] = 5  # no such source
    info = write_shard(tmp_path / manifest.shards[0].path, rows, SEQ_LEN)
    shards = [manifest.shards[0].model_copy(update={"sha256": info.sha256}), *manifest.shards[1:]]
    write_manifest(manifest.model_copy(update={"shards": shards}), path)
    with pytest.raises(ManifestError, match="source index outside 0..1"):
        verify_manifest(path)
    verify_manifest(path, check_content=False)  # hashes, schema and counts alone still pass
