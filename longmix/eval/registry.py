"""Every evaluation, one registration line each. `longmix eval` offers them as commands in this order, and an
ablation suite runs those its `eval:` section names in this order (results.json keeps it): context-loss
first (every suite measures it), then the task sections, then those that load the checkpoint their own way."""

from __future__ import annotations

from longmix.eval.evaluation import Evaluation
from longmix.eval.evaluations import (
    context_gain,
    context_loss,
    dependency_loss,
    harness,
    longqa,
    probes,
    rope,
    ruler,
)

EVALUATIONS: tuple[Evaluation, ...] = (
    context_loss.EVALUATION,
    ruler.EVALUATION,
    probes.EVALUATION,
    longqa.EVALUATION,
    dependency_loss.EVALUATION,
    context_gain.EVALUATION,
    rope.EVALUATION,
    harness.EVALUATION,
)


def suite_evaluations() -> list[Evaluation]:
    """The evaluations a suite can run (those with a ``run``), model-based ones before folder-based ones: the
    loaded model is freed before an evaluation loads the checkpoint again its own way."""
    runnable = [e for e in EVALUATIONS if e.run is not None]
    return [e for e in runnable if not e.on_folder] + [e for e in runnable if e.on_folder]
