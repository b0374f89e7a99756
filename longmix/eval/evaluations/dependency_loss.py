"""Loss on planted long-range dependencies by distance (`longmix eval dependency-loss`; a suite's
`eval.dependency`, at eval.max_len)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import Field
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.recipe_io import Strict
from longmix.eval.evaluation import Evaluation, SuiteRun, each_checkpoint
from longmix.eval.evaluations.options import AttnImpl, Device, Dtype, TrustCode, console, out_console


class DependencySpec(Strict):
    """Loss on planted long-range dependencies by distance (longmix eval dependency-loss)."""

    data: list[str] = Field(min_length=1, description="documents written by `longmix demo-longdep`")
    max_docs: int = Field(24, ge=1)
    skip_repeat: int = Field(2, ge=0, description="unscored first tokens of a copied passage")


def run(loaded: Any, d: DependencySpec, ctx: SuiteRun) -> dict[str, Any]:
    from longmix.eval.dependency_loss import dependency_loss

    return dependency_loss(loaded, [ctx.resolve(p) for p in d.data], ctx.max_len, d.max_docs, d.skip_repeat,
                           ctx.name, ctx.progress, first=ctx.draw * d.max_docs)


def cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="HF checkpoint folders; several = comparison overlay")],
    data: Annotated[list[Path], typer.Option("--data", help="documents from `longmix demo-longdep` (repeatable)")],
    max_len: Annotated[int, typer.Option(min=16, help="documents are cut here; later pairs are not scored")] = 2048,
    max_docs: Annotated[int, typer.Option(min=1)] = 24,
    skip_repeat: Annotated[int, typer.Option(min=0, help="unscored first tokens of a copied passage")] = 2,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (default: the checkpoint's)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for dependency_loss.json/.png")] = Path("eval"),
) -> None:
    """Loss on planted long-range dependencies (copied passages, facts used late) by their distance."""
    from longmix.eval.dependency_loss import dependency_loss
    from longmix.eval.plots import plot_dependency_gap

    results = each_checkpoint(
        checkpoints, lambda loaded, name: dependency_loss(loaded, data, max_len, max_docs, skip_repeat, name),
        tokenizer=tokenizer, device=device, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "dependency_loss.json", {"max_len": max_len, "results": results})
    distances = [r["distance"] for r in results[0]["by_distance"]]
    png = plot_dependency_gap(distances, {r["name"]: [x["target_loss"] - x["source_loss"] for x in r["by_distance"]]
                                          for r in results}, output / "dependency_loss.png")
    table = Table(title=f"loss on dependency targets, and at their sources, by distance (nats, "
                        f"{results[0]['n_docs']} docs)")
    table.add_column("checkpoint")
    for d in distances:
        table.add_column(f"d={d}")
    for r in results:
        table.add_row(r["name"], *[f"{x['target_loss']:.2f}" for x in r["by_distance"]])
        table.add_row("  at source", *[f"{x['source_loss']:.2f}" for x in r["by_distance"]])
    out_console.print(table)
    console.print(f"wrote {output / 'dependency_loss.json'} and {png}")


EVALUATION = Evaluation("dependency-loss", cli, spec=DependencySpec, key="dependency", run=run)
