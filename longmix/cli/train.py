"""`longmix train` and `longmix export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longmix.core.errors import UserError

console = Console(stderr=True)


def train(
    recipe: Annotated[Path, typer.Argument(help="training recipe (YAML), e.g. train/demo-short.yaml")],
    nproc: Annotated[int, typer.Option(min=1, help="local processes to launch (ignored under a launcher)")] = 1,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="override the recipe's run folder")] = None,
    stop_at_step: Annotated[int | None, typer.Option(min=1, help="checkpoint and stop after this step "
                                                     "(the schedule still spans the whole run)")] = None,
) -> None:
    """Continual pretraining with DeepSpeed ZeRO-3 from packed-shard manifests; resumes from the newest checkpoint."""
    from longmix.train.launch import launch, under_launcher
    from longmix.train.recipe import load_train_recipe

    overrides = {"output": str(output.resolve())} if output else {}
    rec = load_train_recipe(recipe, overrides)  # validate before spawning ranks: one clear error, not N
    if not under_launcher():
        from longmix.train.preflight import preflight
        from longmix.train.run_plan import plan_lines, plot_schedule

        plan = preflight(rec, nproc, str(recipe))
        for line in plan_lines(plan):
            console.print(line, highlight=False, markup=False)
        extra = (["--output", overrides["output"]] if output else []) + \
            (["--stop-at-step", str(stop_at_step)] if stop_at_step else [])
        from longmix.core.folder_lock import folder_lock

        stopped = rec.output_dir / "stopped.txt"  # rank 0's one line when the run stopped itself (train/guard.py)
        with folder_lock(rec.output_dir, "training"):  # under torchrun/Slurm/deepspeed the launcher's job
            stopped.unlink(missing_ok=True)
            plot_schedule(plan, rec, rec.output_dir / "lr_schedule.png")
            rc = launch(recipe, nproc, extra)
        if stopped.is_file():  # the run stopped itself (the ranks ended cleanly to leave this one line)
            console.print(f"[red]error:[/red] {stopped.read_text().strip()}", highlight=False, soft_wrap=True)
            sys.exit(3)
        if rc:
            console.print(f"[red]error:[/red] training exited with code {rc} (see the rank logs above)")
            sys.exit(rc)
        return
    from longmix.train.trainer import end_rank
    from longmix.train.trainer import train as run_train

    run_train(rec, stop_at_step)
    end_rank()


def export(
    checkpoint: Annotated[Path, typer.Argument(help="run folder, its checkpoints/ folder, or a step_* folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HF checkpoint folder to write")],
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16")] = "float32",
    trust_pickles: Annotated[bool, typer.Option("--trust-pickles", help="unpickle checkpoint objects beyond "
                                                "DeepSpeed's known ones (only for checkpoints you wrote)")] = False,
) -> None:
    """Write a consolidated safetensors HF checkpoint (from_pretrained-ready) from a training checkpoint."""
    from longmix.train.export import export as run_export

    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16, not {dtype!r}")
    folder = run_export(checkpoint, output, dtype, trust_pickles)
    console.print(f"exported {folder} to {output}")


def report(
    run: Annotated[Path, typer.Argument(help="training run folder (the recipe's output:)")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for the PNGs and report.md "
                                                "(default: <run>/report)")] = None,
) -> None:
    """A training run's loss, learning rate, throughput and gradient-norm curves as PNGs plus a markdown summary,
    from metrics.jsonl alone."""
    from longmix.train.run_report import write_report

    console.print(f"wrote {write_report(run, output)}")
