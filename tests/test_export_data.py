"""`longmix export-data`: a mix in another trainer's format, read back by the library that owns the format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_train import make_manifest, make_tokenizer
from typer.testing import CliRunner

from longmix.cli.app import app
from longmix.core.errors import UserError
from longmix.formats.manifest import load_manifest
from longmix.formats.packed_rows import PAD_SOURCE
from longmix.formats.packed_shards import read_rows


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    return make_manifest(root / "m", make_tokenizer(root / "tok"), 128, 30_000, doc_chars=300)


def _segments(manifest: Path) -> list[np.ndarray]:
    """Every non-padding segment of the mix, in shard and row order."""
    m = load_manifest(manifest)
    out = []
    for entry in m.shards:
        rows = read_rows(manifest.parent / entry.path, m.seq_len)
        for r in range(len(rows)):
            seg = rows.row(r)
            starts = np.concatenate([[0], np.cumsum(seg["doc_lens"])])
            out += [seg["input_ids"][a:b] for a, b, s in zip(starts, starts[1:], seg["doc_sources"], strict=False)
                    if s != PAD_SOURCE]
    return out


def test_megatron_reads_every_document(manifest: Path, tmp_path: Path) -> None:
    """Megatron-core's own IndexedDataset reads the export: one document per segment, the same tokens, uint16
    for a vocabulary under 65,500 (Megatron's rule), and the lineage beside it."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    res = CliRunner().invoke(app, ["export-data", str(manifest), "--to", "megatron", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert f"wrote {tmp_path / 'out' / 'mix.bin'}" in res.output and "exported" in res.output
    ds = IndexedDataset(str(tmp_path / "out" / "mix"))
    want = _segments(manifest)
    assert len(ds) == len(want) and len(ds.document_indices) == len(want) + 1
    for i, seg in enumerate(want):
        assert np.array_equal(ds[i], seg) and ds[i].dtype == np.uint16
    side = json.loads((tmp_path / "out" / "mix.longmix.json").read_text())
    m = load_manifest(manifest)
    assert side["tokens"] == sum(len(s) for s in want) == m.totals.tokens  # totals count no padding
    assert side["lineage"]["tokenizer_sha256"] == m.tokenizer.sha256 and side["lineage"]["sources"] == m.sources


def test_an_unverifiable_manifest_writes_nothing(manifest: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "m"
    shutil.copytree(manifest.parent, bad)
    shard = next(bad.rglob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10])
    res = CliRunner().invoke(app, ["export-data", str(bad / "manifest.json"), "--to", "megatron", "-o",
                                   str(tmp_path / "out")])
    assert isinstance(res.exception, UserError) and "sha256" in str(res.exception)
    assert not (tmp_path / "out").exists()
