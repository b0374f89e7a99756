"""Experiment trackers (TensorBoard, W&B, MLflow), each through its own library, on rank 0 only.

Names and behaviour follow HF Trainer's ``report_to``. A resumed run continues the same tracker run: the run
ids live in ``<run>/trackers.json``; TensorBoard purges the steps after the resumed checkpoint (its own
``purge_step``), MLflow is not sent steps it already holds, and W&B is sent the steps after the checkpoint and
drops those it holds (its steps only grow). Resume is bit-exact, so a step the tracker already has carries the
same loss the replay computes: skipping it loses nothing and no step appears twice.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError

log = logging.getLogger(__name__)

# report_to name -> (module that must import, pyproject extra that brings it)
KNOWN = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
STATE_FILE = "trackers.json"


def check_installed(names: list[str]) -> None:
    """Before launch: every named tracker's library imports, or one line naming the extra to install."""
    for name in names:
        module, extra = KNOWN[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"logging.report_to names {name}, but {module} is not installed: "
                            f"pip install 'longmix[{extra}]'")


def _numeric(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers, a breakdown's ({"loss_by_source": {"code": 2.3}}) as "loss_by_source/code"."""
    out = {}
    for key, value in record.items():
        for name, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            if isinstance(v, int | float) and not isinstance(v, bool) and key not in ("step", "total_steps"):
                out[key if name is None else f"{key}/{name}"] = float(v)
    return out


def git_revision() -> str | None:
    """The longmix checkout's commit, when it is one (a wheel install has none)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int, state: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops events at or after it from the earlier files, so the steps a killed run
        # logged after its last checkpoint are replaced, not doubled.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None,
                                    flush_secs=10)
        if not resume_step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def text(self, tag: str, message: str, step: int) -> None:
        self.writer.add_text(tag, message, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int, state: dict[str, Any],
                 project: str) -> None:
        import wandb

        # No login (no key in the environment or ~/.netrc): an offline run that `wandb sync` uploads later.
        offline = not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY") and \
            not _netrc_has("api.wandb.ai")
        state.setdefault("wandb_run_id", secrets.token_hex(4))  # W&B's own ids are 8 lowercase characters
        self.run = wandb.init(project=project, name=config["recipe"]["name"], id=state["wandb_run_id"],
                              resume="allow", dir=str(run_dir), config=config,
                              mode="offline" if offline else None,
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                                      x_transaction_log_flush_interval=1.0))
        # W&B buffers in its own service process, so what a killed process logged after its last checkpoint may
        # or may not have reached W&B: the steps after the checkpoint are sent again, and W&B, which keeps
        # steps only growing, drops any it already holds.
        self.held = resume_step

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        if step > self.held:
            self.run.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    def text(self, tag: str, message: str, step: int) -> None:
        if step > self.held:
            self.run.log({tag: message}, step=step)

    def flush(self) -> None:
        pass  # W&B's service process writes as it receives

    def close(self) -> None:
        self.run.finish()


def _netrc_has(host: str) -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class _MLflow:
    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int, state: dict[str, Any],
                 tracking_uri: str | None, experiment: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        # MLflow 3's default store: a SQLite file (its file store is in maintenance mode and refused by default)
        self.client = MlflowClient(tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
        if "mlflow_run_id" not in state:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            run = self.client.create_run(exp_id, run_name=config["recipe"]["name"])
            state["mlflow_run_id"] = run.info.run_id
            for key, value in _flat(config).items():
                self.client.log_param(run.info.run_id, key[:250], str(value)[:6000])
        self.run_id = state["mlflow_run_id"]
        history = self.client.get_metric_history(self.run_id, "train/loss")
        self.held = max((m.step for m in history), default=0)  # the steps this run already holds
        self._mlflow = mlflow

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        if step <= self.held:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in values.items()])

    def text(self, tag: str, message: str, step: int) -> None:
        self.client.set_tag(self.run_id, f"{tag}.step_{step}", message[:5000])

    def flush(self) -> None:
        pass  # every MLflow call is written when it returns

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


class Trackers:
    """The trackers a recipe names; does nothing when it names none or on ranks other than 0."""

    def __init__(self, names: list[str], run_dir: Path, config: dict[str, Any], resume_step: int,
                 settings: Any, enabled: bool) -> None:
        self.open: list[Any] = []
        self.state_path = run_dir / STATE_FILE
        if not (enabled and names):
            return
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        for name in names:
            if name == "tensorboard":
                self.open.append(_TensorBoard(run_dir, config, resume_step, self.state))
            elif name == "wandb":
                self.open.append(_WandB(run_dir, config, resume_step, self.state, settings.wandb_project))
            elif name == "mlflow":
                self.open.append(_MLflow(run_dir, config, resume_step, self.state, settings.mlflow_tracking_uri,
                                         settings.mlflow_experiment))
        self._save_state()

    def _save_state(self) -> None:
        from longmix.core.atomic import write_json

        write_json(self.state_path, self.state)

    def log(self, record: dict[str, Any]) -> None:
        """A metrics.jsonl record: a training step, an eval, or a warning."""
        if not self.open:
            return
        step = int(record["step"])
        if "warning" in record or "stopped" in record:
            tag, message = ("stopped", record["stopped"]) if "stopped" in record else \
                (f"warning/{record['warning']}", record["detail"])
            for t in self.open:
                t.text(tag, message, step)
            return
        prefix = "eval" if "eval_loss" in record else "train"
        values = _numeric(record)
        if prefix == "eval":
            values = {k.removeprefix("eval_"): v for k, v in values.items() if k != "phase"}
        for t in self.open:
            t.log(prefix, values, step)
        self._save_state()

    def flush(self) -> None:
        for t in self.open:
            t.flush()

    def close(self) -> None:
        for t in self.open:
            t.close()
        self.open = []
