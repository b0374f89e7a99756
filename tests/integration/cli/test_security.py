"""Hostile inputs: a manifest that names files outside its folder, a manifest that names a secret as its
tokenizer, and a model folder that plants its own code. Each is refused in one line and nothing planted runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers_cli import cli, one_line_error
from helpers_train import TINY_LLAMA, make_manifest, make_tokenizer

from longmix.core.errors import UserError
from longmix.formats.manifest import ManifestError, load_manifest, verify_manifest

EVIL_CODE = '''
from pathlib import Path
Path("{marker}").write_text("planted code ran")
from transformers import LlamaForCausalLM


class EvilForCausalLM(LlamaForCausalLM):
    pass
'''


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sec")
    return make_manifest(root / "m", make_tokenizer(root / "tok"), 64, 8_000)


def _rewrite(manifest: Path, folder: Path, change) -> Path:
    shutil.copytree(manifest.parent, folder)
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder / "manifest.json"


@pytest.mark.parametrize("bad", ["../../elsewhere/x.arrow", "/etc/passwd", "sub/../../x.arrow"])
def test_manifest_shards_stay_inside_its_folder(manifest: Path, tmp_path: Path, bad: str) -> None:
    def point_outside(data):
        data["shards"][0]["path"] = bad

    path = _rewrite(manifest, tmp_path / "m", point_outside)
    with pytest.raises(ManifestError, match="leaves the manifest's folder"):
        load_manifest(path)
    one_line_error(cli("verify", path), "leaves the manifest's folder")


@pytest.mark.parametrize("bad", ["/home/user/.aws/credentials", "../tok/tokenizer.json"])
def test_manifest_tokenizer_stays_inside_its_folder(manifest: Path, tmp_path: Path, bad: str) -> None:
    def point_outside(data):
        data["tokenizer"]["path"] = bad

    path = _rewrite(manifest, tmp_path / "m", point_outside)
    one_line_error(cli("verify", path), "tokenizer path", "leaves the manifest's folder")


def test_a_swapped_tokenizer_is_refused_before_use(manifest: Path, tmp_path: Path) -> None:
    from longmix.formats.manifest import check_shard_layout

    path = _rewrite(manifest, tmp_path / "m", lambda data: None)
    assert json.loads(path.read_text())["tokenizer"]["path"] == "tokenizer.json"  # pack copied it in
    (path.parent / "tokenizer.json").write_text('{"planted": true}')
    with pytest.raises(ManifestError, match="tokenizer tokenizer.json: sha256 mismatch"):
        check_shard_layout(path, load_manifest(path))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        verify_manifest(path)


def test_manifest_without_shards_does_not_verify(manifest: Path, tmp_path: Path) -> None:
    def empty(data):
        data["shards"] = []
        data["totals"].update(tokens=0, sequences=0, padding=0)

    with pytest.raises(ManifestError, match="lists no shards"):
        verify_manifest(_rewrite(manifest, tmp_path / "m", empty))


def test_export_copies_only_the_tokenizer_trained_with(tmp_path: Path) -> None:
    from longmix.formats.packed_shards import sha256_file
    from longmix.train.export import check_tokenizer_file

    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = hunter2\n")
    # a hostile manifest records the secret's own hash: the hash matches, but it is no tokenizer
    with pytest.raises(UserError, match="is not a tokenizer.json"):
        check_tokenizer_file(secret, sha256_file(secret))
    tok = make_tokenizer(tmp_path / "tok")
    check_tokenizer_file(tok, sha256_file(tok))
    with pytest.raises(UserError, match="not the one this run trained with"):
        check_tokenizer_file(tok, "0" * 64)


@pytest.fixture()
def evil(tmp_path: Path) -> Path:
    """A model folder whose config maps AutoModelForCausalLM to a planted module that writes a marker."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path / "evil"
    fields = dict(TINY_LLAMA)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields)).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text(EVIL_CODE.format(marker=tmp_path / "MARKER"))
    shutil.copy(make_tokenizer(tmp_path / "tok"), folder / "tokenizer.json")
    return folder


def test_planted_model_code_never_runs_unasked(evil: Path, tmp_path: Path) -> None:
    from longmix.train.model import load_config
    from longmix.train.recipe import TrainRecipe

    # `yes | longmix model import EVIL`: the answer on stdin changes nothing, nothing asks
    one_line_error(cli("model", "import", evil, "-o", tmp_path / "out", input="y\n" * 5),
                   "ships its own model code", "--trust-remote-code")
    one_line_error(cli("eval", "context-loss", evil, "--data", evil / "config.json", "-o", tmp_path / "eval"),
                   "--trust-remote-code")
    recipe = TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json", "model": {"path": str(evil)},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 128, "micro_batch_tokens": 128}})
    with pytest.raises(UserError, match="model.trust_remote_code: true"):
        load_config(recipe.model, recipe)
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "out").exists()


def test_trusted_model_code_runs_when_asked(evil: Path, tmp_path: Path) -> None:
    res = cli("model", "import", evil, "-o", tmp_path / "out", "--trust-remote-code")
    assert res.returncode == 0, res.stderr
    assert "EvilForCausalLM" in res.stdout + res.stderr and (tmp_path / "MARKER").exists()  # its code ran, as asked


class _Payload:
    """What a planted pickle does when it is loaded: write a marker (a real attack would run a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "planted pickle ran"))


def test_checkpoint_pickles_load_weights_only(tmp_path: Path) -> None:
    """Resume, universal conversion and export load checkpoints through DeepSpeed, which calls
    torch.load(weights_only=False); inside safe_loading that is the weights-only unpickler with DeepSpeed's
    own classes allowed, so a planted object is refused in one line and never constructed."""
    import torch
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from longmix.train.checkpoint import safe_loading

    legit = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(1.0), "state": torch.ones(3)}, legit)
    planted = tmp_path / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    torch.save({"state": torch.ones(3), "x": _Payload(tmp_path / "MARKER")}, planted)
    with safe_loading(tmp_path):
        assert torch.load(legit, weights_only=False)["zero_stage"] == ZeroStageEnum.weights
    with pytest.raises(UserError, match="checkpoint.trust_pickles: true"), safe_loading(tmp_path):
        torch.load(planted, weights_only=False)
    assert not (tmp_path / "MARKER").exists()
    assert torch.load is not None and "weights_only_load" not in torch.load.__name__  # restored after
    with safe_loading(tmp_path, trust_pickles=True):  # the explicit opt-in unpickles in full
        torch.load(planted, weights_only=False)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_inputs_that_never_end_are_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO named as an input (alone or matched by a glob), or /dev/zero, would hang the build forever."""
    import os

    from conftest import write_recipe

    if kind == "fifo":
        os.mkfifo(tmp_path / "in.jsonl")
        pattern = str(tmp_path / "*.jsonl")
    else:
        pattern = "/dev/zero"
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "x", "paths": [pattern]}], {})
    one_line_error(cli("check", recipe), "is a FIFO" if kind == "fifo" else "is a character device")


def test_a_damaged_checkpoint_is_passed_over(tmp_path: Path) -> None:
    """A checkpoint whose files were cut short after it was written (a full disk, a partial copy) is named and
    passed over for the newest intact one, before anything is unpickled."""
    from longmix.train import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    for step in (2, 4):
        folder = root / ckpt.tag_for(step)
        folder.mkdir(parents=True)
        (folder / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x" * 1000)
        state = {"step": step, "world_size": 2, "files": ckpt.file_sizes(folder)}
        (folder / ckpt.STATE_FILE).write_text(json.dumps(state))
    newest = root / ckpt.tag_for(4) / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    newest.write_bytes(b"x" * 10)  # cut short
    resume = ckpt.find_resume(root, 2)
    assert resume is not None and resume.step == 2
    assert resume.passed_over == ("checkpoint step_00000004 is damaged (zero_pp_rank_0_mp_rank_00_model_states.pt "
                                  "is 10 bytes, 1,000 when written)",)
    (root / ckpt.tag_for(2) / ckpt.STATE_FILE).write_text('{"step": 2, "wor')  # and the older state cut short
    with pytest.raises(UserError, match="no checkpoint under .* can be resumed"):
        ckpt.find_resume(root, 2)


def test_a_mismatched_shard_is_refused_before_launch(manifest: Path, tmp_path: Path) -> None:
    """A manifest whose shard has another sequence length passes load_manifest; `longmix check` and the
    training preflight read the shards' footers and refuse it in one line before any rank starts."""
    from helpers_train import make_tokenizer as _tok
    from helpers_train import tiny_recipe, write_train_recipe

    folder = tmp_path / "m"
    shutil.copytree(manifest.parent, folder)
    other = make_manifest(tmp_path / "other", _tok(tmp_path / "tok"), 128, 8_000)
    first = json.loads((folder / "manifest.json").read_text())["shards"][0]["path"]
    shutil.copy(other.parent / json.loads(other.read_text())["shards"][0]["path"], folder / first)
    rec = tiny_recipe(tmp_path / "out", [{"manifest": str(folder / "manifest.json"), "steps": 1}],
                      batch={"tokens_per_step": 128, "micro_batch_tokens": 64})
    one_line_error(cli("check", write_train_recipe(tmp_path / "t.yaml", **rec), "--nproc", "2"),
                   "not a packed shard of seq_len 64")
