"""Checkpoints: save, find the newest complete one, keep the last k, convert for a new world size.

Layout: ``<run>/checkpoints/step_00000040/`` holds DeepSpeed's files, ``hf_config/`` (the model's HF
config as trained, which export needs) and ``trainer_state.json``, written last by rank 0 after every
rank finished saving: its presence marks the checkpoint complete, so a crash mid-save is never resumed.
ZeRO-3 checkpoints are tied to the world size that wrote them; on a different world size the newest
one is converted once to DeepSpeed's universal format (``step_..._universal``) and loaded from there.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch.distributed as dist

from longmix.core.atomic import atomic_path
from longmix.core.errors import UserError
from longmix.train.faults import crash_point

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_TAG = re.compile(r"^step_(\d{8})$")


# The only non-tensor objects DeepSpeed's ZeRO checkpoints hold (besides containers and numbers), allowed
# through torch's weights-only unpickler; a planted object of any other class is refused, never constructed.
SAFE_GLOBALS = ("deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.runtime.fp16.loss_scaler.LossScaler",
                "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler")


@contextmanager
def safe_loading(where: Path, trust_pickles: bool = False) -> Iterator[None]:
    """Every ``torch.load`` inside (DeepSpeed's resume, universal conversion and zero_to_fp32 all call it with
    ``weights_only=False``) runs the weights-only unpickler with ``SAFE_GLOBALS`` allowed; anything else in a
    checkpoint is one line naming it, unless the user trusts the checkpoint's pickles."""
    import importlib
    import pickle

    import torch

    if trust_pickles:
        yield
        return
    allowed = []
    for name in SAFE_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # another DeepSpeed version: that class is simply not allowed
            continue
    original = torch.load

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = weights_only_load
    try:
        with torch.serialization.safe_globals(allowed):
            yield
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint {where} holds {what}, which longmix does not unpickle (a checkpoint from "
                        "elsewhere, or tampered with); if you wrote it yourself, set checkpoint.trust_pickles: true "
                        "(longmix export: --trust-pickles)") from None
    finally:
        torch.load = original


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _TAG.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text())


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file of a checkpoint but its state file, by path relative to it: what the state records."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != STATE_FILE}


def damage(folder: Path) -> str | None:
    """Why a complete checkpoint cannot be resumed (its state unreadable, a recorded file missing or cut
    short), or None. Checkpoints written before sizes were recorded are taken as they are."""
    try:
        state = read_state(folder)
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} is unreadable ({type(exc).__name__})"
    for rel, size in (state.get("files") or {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} is {path.stat().st_size:,} bytes, {size:,} when written"
    return None


def intact_checkpoints(root: Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """(complete checkpoints that are intact, oldest first; one line per damaged one that was passed over)."""
    good, bad = [], []
    for step, folder in complete_checkpoints(root):
        why = damage(folder)
        if why is None:
            good.append((step, folder))
        else:
            bad.append(f"checkpoint {folder.name} is damaged ({why})")
    return good, bad


@dataclass(frozen=True)
class Resume:
    step: int
    folder: Path  # the original checkpoint folder
    load_tag: str  # tag to load: the folder's name, or its universal conversion
    universal: bool
    state: dict[str, Any]
    passed_over: tuple[str, ...] = ()  # damaged newer checkpoints, one line each


def find_resume(root: Path, world: int) -> Resume | None:
    """The newest complete and intact checkpoint, and whether loading it needs the universal format; damaged
    newer ones (a file cut short by a full disk or a copy) are passed over and named."""
    found, damaged = intact_checkpoints(root)
    if not found:
        if damaged:
            raise UserError(f"no checkpoint under {root} can be resumed: {'; '.join(damaged)}; delete the damaged "
                            "ones to start over")
        return None
    step, folder = found[-1]
    state = read_state(folder)
    universal = int(state["world_size"]) != world
    tag = folder.name + ("_universal" if universal else "")
    return Resume(step, folder, tag, universal, state, tuple(d for d in damaged if _newer(d, folder.name)))


def _newer(line: str, name: str) -> bool:
    return line.split()[1] > name  # tags are zero-padded: name order is step order


def convert_to_universal(resume: Resume, rank: int, trust_pickles: bool = False) -> None:
    """Rank 0 converts the checkpoint once (kept next to it for later resumes); everyone waits."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    out = resume.folder.parent / resume.load_tag
    error: list[tuple[str, str] | None] = [None]
    if rank == 0 and not (out / "done").is_file():
        log.info("checkpoint %s was written by %s ranks: converting to a universal checkpoint",
                 resume.folder.name, resume.state["world_size"])
        shutil.rmtree(out, ignore_errors=True)
        args = SimpleNamespace(input_folder=str(resume.folder), output_folder=str(out), num_extract_workers=1,
                               num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=False)
        try:
            with safe_loading(resume.folder, trust_pickles):
                ds_to_universal(args)
            (out / "done").write_text("")
        except UserError as exc:  # a checkpoint refused by safe_loading: the user's to fix
            error[0] = ("user", str(exc))
        except Exception as exc:  # reported on every rank below, so all of them stop together
            error[0] = ("crash", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        kind, message = error[0]
        if kind == "user":
            raise UserError(message)
        raise RuntimeError(f"universal checkpoint conversion of {resume.folder} failed: {message}")


def save(engine: Any, root: Path, step: int, state: dict[str, Any], hf_config: Any, keep_last: int,
         first_bad_step: int | None = None) -> Path:
    """Save on every rank; rank 0 writes the config and the state (last), then prunes old checkpoints (never the
    newest one from before the run's first non-finite step)."""
    from deepspeed.checkpoint import UNIVERSAL_CHECKPOINT_INFO

    tag = tag_for(step)
    # UNIVERSAL_CHECKPOINT_INFO in the client state is what lets ds_to_universal convert it later.
    engine.save_checkpoint(str(root), tag=tag, client_state={UNIVERSAL_CHECKPOINT_INFO: {}})
    dist.barrier()
    crash_point("mid_save", step)  # DeepSpeed's files are written, the completion marker is not
    folder = root / tag
    if dist.get_rank() == 0:
        hf_config.save_pretrained(folder / "hf_config")
        state = {**state, "files": file_sizes(folder)}  # a file cut short later is found before loading it
        with atomic_path(folder / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(state, indent=2) + "\n")
        prune(root, keep_last, first_bad_step)
    dist.barrier()
    return folder


def last_before(root: Path, step: int | None) -> tuple[int, Path] | None:
    """The newest complete checkpoint taken before ``step`` (the run's first bad step), if any."""
    if step is None:
        return None
    return next(((s, f) for s, f in reversed(complete_checkpoints(root)) if s < step), None)


def prune(root: Path, keep_last: int, first_bad_step: int | None = None) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (and their universal copies), keeping the
    last one taken before the first non-finite step: it may be the only good weights the run has."""
    found = complete_checkpoints(root)
    keep = last_before(root, first_bad_step)
    for step_folder in found[:-keep_last]:
        if step_folder == keep:
            continue
        _, folder = step_folder
        shutil.rmtree(folder.parent / (folder.name + "_universal"), ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
