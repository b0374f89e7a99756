"""Loss vs context length (`longmix eval context-loss`), and the base measurement of every ablation suite:
its settings are the suite's `eval:` section itself (`ContextLossSpec`), its table the loss over context
ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import Field
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict
from longmix.eval.evaluation import Evaluation, SuiteRun, each_checkpoint
from longmix.eval.evaluations.options import AttnImpl, Device, Dtype, TrustCode, console, num, out_console


class ContextLossSpec(Strict):
    """A suite's `eval:` settings that loss vs context reads (the task sections extend it in ablate)."""

    data: list[str] = Field(min_length=1, description="held-out documents (JSONL files/folders)")
    max_len: int = Field(2048, ge=8)
    min_len: int | None = None
    max_docs: int = Field(16, ge=1)
    seed: int = 0
    bins: int = Field(16, ge=4)
    table_contexts: list[int] = Field([256, 1024, 2048], description="report loss at context ranges up to these")


def range_keys(edges: list[int]) -> list[str]:
    return [f"{lo}-{hi}" for lo, hi in zip([0, *edges[:-1]], edges, strict=True)]


def range_losses(res: dict[str, Any], edges: list[int]) -> dict[str, float | None]:
    """Mean binned loss over context ranges (0, e1], (e1, e2], ...: the columns of the results table."""
    b = res["bins"]
    out: dict[str, float | None] = {}
    lo = 0
    for hi in edges:
        vals = [loss for c, loss in zip(b["context"], b["loss"], strict=True) if lo < c <= hi]
        out[f"{lo}-{hi}"] = sum(vals) / len(vals) if vals else None
        lo = hi
    return out


def run(loaded: Any, e: ContextLossSpec, ctx: SuiteRun) -> dict[str, Any]:
    from longmix.eval.context_loss import context_loss

    # ctx.seed, not e.seed: a load-time arm's draws read other documents (trained arms: draw 0, the same)
    res = context_loss(loaded, ctx.data, e.max_len, e.min_len, e.max_docs, ctx.seed, n_bins=e.bins, name=ctx.name,
                       progress=ctx.progress)
    res.pop("per_position_loss", None)  # thousands of floats per arm; the bins carry the curve
    res["context_ranges"] = range_losses(res, e.table_contexts)
    return res


def cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="HF checkpoint folders; several = comparison overlay")],
    data: Annotated[list[Path], typer.Option("--data", help="held-out documents: JSONL file/folder or tokenized "
                                             ".arrow shards (repeatable)")],
    max_len: Annotated[int, typer.Option(min=8, help="tokens per document (documents are cut to it)")] = 1024,
    min_len: Annotated[int | None, typer.Option(help="shortest document kept (default: --max-len)")] = None,
    max_docs: Annotated[int, typer.Option(min=1, help="documents to evaluate")] = 64,
    seed: Annotated[int, typer.Option(help="document sampling seed")] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    bins: Annotated[int, typer.Option(min=4, help="log-spaced context bins for the curve and the fit")] = 24,
    fit_min: Annotated[int, typer.Option(min=1, help="fit the bins from this context length on")] = 16,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (default: the checkpoint's)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for context_loss.json/.png")] = Path("eval"),
) -> None:
    """Per-position loss on whole held-out documents, binned by context length, with L(c) = (α/c)^β + γ fitted."""
    from longmix.eval.context_loss import context_loss
    from longmix.eval.plots import plot_context_loss

    if min_len is not None and not 2 <= min_len <= max_len:
        raise UserError(f"--min-len must be between 2 and --max-len ({max_len}), got {min_len}")
    results = each_checkpoint(
        checkpoints, lambda loaded, name: context_loss(loaded, data, max_len, min_len, max_docs, seed, batch_size,
                                                       bins, name, fit_min=fit_min),
        tokenizer=tokenizer, device=device, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "context_loss.json", {"max_len": max_len, "seed": seed, "results": results})
    png = plot_context_loss(results, output / "context_loss.png")
    table = Table(title=f"loss vs context length ({max_len} tokens)")
    for col in ("checkpoint", "docs", "mean loss", "first bin", "last bin", "fit α", "fit β", "fit γ [95% CI]", "R²"):
        table.add_column(col)
    for r in results:
        f, b = r["fit"], r["bins"]
        fit_cells = [f"{f['alpha']:.3g}", f"{f['beta']:.3f}",
                     f"{f['gamma']:.3f} [{num(f['gamma_ci'][0])}, {num(f['gamma_ci'][1])}]", f"{f['r2']:.3f}"] \
            if f else ["-", "-", "fit failed", "-"]
        table.add_row(r["name"], str(r["n_docs"]), f"{r['mean_loss']:.4f}",
                      f"{b['loss'][0]:.3f} (c={b['context'][0]:.0f})",
                      f"{b['loss'][-1]:.3f} (c={b['context'][-1]:.0f})",
                      *fit_cells)
    out_console.print(table)
    console.print(f"wrote {output / 'context_loss.json'} and {png}")


EVALUATION = Evaluation("context-loss", cli, spec=ContextLossSpec, key=None, run=run)
