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

        preflight(rec, nproc, str(recipe))
        extra = (["--output", overrides["output"]] if output else []) + \
            (["--stop-at-step", str(stop_at_step)] if stop_at_step else [])
        from longmix.core.folder_lock import folder_lock

        with folder_lock(rec.output_dir, "training"):  # under torchrun/Slurm/deepspeed the launcher's job
            rc = launch(recipe, nproc, extra)
        if rc:
            console.print(f"[red]error:[/red] training exited with code {rc} (see the rank logs above)")
            sys.exit(rc)
        return
    from longmix.train.trainer import train as run_train

    run_train(rec, stop_at_step)


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
