"""Loss vs context length end to end on a tiny trained Llama and demo-style data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import write_jsonl
from helpers_eval import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval-ckpt")
    return tiny_checkpoint(root / "trained", steps=30), tiny_checkpoint(root / "untrained", steps=0)


@pytest.fixture(scope="module")
def docs(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out long documents of the demo corpus (its `tests` source: training never sees it), a few short."""
    recs = [json.loads(line) for line in (demo_corpus / "tests" / "part-00000.jsonl").read_text().splitlines()[:12]]
    recs.append({"id": "short", "text": "x = 1\n"})
    return write_jsonl(tmp_path_factory.mktemp("eval-docs") / "held.jsonl", recs)


def test_token_losses_match_hf_loss_and_ignore_padding(ckpts: tuple[Path, Path], docs: Path) -> None:
    import torch

    from longmix.eval.loading import sample_documents
    from longmix.models.loading import load_checkpoint
    from longmix.models.token_loss import token_losses

    loaded = load_checkpoint(ckpts[0], device="cpu")
    (_, a), (_, b) = sample_documents([docs], loaded.tokenizer, loaded.bos_id, 64, 96, 2, seed=1)
    a = a[:60]  # shorter than b: padded in a batch with it
    alone = token_losses(loaded.model, a[None], "cpu")[0]
    with torch.no_grad():
        hf = loaded.model(input_ids=torch.as_tensor(a[None]), labels=torch.as_tensor(a[None])).loss.item()
    assert alone.mean() == pytest.approx(hf, rel=1e-5)
    batch = np.full((2, len(b)), 1, dtype=np.int64)
    batch[0, :len(a)], batch[1] = a, b
    mask = np.ones_like(batch)
    mask[0, len(a):] = 0
    padded = token_losses(loaded.model, batch, "cpu", mask)
    assert np.allclose(padded[0, :len(a) - 1], alone, atol=1e-4)
    assert np.isnan(padded[0, len(a) - 1:]).all() and np.isfinite(padded[1]).all()


def test_documents_are_whole_and_start_with_bos(ckpts: tuple[Path, Path], docs: Path) -> None:
    from longmix.eval.loading import sample_documents
    from longmix.models.loading import load_checkpoint

    loaded = load_checkpoint(ckpts[0], device="cpu")
    got = sample_documents([docs], loaded.tokenizer, loaded.bos_id, 128, 128, None, seed=0)
    assert "short" not in [d[0] for d in got] and len(got) >= 5
    first = json.loads(docs.read_text().splitlines()[0])
    ids = dict(got)[first["id"]]
    assert ids[0] == loaded.bos_id and len(ids) == 128
    assert loaded.tokenizer.decode(ids[1:].tolist()) == first["text"][:len(loaded.tokenizer.decode(ids[1:].tolist()))]
    again = sample_documents([docs], loaded.tokenizer, loaded.bos_id, 128, 128, 3, seed=0)
    assert [d[0] for d in again] == [d[0] for d in got[:3]]  # --seed makes the choice repeatable


def test_cli_compares_checkpoints_end_to_end(ckpts: tuple[Path, Path], docs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from longmix.cli import app

    res = CliRunner().invoke(app, ["eval", "context-loss", str(ckpts[0]), str(ckpts[1]), "--data", str(docs),
                                   "--max-len", "192", "--max-docs", "6", "--batch-size", "4", "--bins", "12",
                                   "--fit-min", "1", "--device", "cpu", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "context_loss.json").read_text())
    trained, untrained = out["results"]
    assert [trained["name"], untrained["name"]] == ["trained", "untrained"]
    assert trained["n_docs"] == 6 and len(trained["per_position_loss"]) == 191
    assert trained["doc_ids"] == untrained["doc_ids"]  # same seed: both see the same documents
    # an untrained model sits near ln(vocab) at every position; training brings the loss well below it
    assert untrained["mean_loss"] == pytest.approx(np.log(512), abs=0.3)
    assert trained["mean_loss"] < untrained["mean_loss"] - 1.0
    b = trained["bins"]
    assert b["edges"][0] == 1 and b["edges"][-1] == 192 and sum(b["docs"]) == 6 * len(b["loss"])
    assert trained["fit"] is not None and trained["fit"]["n_points"] == len(b["loss"])
    assert (tmp_path / "context_loss.png").stat().st_size > 10_000
    assert "trained" in res.output and "untrained" in res.output


def test_tokenized_arrow_shards_as_data(ckpts: tuple[Path, Path], tmp_path: Path) -> None:
    from longmix.eval.context_loss import context_loss
    from longmix.models.loading import load_checkpoint

    loaded = load_checkpoint(ckpts[0], device="cpu")
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(3, 512, n).tolist()] for n in (50, 80, 100)]
    table = pa.table({"id": ["a", "b", "c"], "input_ids": pa.array(rows, pa.large_list(pa.uint32()))})
    with pa.ipc.new_file(str(tmp_path / "part.arrow"), table.schema) as w:
        w.write_table(table)
    res = context_loss(loaded, [tmp_path], max_len=64, min_len=64, max_docs=None, seed=0, n_bins=6, progress=False)
    assert sorted(res["doc_ids"]) == ["b", "c"] and len(res["per_position_loss"]) == 63


def test_missing_data_and_checkpoint_are_user_errors(tmp_path: Path) -> None:
    from longmix.core.errors import UserError
    from longmix.eval.loading import sample_documents
    from longmix.models.loading import load_checkpoint

    with pytest.raises(UserError, match="config.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match="not found"):
        sample_documents([tmp_path / "nope.jsonl"], None, None, 8, 8, 1, 0)


def test_output_projection_in_pieces_equals_full_logits(monkeypatch) -> None:
    """Long documents of big-vocabulary models (Gemma 3: 262K ids) get their logits a piece at a time."""
    import torch
    from helpers_families import family_config
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.models import token_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**family_config("gemma3_text"))).eval()
    x = np.random.default_rng(0).integers(3, 500, size=(2, 300))
    whole = token_loss.token_losses(model, x, "cpu")
    monkeypatch.setattr(token_loss, "HEAD_TOKENS", 7)
    pieces = token_loss.token_losses(model, x, "cpu")
    assert pieces.shape == whole.shape == (2, 299)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-5)
