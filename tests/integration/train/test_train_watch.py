"""A run people can watch and trust: experiment trackers read back with their own readers, each step once after a
kill and resume; the run plan's numbers are the run's; the divergence guard stops a NaN run and keeps its last
good checkpoint; `longmix report` draws the curves from metrics.jsonl alone."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from helpers_cli import cli
from helpers_train import make_manifest, make_tokenizer, run_longmix, tiny_recipe, write_train_recipe
from typer.testing import CliRunner

from longmix.cli.app import app
from longmix.core.errors import UserError
from longmix.train.guard import DivergenceGuard
from longmix.train.trainer import read_metrics

pytestmark = pytest.mark.slow
TRACKERS = ["tensorboard", "mlflow"]


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("watch")
    tok = make_tokenizer(root / "tok")
    return {"root": root, "manifest": make_manifest(root / "d128", tok, 128, 120_000)}


@pytest.fixture(scope="module")
def watched(data) -> dict[str, Path]:
    """Six steps on 2 ranks logging to TensorBoard and MLflow, killed (SIGKILL) right after step 5 was logged
    everywhere, then resumed from its step-4 checkpoint: steps 5 and 6 are replayed."""
    root = data["root"]
    rec = tiny_recipe(root / "run", [{"manifest": str(data["manifest"]), "steps": 6}],
                      checkpoint={"every_steps": 2, "keep_last": 1}, logging={"report_to": TRACKERS})
    recipe = write_train_recipe(root / "watch.yaml", **rec)
    killed = run_longmix("train", str(recipe), "--nproc", "2", env={"LONGMIX_TEST_SIGKILL": "after_log:5"})
    assert killed.returncode != 0
    assert max(r["step"] for r in read_metrics(root / "run" / "metrics.jsonl") if "loss" in r) == 5
    resumed = run_longmix("train", str(recipe), "--nproc", "2")
    _ok(resumed)
    return {"run": root / "run", "recipe": recipe, "first": killed, "second": resumed}


def _train_losses(run: Path) -> dict[int, float]:
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(rows) == len({r["step"] for r in rows})
    return {r["step"]: r["loss"] for r in rows}


def test_tensorboard_holds_each_step_once(watched) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(watched["run"] / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == list(range(1, 7))  # 5 once, though both runs logged it
    want = _train_losses(watched["run"])
    for e in events:  # TensorBoard stores float32
        assert e.value == pytest.approx(want[e.step], rel=1e-6)
    assert "eval/loss" in acc.Tags()["scalars"]


def test_mlflow_holds_each_step_once(watched) -> None:
    from mlflow.tracking import MlflowClient

    state = json.loads((watched["run"] / "trackers.json").read_text())
    client = MlflowClient(f"sqlite:///{watched['run'] / 'mlflow.db'}")
    history = client.get_metric_history(state["mlflow_run_id"], "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 7))
    want = _train_losses(watched["run"])
    for m in history:
        assert m.value == want[m.step]
    run = client.get_run(state["mlflow_run_id"])
    assert run.data.params["recipe.name"] == "tiny" and "manifests" in json.dumps(run.data.params)
    assert run.info.status == "FINISHED"


def _wandb_records(path: Path):
    """The records of a W&B offline run file: W&B's own protobuf records in LevelDB's log framing (32 KiB blocks,
    each piece with a 7-byte header), after W&B's 7-byte file header."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_holds_the_steps(data) -> None:
    """With no W&B login the run is an offline one (`wandb sync` uploads it later) holding every step's loss as
    metrics.jsonl has it, and the run's config. Not under a kill: W&B buffers in its own service process, and a
    killed run's last second of records may never reach its file (the resume re-sends what follows the checkpoint)."""
    root = data["root"]
    rec = tiny_recipe(root / "wb", [{"manifest": str(data["manifest"]), "steps": 3}],
                      checkpoint={"every_steps": 3, "keep_last": 1}, logging={"report_to": ["wandb"]})
    _ok(run_longmix("train", str(write_train_recipe(root / "wb.yaml", **rec)), "--nproc", "2",
                    env={"HOME": str(root)}))  # no ~/.netrc: no W&B login
    run = root / "wb"
    state = json.loads((run / "trackers.json").read_text())
    files = sorted((run / "wandb").glob(f"offline-run-*-{state['wandb_run_id']}/run-*.wandb"))
    assert len(files) == 1
    records = list(_wandb_records(files[0]))
    config = {i.key for r in records if r.WhichOneof("record_type") in ("run", "config")
              for i in (r.run.config.update if r.WhichOneof("record_type") == "run" else r.config.update)}
    assert {"recipe", "manifests", "git_revision"} <= config, config
    losses = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            if "train/loss" in items:
                losses.append((items["_step"], items["train/loss"]))
    want = _train_losses(run)
    assert sorted(s for s, _ in losses) == [1, 2, 3]
    assert all(v == want[s] for s, v in losses)


def test_the_plan_is_what_the_run_does(watched) -> None:
    res = CliRunner().invoke(app, ["check", str(watched["recipe"]), "--nproc", "2"])
    assert res.exit_code == 0, res.output
    head = re.search(r"run plan on 2 rank\(s\): (\d+) steps, ([\d,]+) tokens", res.output)
    assert head, res.output
    rows = [r for r in read_metrics(watched["run"] / "metrics.jsonl") if "loss" in r]
    assert int(head.group(1)) == len(rows) == rows[-1]["total_steps"]
    assert int(head.group(2).replace(",", "")) == sum(r["tokens"] for r in rows)
    assert "learning rate: first step (step 1)" in res.output and "memory per rank (estimate)" in res.output
    assert "run plan on 2 rank(s)" in watched["first"].stdout + watched["first"].stderr  # train prints it too
    assert (watched["run"] / "lr_schedule.png").stat().st_size > 5_000


def test_console_has_eta_and_mfu_on_cpu(watched) -> None:
    text = watched["second"].stdout + watched["second"].stderr
    assert re.search(r"step +6/6 .* mfu \d+\.\d+% +eta 0:00:00", text), text[-2000:]
    last = [r for r in read_metrics(watched["run"] / "metrics.jsonl") if "loss" in r][-1]
    assert 0 < last["mfu"] < 1 and last["eta_s"] == 0


def test_report_from_metrics_alone(watched, tmp_path: Path) -> None:
    copy = tmp_path / "copied-run"
    copy.mkdir()
    shutil.copy(watched["run"] / "metrics.jsonl", copy)
    res = CliRunner().invoke(app, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    md = (copy / "report" / "report.md").read_text()
    assert "steps logged: 6 of 6" in md
    for stem in ("loss", "lr", "tokens_per_s", "grad_norm"):
        assert f"![{stem}]({stem}.png)" in md and (copy / "report" / f"{stem}.png").stat().st_size > 5_000
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert isinstance(res.exception, UserError) and "has no metrics.jsonl" in str(res.exception)


def test_a_tracker_not_installed_is_one_line_before_launch(data, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    rec = tiny_recipe(data["root"] / "unused", [{"manifest": str(data["manifest"]), "steps": 2}],
                      logging={"report_to": "wandb"})
    res = CliRunner().invoke(app, ["check", str(write_train_recipe(data["root"] / "w.yaml", **rec))])
    assert isinstance(res.exception, UserError)  # main() prints it as this one line, exit 2
    assert "logging.report_to names wandb, but wandb is not installed: pip install 'longmix[wandb]'" in \
        str(res.exception)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(data) -> None:
    """lr 1e6: the loss goes non-finite within a few steps. The run stops with one line naming the step and the
    last finite checkpoint, exit 3; that checkpoint survives rotation (keep_last 1) and exports."""
    root = data["root"]
    rec = tiny_recipe(root / "nan", [{"manifest": str(data["manifest"]), "steps": 12}],
                      optim={"lr": 1e6}, schedule={"warmup_steps": 0},
                      checkpoint={"every_steps": 1, "keep_last": 1}, guard={"max_bad_steps": 2})
    proc = run_longmix("train", str(write_train_recipe(root / "nan.yaml", **rec)), "--nproc", "2")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    found = re.search(r"error: training diverged: .* at step (\d+), 2 non-finite steps in a row since step (\d+) "
                      r"\(guard.max_bad_steps=2\); the last finite checkpoint is (\S+) \(step (\d+)\)", last_line)
    assert found, proc.stderr[-2000:]
    stop, first_bad, folder, good = int(found.group(1)), int(found.group(2)), Path(found.group(3)), int(found.group(4))
    assert stop == first_bad + 1 and good < first_bad
    rows = {r["step"]: r for r in read_metrics(root / "nan" / "metrics.jsonl") if "loss" in r}
    assert not math.isfinite(rows[first_bad]["loss"]) or not math.isfinite(rows[first_bad]["grad_norm"])
    assert all(math.isfinite(rows[s]["loss"]) for s in range(1, first_bad))
    saved = sorted(p.name for p in (root / "nan" / "checkpoints").glob("step_*"))
    assert folder.name in saved and all(int(n[5:]) < first_bad for n in saved)
    _ok(cli("export", str(folder), "-o", str(root / "nan-export")))
    assert (root / "nan-export" / "model.safetensors").is_file()


def test_export_refuses_non_finite_weights() -> None:
    import torch

    from longmix.train.export import non_finite

    sd = {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")]),
          "ids": torch.tensor([1, 2])}
    assert non_finite(sd) == ["b", "c"]


def test_the_guard_counts_bad_steps_in_a_row_and_flags_spikes() -> None:
    g = DivergenceGuard(max_bad_steps=2, spike_factor=3.0, spike_window=10)
    verdicts = [g.observe(s, loss, 1.0) for s, loss in enumerate([2.0] * 10, 1)]
    assert not any(v.bad or v.spike for v in verdicts)
    assert g.observe(11, 7.0, 1.0).spike == "loss 7 is 3.5x the median 2 of the last 10 steps"
    one, two = g.observe(12, float("nan"), 1.0), g.observe(13, float("nan"), 1.0)
    assert one.bad and not one.stop and two.stop and g.first_bad_step == 12
    g = DivergenceGuard(max_bad_steps=2, spike_factor=3.0, spike_window=10)
    assert g.observe(1, 2.0, float("inf")).bad and not g.observe(2, 2.0, 1.0).bad  # a skipped step, then fine
    first = g.observe(3, float("nan"), None)
    assert first.bad and not first.stop and g.first_bad_step == 1
    assert g.observe(4, float("nan"), None).stop


def _breakdowns(run: Path, step: int) -> dict:
    return next(r for r in read_metrics(run / "metrics.jsonl") if r.get("step") == step and "loss" in r)


def test_loss_by_source_and_bucket_recombines_to_the_loss(watched) -> None:
    """Token-weighted, the per-source losses (and the per-bucket ones) give back the step's loss, and their token
    counts the step's predicted tokens; held-out losses come by source, bucket and position band."""
    for r in (r for r in read_metrics(watched["run"] / "metrics.jsonl") if "loss" in r):
        whole = {}
        for what in ("source", "bucket"):
            losses, tokens = r[f"loss_by_{what}"], r[f"tokens_by_{what}"]
            assert sum(tokens.values()) == r["predicted_tokens"]
            whole[what] = sum(losses[k] * tokens[k] for k in losses) / r["predicted_tokens"]
        # the same float64 sums regrouped; against the loss, per-token float32 losses vs the fused sum
        assert whole["source"] == pytest.approx(whole["bucket"], rel=1e-12)
        assert whole["source"] == pytest.approx(r["loss"], rel=1e-6)
        assert set(r["loss_by_source"]) == {"code", "docs"}
    ev = [r for r in read_metrics(watched["run"] / "metrics.jsonl") if "eval_loss" in r][-1]
    for what in ("source", "bucket", "band"):
        assert ev[f"eval_loss_by_{what}"], what
    band_tokens = ev["eval_tokens_by_band"]
    assert sum(ev["eval_loss_by_band"][k] * band_tokens[k] for k in band_tokens) / ev["eval_tokens"] == \
        pytest.approx(ev["eval_loss"], rel=1e-6)


def test_breakdowns_do_not_depend_on_ranks_or_micro_batches(data, watched) -> None:
    """Step 1 (same initial weights) split over 1 rank x 8 micro-batches, or 2 ranks x 1, gives the per-source
    and per-bucket losses of the watched run's 2 ranks x 2 (up to float rounding of the forward's shapes)."""
    root, ref = data["root"], _breakdowns(watched["run"], 1)
    for name, nproc, micro in (("one-rank", 1, 128), ("big-micro", 2, 512)):
        rec = tiny_recipe(root / name, [{"manifest": str(data["manifest"]), "steps": 6}],
                          batch={"tokens_per_step": 1024, "micro_batch_tokens": micro},
                          checkpoint={"every_steps": 2, "keep_last": 1})
        _ok(run_longmix("train", str(write_train_recipe(root / f"{name}.yaml", **rec)), "--nproc", str(nproc),
                        "--stop-at-step", "1"))
        got = _breakdowns(root / name, 1)
        for key in ("loss_by_source", "loss_by_bucket"):
            assert got[key] == pytest.approx(ref[key], rel=1e-5), (name, key)
        assert got["tokens_by_source"] == ref["tokens_by_source"]
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
