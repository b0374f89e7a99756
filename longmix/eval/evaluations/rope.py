"""Attention-score decay vs distance for RoPE / ABF / PI (`longmix eval rope`): analytic, no checkpoint, so
suites do not run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.eval.evaluation import Evaluation
from longmix.eval.evaluations.options import console, out_console


def cli(
    base: Annotated[list[float], typer.Option("--base", help="RoPE bases: the first is the original, the rest ABF")],
    pi_scale: Annotated[list[float] | None, typer.Option("--pi-scale", help="PI factors of the first base")] = None,
    head_dim: Annotated[int, typer.Option(min=2, help="attention head dimension")] = 128,
    max_distance: Annotated[int, typer.Option(min=2, help="longest relative distance to plot")] = 32768,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for rope.json/.png")] = Path("eval"),
) -> None:
    """Attention-score decay vs distance for RoPE / ABF / PI (the paper's Fig. 4) and their granularity."""
    from longmix.eval.plots import plot_rope
    from longmix.eval.rope_analysis import analyse

    if head_dim % 2:
        raise UserError(f"--head-dim must be even, got {head_dim}")
    if any(b <= 1 for b in base) or any(s <= 0 for s in pi_scale or []):
        raise UserError("--base must be > 1 and --pi-scale > 0")
    result = analyse(list(base), list(pi_scale or []), head_dim, max_distance)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "rope.json", result)
    png = plot_rope(result, output / "rope.png")
    dist = result["distances"]
    marks = [d for d in (1, 256, 1024, 4096, 16384, 32768) if d <= max_distance]
    table = Table(title=f"RoPE variants, head dim {head_dim}")
    for col in ("variant", "granularity (rad/token)", "vs RoPE", "max wavelength",
                *[f"bound @ {d}" for d in marks]):
        table.add_column(col)
    for v in result["variants"]:
        idx = [dist.index(min(dist, key=lambda x, d=d: abs(x - d))) for d in marks]
        table.add_row(v["name"], f"{v['granularity']:.4f}", f"{v['granularity_vs_rope']:.3f}",
                      f"{v['max_wavelength']:,.0f}", *[f"{v['decay_bound'][i]:.2f}" for i in idx])
    out_console.print(table)
    console.print(f"wrote {output / 'rope.json'} and {png}")


EVALUATION = Evaluation("rope", cli)
