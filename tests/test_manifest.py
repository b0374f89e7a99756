"""Packed shards and the manifest end to end on stdlib text: round trip, determinism, verification."""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from longmix.core.errors import UserError
from longmix.data.mix.buckets import default_edges
from longmix.data.mix.plan import MixParams, SourceMix, plan_mix, sample_order
from longmix.data.pack.packing import PackStats, TokenBatch, pack
from longmix.data.tokenize.encode import encode_table, train_bpe
from longmix.formats.manifest import (
    FORMAT,
    Manifest,
    ManifestError,
    load_manifest,
    make_lineage,
    shard_entries,
    tokenizer_entry,
    totals_from,
    verify_manifest,
    write_manifest,
)
from longmix.formats.packed_rows import PAD_SOURCE, PackedRows
from longmix.formats.packed_shards import (
    check_rows,
    open_shard,
    read_rows,
    sha256_file,
    shard_schema,
    shuffle_shards,
    write_shard,
    write_shards,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEQ_LEN = 2048
SOURCES = ["small", "large"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenBatch, Path]:
    by_size = sorted(STDLIB.glob("*.py"), key=lambda f: (f.stat().st_size, f.name))
    files = by_size[:100:3] + by_size[100:160:6]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    tok_path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok = train_bpe(texts[::2], vocab_size=2000, out_path=tok_path)
    table = encode_table(
        tok, pa.table({"id": [f.name for f in files], "source": ["py"] * len(files), "text": texts}), eos_id=1
    )
    sources = (np.arange(len(files)) >= len(by_size[:100:3])).astype(np.int16)
    return TokenBatch.from_arrow(table.column("input_ids"), sources), tok_path


def build(
    corpus: tuple[TokenBatch, Path], out: Path, seed: int, batch_docs: int = 16, tmp_rows: int = 7
) -> tuple[Path, list[PackedRows]]:
    """Plan (1.5x the corpus, so some documents repeat), pack, shuffle into shards, write the manifest."""
    docs, tok_path = corpus
    params = MixParams(
        total_tokens=int(docs.lengths.sum()) * 3 // 2,
        sources=[SourceMix(name="small", share=0.4), SourceMix(name="large", share=0.6, long_share=0.8)],
        edges=tuple(int(e) for e in default_edges(SEQ_LEN)),
        seed=seed,
    )
    plan = plan_mix(docs.sources, docs.lengths, params)
    ordered = docs.take(sample_order(plan.counts, seed))
    stats = PackStats(strategy="best_fit", seq_len=SEQ_LEN)
    blocks = [ordered.take(np.arange(a, min(a + batch_docs, len(ordered)))) for a in range(0, len(ordered), batch_docs)]
    packed = list(pack(blocks, SEQ_LEN, "best_fit", pad_id=2, window=32, stats=stats))
    unshuffled = write_shards(packed, out / "tmp", SEQ_LEN, rows_per_shard=tmp_rows)
    infos = shuffle_shards([i.path for i in unshuffled], out, SEQ_LEN, rows_per_shard=10, seed=seed)
    manifest = Manifest(
        seq_len=SEQ_LEN,
        tokenizer=tokenizer_entry(tok_path, out),
        sources=SOURCES,
        shards=shard_entries(infos, out),
        totals=totals_from(infos, truncated_documents=stats.docs_truncated),
        packing=stats.to_dict(),
        mix=plan.report.to_dict(),
        lineage=make_lineage({"seq_len": SEQ_LEN, "strategy": "best_fit"}, {"stdlib": "test"}, seed),
    )
    write_manifest(manifest, out / "manifest.json")
    return out / "manifest.json", packed


def segments(rows: PackedRows) -> Counter:
    out: Counter = Counter()
    for r in range(len(rows)):
        row = rows.row(r)
        pos = 0
        for n, s in zip(row["doc_lens"], row["doc_sources"], strict=True):
            if s != PAD_SOURCE:
                out[(row["input_ids"][pos : pos + n].tobytes(), int(s))] += 1
            pos += n
    return out


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PackedRows]]:
    return build(corpus, tmp_path_factory.mktemp("packed"), seed=7)


def test_manifest_round_trip(built, corpus) -> None:
    path, packed = built
    manifest = verify_manifest(path)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT == "longmix.manifest/1"
    assert set(data) >= {"seq_len", "tokenizer", "sources", "shards", "totals", "mix", "lineage"}
    assert manifest.sources == SOURCES and manifest.seq_len == SEQ_LEN
    assert manifest.tokenizer.sha256 == sha256_file(corpus[1]) and manifest.tokenizer.eos_id == 1
    assert manifest.lineage.seed == 7 and manifest.lineage.versions["pyarrow"] == pa.__version__
    assert len(manifest.shards) > 2 and all(s.path.startswith("shard-") for s in manifest.shards)
    # The shuffled shards hold exactly the packed rows: every segment, with its source, once.
    rows = PackedRows.concat([read_rows(path.parent / s.path, SEQ_LEN) for s in manifest.shards], SEQ_LEN)
    before = PackedRows.concat(packed, SEQ_LEN)
    assert segments(rows) == segments(before)
    assert not np.array_equal(rows.input_ids, before.input_ids)  # but in a new order
    assert check_rows(rows, SEQ_LEN, len(SOURCES)) is None
    assert manifest.totals.sequences == len(rows)
    assert manifest.totals.tokens == int((SEQ_LEN - rows.pad).sum()) == manifest.packing["tokens"]
    # Tokens in = tokens out: the mix plan's achieved tokens (EOS included) are what got packed.
    assert manifest.mix["achieved_tokens"] == manifest.totals.tokens


def test_shards_have_the_contract_schema_and_memory_map(built) -> None:
    path, _ = built
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
    path, _ = built
    # Different pack batches and intermediate shard sizes, as different worker counts would give.
    again, _ = build(corpus, tmp_path / "again", seed=7, batch_docs=5, tmp_rows=13)
    first = load_manifest(path)
    second = load_manifest(again)
    assert [s.path for s in first.shards] == [s.path for s in second.shards]
    for a, b in zip(first.shards, second.shards, strict=True):
        assert (path.parent / a.path).read_bytes() == (again.parent / b.path).read_bytes()
    other, _ = build(corpus, tmp_path / "other", seed=8)
    assert [s.sha256 for s in load_manifest(other).shards] != [s.sha256 for s in first.shards]


def copy_build(built, tmp_path: Path) -> Path:
    src, _ = built
    m = load_manifest(src)
    for f in [src, src.parent / m.tokenizer.path, *[src.parent / s.path for s in m.shards]]:
        (tmp_path / f.relative_to(src.parent)).write_bytes(f.read_bytes())
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
