"""SFT shards: the loss_mask column round-trips, verify refuses masks that break their invariants or changed after
packing, and the trainer's targets and counts follow the mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_train import make_sft_manifest, make_tokenizer

from longmix.formats.manifest import ManifestError, load_manifest, verify_manifest
from longmix.formats.packed_rows import PackedRows
from longmix.formats.packed_shards import check_rows, read_rows, write_shard
from longmix.train import masking


def _rows(mask: np.ndarray) -> PackedRows:
    ids = np.arange(16, dtype=np.uint32).reshape(2, 8)
    return PackedRows(input_ids=ids, seg_lens=np.array([3, 5, 6, 2], np.int32),
                      seg_sources=np.array([0, 1, 0, -1], np.int16), seg_offsets=np.array([0, 2, 4]),
                      pad=np.array([0, 2], np.int32), loss_mask=mask)


GOOD = np.array([[0, 1, 1, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0, 0]], np.uint8)


def test_loss_mask_round_trips_and_takes(tmp_path: Path) -> None:
    info = write_shard(tmp_path / "s.arrow", _rows(GOOD), 8)
    back = read_rows(info.path, 8)
    assert np.array_equal(back.loss_mask, GOOD)
    assert np.array_equal(back.take(np.array([1, 0])).loss_mask, GOOD[::-1])
    assert check_rows(back, 8, 2) is None
    plain = _rows(None)
    plain.loss_mask = None
    assert read_rows(write_shard(tmp_path / "p.arrow", plain, 8).path, 8).loss_mask is None
    with pytest.raises(ValueError, match="with and without"):
        PackedRows.concat([back, plain], 8)


@pytest.mark.parametrize(("r", "t", "problem"), [(0, 3, "first token"), (1, 0, "first token"),
                                                 (1, 6, "first token"), (1, 7, "padding")])
def test_check_rows_refuses_mask_on_starts_and_padding(r: int, t: int, problem: str) -> None:
    bad = GOOD.copy()
    bad[r, t] = 1
    assert problem in check_rows(_rows(bad), 8, 2)


def test_targets_follow_the_mask() -> None:
    rows = _rows(GOOD)
    lens = [rows.row(0)["doc_lens"], rows.row(1)["doc_lens"]]
    ids, _, tgt = masking.build_arrays(rows.input_ids, lens, rows.pad, True, rows.loss_mask)
    counted = tgt != masking.IGNORE
    # target t predicts token t + 1: it counts exactly where the mask of t + 1 is set
    assert np.array_equal(counted[:, :-1], GOOD[:, 1:].astype(bool))
    assert np.array_equal(tgt[counted], ids[:, 1:][GOOD[:, 1:].astype(bool)])
    for r in range(2):
        assert masking.predicted_count(lens[r], int(rows.pad[r]), 8, True, GOOD[r]) == counted[r].sum()
    assert [masking.example_count(lens[r], GOOD[r], int(rows.pad[r]), 8, True) for r in range(2)] == [2, 1]
    w = masking.example_weights(lens, tgt)
    assert np.allclose(w[0][counted[0]], [1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3][: counted[0].sum()])
    assert np.isclose(w.sum(), 3.0)  # each example's weights sum to one


def test_verify_checks_mask_count_and_template(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path / "tok")
    path = make_sft_manifest(tmp_path / "sft", tok, 128, 30_000, doc_chars=400)
    manifest = verify_manifest(path)
    assert manifest.sft is not None and manifest.sft.loss_tokens > 0
    (path.parent / manifest.sft.template).write_text("{{ messages }}")
    with pytest.raises(ManifestError, match="changed after packing"):
        verify_manifest(path)
    data = json.loads(path.read_text())
    data["sft"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="has a loss_mask column"):
        verify_manifest(path)
    assert load_manifest(path).sft is None
