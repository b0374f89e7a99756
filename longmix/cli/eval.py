"""`longmix eval ...`: one command per registered evaluation (longmix/eval/registry.py)."""

from __future__ import annotations

import typer

from longmix.eval.registry import EVALUATIONS

eval_app = typer.Typer(no_args_is_help=True, help="Long-context evaluation: loss vs context, probes, RoPE.")
for evaluation in EVALUATIONS:
    eval_app.command(evaluation.command)(evaluation.cli)
