"""The evaluation registry: `longmix eval` offers exactly the registered evaluations, and a suite's `eval:`
sections are exactly the registered suite evaluations, each validated by its evaluation's own settings."""

from __future__ import annotations

from longmix.ablate.suite import EvalSpec
from longmix.cli.eval import eval_app
from longmix.eval.evaluations.context_loss import ContextLossSpec
from longmix.eval.registry import EVALUATIONS, suite_evaluations


def test_every_registered_evaluation_is_a_command_once() -> None:
    commands = [c.name for c in eval_app.registered_commands]
    assert commands == [e.command for e in EVALUATIONS]
    assert len(set(commands)) == len(commands)
    assert {"context-loss", "probes", "longqa", "context-gain", "dependency-loss", "ruler", "rope",
            "harness"} == set(commands)


def test_suite_sections_are_the_registered_suite_evaluations() -> None:
    sections = {k: f.annotation for k, f in EvalSpec.model_fields.items() if k not in ContextLossSpec.model_fields}
    keyed = {e.key: e.spec for e in suite_evaluations() if e.key is not None}
    assert set(sections) == set(keyed)
    for key, spec in keyed.items():
        assert sections[key] == spec | None
    base = [e for e in suite_evaluations() if e.key is None]
    assert [e.command for e in base] == ["context-loss"] and issubclass(EvalSpec, base[0].spec)


def test_folder_evaluations_run_after_the_loaded_model_is_done() -> None:
    order = [e.on_folder for e in suite_evaluations()]
    assert order == sorted(order)  # False (loaded model) before True (checkpoint folder)
    assert [e.key for e in suite_evaluations()] == [None, "ruler", "probes", "longqa", "dependency", "context_gain",
                                                    "harness"]
