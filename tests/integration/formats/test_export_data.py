"""`longmix export-data`: a mix in another trainer's format, read back by the library that owns the format
(megatron-core, mosaicml-streaming, datasets, OLMo-core), never by longmix's own reader."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_cli import cli, one_line_error
from helpers_packed import segments
from helpers_train import make_manifest, make_tokenizer

from longmix.core.errors import UserError
from longmix.formats.manifest import load_manifest
from longmix.formats.packed_rows import PAD_SOURCE
from longmix.formats.packed_shards import read_rows


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    path = make_manifest(root / "m", make_tokenizer(root / "tok"), 128, 30_000, rows_per_shard=24, doc_chars=300)
    assert len(load_manifest(path).shards) >= 3  # resume and per-shard files need several shards
    return path


def _rows(manifest: Path) -> list[tuple[np.ndarray, list[int], list[str]]]:
    """Every row of the mix without its padding: (tokens, document lengths, document sources), in order."""
    m = load_manifest(manifest)
    out = []
    for entry in m.shards:
        rows = read_rows(manifest.parent / entry.path, m.seq_len)
        for r in range(len(rows)):
            seg = rows.row(r)
            keep = seg["doc_sources"] != PAD_SOURCE
            lens = seg["doc_lens"][keep].astype(int).tolist()
            out.append((seg["input_ids"][:sum(lens)], lens, [m.sources[s] for s in seg["doc_sources"][keep]]))
    return out


def _segments(manifest: Path) -> list[np.ndarray]:
    """Every document segment of the mix, in order."""
    m = load_manifest(manifest)
    return [t for entry in m.shards for t, _ in segments(read_rows(manifest.parent / entry.path, m.seq_len))]


def _export(manifest: Path, fmt: str, out: Path, *extra: str) -> str:
    res = cli("export-data", manifest, "--to", fmt, "-o", out, *extra)
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_sidecar(out: Path, manifest: Path, fmt: str) -> None:
    side = json.loads((out / "longmix-export.json").read_text())
    m = load_manifest(manifest)
    assert side["format"] == fmt and side["tokens"] == m.totals.tokens  # totals count no padding
    assert side["rows"] == m.totals.sequences and side["documents"] == len(_segments(manifest))
    assert side["lineage"]["tokenizer_sha256"] == m.tokenizer.sha256 and side["lineage"]["sources"] == m.sources
    assert side["lineage"]["seed"] == m.lineage.seed


def test_megatron_reads_every_document(manifest: Path, tmp_path: Path) -> None:
    """Megatron-core's own IndexedDataset reads the export: one document per segment, the same tokens, uint16
    for a vocabulary under 65,500 (Megatron's rule), and the lineage beside it."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out = tmp_path / "out"
    text = " ".join(_export(manifest, "megatron", out).split())
    assert f"wrote {out / 'mix.bin'}" in text and "exported" in text and "ETA" in text
    ds = IndexedDataset(str(out / "mix"))
    want = _segments(manifest)
    assert len(ds) == len(want) and len(ds.document_indices) == len(want) + 1
    for i, seg in enumerate(want):
        assert np.array_equal(ds[i], seg) and ds[i].dtype == np.uint16
    _check_sidecar(out, manifest, "megatron")
    assert not (out / ".longmix-export" / "parts").exists()  # the parts are joined, then removed


def test_mds_reads_rows_and_document_spans(manifest: Path, tmp_path: Path) -> None:
    """mosaicml-streaming's StreamingDataset reads the MDS export: per row the mix's tokens, and `indices`,
    ProLong's (start, end) document spans, giving back the documents' lengths."""
    from longmix.core.streaming_import import import_streaming_module

    out = tmp_path / "mds"
    _export(manifest, "mds", out)
    StreamingDataset = import_streaming_module("streaming.base.dataset").StreamingDataset
    ds = StreamingDataset(local=str(out), shuffle=False, batch_size=1)
    want = _rows(manifest)
    assert len(ds) == len(want)
    m = load_manifest(manifest)
    for i, (ids, lens, sources) in enumerate(want):
        item = ds[i]
        assert np.array_equal(item["input_ids"], ids) and item["length"] == len(ids)
        spans = item["indices"]
        assert spans.shape == (len(lens), 2) and (spans[:, 1] - spans[:, 0]).tolist() == lens
        assert spans[0, 0] == 0 and spans[-1, 1] == len(ids)
        assert [m.sources[s] for s in item["doc_sources"]] == sources
    _check_sidecar(out, manifest, "mds")


def test_hf_datasets_loads_the_rows(manifest: Path, tmp_path: Path) -> None:
    """`datasets.load_dataset` reads the folder through its card: the same rows, position ids restarting at 0
    with each document, the segment lengths and sources."""
    import datasets

    out = tmp_path / "hf"
    _export(manifest, "hf", out)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    want = _rows(manifest)
    assert len(ds) == len(want)
    for row, (ids, lens, sources) in zip(ds, want, strict=True):
        assert row["input_ids"] == ids.tolist() and row["segment_lengths"] == lens
        assert row["segment_sources"] == sources
        assert row["position_ids"] == [p for n in lens for p in range(n)]
    _check_sidecar(out, manifest, "hf")


def test_olmo_core_reads_tokens_and_documents(manifest: Path, tmp_path: Path) -> None:
    """OLMo-core's own readers: the document indices from each part's metadata file and the token slices of
    its memory-mapped array give back every document."""
    from olmo_core.data.utils import iter_document_indices, load_array_slice

    out = tmp_path / "olmo"
    _export(manifest, "olmo", out)
    got = []
    for part in sorted(out.glob("part-*.npy")):
        for a, b in iter_document_indices(part, use_array_if_local=False, dtype=np.uint16):
            got.append(load_array_slice(part, a, b, np.uint16))
    want = _segments(manifest)
    assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    _check_sidecar(out, manifest, "olmo")


@pytest.mark.parametrize("fmt", ["megatron", "mds", "olmo"])
def test_a_killed_export_resumes_to_the_same_bytes(manifest: Path, tmp_path: Path, fmt: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the first shard keeps the written shards; the rerun writes the rest and the result is
    byte-identical to an export that never stopped."""
    import longmix.formats.export.run as run

    clean, cut = tmp_path / "clean", tmp_path / "cut"
    _export(manifest, fmt, clean)
    real = run.shard_docs
    calls = {"n": 0}

    def dying(*args, **kwargs):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C or a kill leaves: the second shard never written
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "shard_docs", dying)
    res = cli("export-data", manifest, "--to", fmt, "-o", cut)
    assert res.returncode != 0 and not (cut / "longmix-export.json").exists()
    monkeypatch.setattr(run, "shard_docs", real)
    text = _export(manifest, fmt, cut)
    assert "[1/" in text and "kept" in text.split("\n")[0]
    ignore = {"longmix-export.json"}  # holds the manifest path only, equal here
    assert {k: v for k, v in _tree(cut).items() if k not in ignore} == \
        {k: v for k, v in _tree(clean).items() if k not in ignore}
    assert "already holds this export" in " ".join(_export(manifest, fmt, cut).split())


def test_bad_requests_are_one_line_before_any_writing(manifest: Path, tmp_path: Path) -> None:
    from longmix.formats.export.dtypes import token_dtype

    one_line_error(cli("export-data", manifest, "--to", "megatron", "-o", tmp_path / "a", "--dtype", "uint32"),
                   "megatron stores tokens as")
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match="cannot hold token ids up to 151,935"):
        token_dtype("olmo", ("uint16", "uint32", "uint64"), "uint16", 151_936)
    assert token_dtype("megatron", ("uint16", "int32", "int64"), "auto", 65_499).name == "uint16"
    assert token_dtype("megatron", ("uint16", "int32", "int64"), "auto", 65_500).name == "int32"
    assert token_dtype("olmo", ("uint16", "uint32", "uint64"), "auto", 65_536).name == "uint16"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_line_error(cli("export-data", manifest, "--to", "olmo", "-o", busy), "not empty")
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    _export(manifest, "olmo", tmp_path / "o")
    one_line_error(cli("export-data", manifest, "--to", "hf", "-o", tmp_path / "o"), "another mix or format")


def test_an_unverifiable_manifest_writes_nothing(manifest: Path, tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(manifest.parent, bad)
    shard = next(bad.rglob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10])
    one_line_error(cli("export-data", bad / "manifest.json", "--to", "megatron", "-o", tmp_path / "out"), "sha256")
    assert not (tmp_path / "out").exists()
