"""End-to-end training on 2 CPU ranks (gloo, ZeRO-3) with a tiny Llama on real tokenized text.

The launches are shared between assertions (each costs ~45 s, mostly imports):
  A  uninterrupted, 2 ranks, two phases (128 then 256 tokens per sequence)
  B  the same recipe stopped after step 3, then resumed on 2 ranks
  C  a copy of B's step-3 checkpoint resumed on 1 rank (universal checkpoint)
  D  continued from A's export with ABF (theta 10,000 -> 500,000) on 2 ranks
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cli import cli
from helpers_train import (
    REPO,
    make_manifest,
    make_tokenizer,
    rows_loss_sum,
    run_longmix,
    tiny_recipe,
    write_train_recipe,
)

from longmix.train.trainer import read_metrics

pytestmark = pytest.mark.slow
STEPS = (4, 2)  # per phase
TOTAL = sum(STEPS)


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-run")
    tok = make_tokenizer(root / "tok")
    m128 = make_manifest(root / "d128", tok, 128, 120_000)
    m256 = make_manifest(root / "d256", tok, 256, 120_000, skip=40)
    phases = [{"manifest": str(m128), "steps": STEPS[0]}, {"manifest": str(m256), "steps": STEPS[1]}]
    recipe = write_train_recipe(root / "tiny.yaml", **tiny_recipe(root / "unused", phases,
                                                                  checkpoint={"every_steps": 2, "keep_last": 2}))
    out = {"root": root, "recipe": recipe, "m256": m256, "tok": tok}
    for name in ("A", "B"):
        out[name] = root / name
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["A"])))
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["B"]), "--stop-at-step", "3"))
    out["C"] = root / "C"
    shutil.copytree(out["B"], out["C"])
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["B"])))
    _ok(run_longmix("train", str(recipe), "--nproc", "1", "-o", str(out["C"])))
    return out


def test_loss_falls_on_real_data(runs) -> None:
    m = _losses(runs["A"])
    assert sorted(m) == list(range(1, TOTAL + 1))
    assert m[STEPS[0]]["loss"] < m[1]["loss"] - 0.2
    assert [m[s]["seq_len"] for s in sorted(m)] == [128] * STEPS[0] + [256] * STEPS[1]
    assert all(r["tokens"] == 1024 for r in m.values())  # tokens per step held across phases
    evals = [r for r in read_metrics(runs["A"] / "metrics.jsonl") if "eval_loss" in r]
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]
    assert all(np.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0 for r in m.values())


def test_stopped_and_resumed_run_matches_exactly(runs) -> None:
    a, b = _losses(runs["A"]), _losses(runs["B"])
    assert sorted(b) == sorted(a)
    for s in a:  # bit-exact: same data order, same optimizer state, deterministic CPU kernels
        assert (b[s]["loss"], b[s]["grad_norm"], b[s]["lr"]) == (a[s]["loss"], a[s]["grad_norm"], a[s]["lr"]), s


@pytest.mark.parametrize("kill", ["after_step:3", "mid_save:4", "external", "sigterm"])
def test_sigkill_anywhere_resumes_from_the_newest_complete_checkpoint(runs, kill: str) -> None:
    """SIGKILL between checkpoints (after step 3; checkpoints every 2), half-way through writing one (step 4's
    DeepSpeed files written, its completion marker not), or from outside at a moment the test does not pick:
    the rerun resumes from the newest complete checkpoint, never a partial one, and every loss equals the
    uninterrupted run's. SIGTERM (Slurm, Kubernetes, `timeout`) sent to `longmix train` alone ends it as Ctrl-C
    does: the launcher passes it to every rank, says how to resume, exits 130, and no rank outlives it."""
    out = runs["root"] / f"kill-{kill.replace(':', '-')}"
    if kill == "sigterm":
        cmd = [sys.executable, "-m", "longmix.cli", "train", str(runs["recipe"]), "--nproc", "2", "-o", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            while proc.poll() is None and len(_losses_if_any(out)) < 3:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate()
            assert proc.returncode == 130, output
            assert "interrupted; finished tasks are kept: rerun the same command to resume" in output
            assert not _group_members(proc.pid), f"ranks outlived the run: {_group_members(proc.pid)}"
        finally:
            _kill_group(proc.pid)
    elif kill == "external":
        cmd = [sys.executable, "-m", "longmix.cli", "train", str(runs["recipe"]), "--nproc", "2", "-o", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(_losses_if_any(out)) < 3:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # every rank and the launcher, mid-step 4 or mid-save of step 4
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    else:
        first = run_longmix("train", str(runs["recipe"]), "--nproc", "2", "-o", str(out),
                            env={"LONGMIX_TEST_SIGKILL": kill})
        assert first.returncode != 0
    if kill == "mid_save:4":
        partial = out / "checkpoints" / "step_00000004"
        assert partial.is_dir() and not (partial / "trainer_state.json").exists()
    _ok(run_longmix("train", str(runs["recipe"]), "--nproc", "2", "-o", str(out)))
    a, k = _losses(runs["A"]), _losses(out)
    assert sorted(k) == sorted(a)
    for s in a:
        assert (k[s]["loss"], k[s]["grad_norm"]) == (a[s]["loss"], a[s]["grad_norm"]), (kill, s)


def _group_members(pgid: int) -> list[int]:
    """Live processes (zombies waiting to be reaped run nothing) of a process group."""
    import psutil

    def member(p: psutil.Process) -> bool:
        try:
            return os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE
        except (ProcessLookupError, psutil.NoSuchProcess):
            return False

    return [p.pid for p in psutil.process_iter() if member(p)]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _losses_if_any(run: Path) -> dict[int, dict]:
    try:
        return _losses(run)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_keep_last_k_and_complete_markers(runs) -> None:
    ckpts = sorted(p.name for p in (runs["A"] / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000004", "step_00000006"]
    state = json.loads((runs["A"] / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())
    assert state["step"] == TOTAL and state["world_size"] == 2 and state["loader"]["next_step"] == TOTAL


def test_resume_on_one_rank_from_two_rank_checkpoint(runs) -> None:
    a, c = _losses(runs["A"]), _losses(runs["C"])
    assert sorted(c) == list(range(1, TOTAL + 1))
    assert (runs["C"] / "checkpoints" / "step_00000003_universal").is_dir() or \
        json.loads((runs["C"] / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())["world_size"] == 1
    for s in range(4, TOTAL + 1):  # same global batches; only the reduction order differs
        assert c[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-6), s
        assert c[s]["lr"] == a[s]["lr"]


def test_export_reloads_with_identical_logits(runs, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longmix.formats.manifest import load_manifest
    from longmix.train.loader import PhaseData

    hf = tmp_path / "hf"
    _ok(cli("export", str(runs["A"]), "-o", str(hf)))
    assert (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").is_file()
    # other tools (lm-eval, vLLM) need the special tokens to know where sequences start and stop
    tok, entry = AutoTokenizer.from_pretrained(hf), load_manifest(runs["m256"]).tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (entry.bos_id, entry.eos_id, entry.pad_id)
    model = AutoModelForCausalLM.from_pretrained(hf, attn_implementation="sdpa").eval()
    model.config.use_cache = False
    # The trainer's final eval loss was computed on the ZeRO-3 model over phase 1's holdout rows.
    recipe_json = json.loads((runs["A"] / "recipe.json").read_text())
    from longmix.train.loader import Loader, plan_phases
    from longmix.train.recipe import TrainRecipe

    recipe = TrainRecipe.model_validate(recipe_json)
    phases = [PhaseData(Path(p.manifest), verify=False) for p in recipe.data.phases]
    loader = Loader(recipe, phases, plan_phases(recipe, phases, 1), 0, 1)
    _, ids, pos, tgt = loader.holdout(1, 1)
    total, count = rows_loss_sum(model, ids, pos, tgt)
    final_eval = [r for r in read_metrics(runs["A"] / "metrics.jsonl") if "eval_loss" in r][-1]
    assert count == final_eval["eval_tokens"]
    assert total / count == pytest.approx(final_eval["eval_loss"], rel=1e-6)
    # A second save/reload round trip is bit-identical (consolidated, no partition left behind).
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", attn_implementation="sdpa").eval()
    x = torch.from_numpy(ids[:1])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, again(input_ids=x).logits)


def test_export_without_the_runs_tokenizer_is_one_line(runs, tmp_path: Path) -> None:
    """The mix's tokenizer moved away: export refuses before writing anything, instead of an export no other
    tool can load."""
    from typer.testing import CliRunner

    from longmix.cli.app import app
    from longmix.core.errors import UserError

    tok = runs["m256"].parent / "tokenizer.json"
    moved = tmp_path / "tokenizer.json"
    shutil.move(tok, moved)
    try:
        res = CliRunner().invoke(app, ["export", str(runs["A"]), "-o", str(tmp_path / "hf")])
    finally:
        shutil.move(moved, tok)
    assert isinstance(res.exception, UserError) and "tokenizer this run trained with is gone" in str(res.exception)
    assert not (tmp_path / "hf").exists()


def test_abf_continuation_from_export(runs, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    _ok(cli("export", str(runs["A"]), "-o", str(hf)))
    phases = [{"manifest": str(runs["m256"]), "steps": 2}]
    rec = tiny_recipe(tmp_path / "D", phases, model={"path": str(hf), "config": None,
                                                     "rope": {"kind": "abf", "theta": 500000.0}},
                      checkpoint={"every_steps": 2, "keep_last": 1})
    rec["model"].pop("config")
    _ok(run_longmix("train", str(write_train_recipe(tmp_path / "abf.yaml", **rec)), "--nproc", "2"))
    cfg = json.loads((tmp_path / "D" / "checkpoints" / "step_00000002" / "hf_config" / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_theta"] == 500000.0
    d = _losses(tmp_path / "D")
    assert sorted(d) == [1, 2] and all(np.isfinite(r["loss"]) for r in d.values())
    # Continuing from the trained weights: far below the ln(vocab) of a fresh model.
    assert d[1]["loss"] < np.log(512) - 0.3


def _two_node_train(recipe: Path, out: Path, *extra: str) -> None:
    """`longmix train` as two nodes of one rank each: two torchrun agents meeting at a c10d rendezvous on
    127.0.0.1 (what two machines run, each with its own --nnodes 2 command line)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", out.name,
           "--local-addr", "127.0.0.1", "-m", "longmix.cli", "train", str(recipe), "-o", str(out), *extra]
    nodes = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    for n, log in zip(nodes, logs, strict=True):
        assert n.returncode == 0, log[-6000:]


def test_two_node_launch_matches_one_node_and_resumes_exactly(runs) -> None:
    """Two nodes x one rank give the losses of one node x two ranks, and a two-node run stopped after step 3
    resumes (again as two nodes) with the data position exact."""
    out = runs["root"] / "two-node"
    _two_node_train(runs["recipe"], out, "--stop-at-step", "3")
    state = json.loads((out / "checkpoints" / "step_00000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    _two_node_train(runs["recipe"], out)
    a, n = _losses(runs["A"]), _losses(out)
    assert sorted(n) == sorted(a)
    for s in a:
        assert (n[s]["loss"], n[s]["grad_norm"], n[s]["lr"]) == (a[s]["loss"], a[s]["grad_norm"], a[s]["lr"]), s


def test_deepspeed_launcher_with_hostfile_as_two_nodes(runs) -> None:
    """The DeepSpeed launcher line of docs/training.md: a two-host hostfile, each node started on its own
    (--no_ssh, as on machines without passwordless ssh), gives the same losses as one node x two ranks."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = runs["root"] / "deepspeed-launcher"
    hosts = runs["root"] / "hostfile"
    hosts.write_text("node-a slots=1\nnode-b slots=1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    nodes = [subprocess.Popen([sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hosts),
                               "--no_ssh", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                               "--master_port", str(port), "--no_local_rank", "--module", "longmix.cli", "train",
                               str(runs["recipe"]), "-o", str(out)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    for n in nodes:
        log = n.communicate(timeout=600)[0]
        assert n.returncode == 0, log[-6000:]
    a, d = _losses(runs["A"]), _losses(out)
    assert sorted(d) == sorted(a)
    for s in a:
        assert (d[s]["loss"], d[s]["grad_norm"]) == (a[s]["loss"], a[s]["grad_norm"]), s
