"""Context gain: loss with the whole context vs the last W tokens (`longmix eval context-gain`; a suite's
`eval.context_gain`, on eval.data at eval.max_len)."""

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
from longmix.eval.evaluations.options import AttnImpl, Device, Dtype, TrustCode, console, out_console


class GainSpec(Strict):
    """Context gain per arm (longmix eval context-gain) on eval.data at eval.max_len."""

    window: int = Field(128, ge=1)
    stride: int | None = Field(None, ge=1)
    max_docs: int = Field(8, ge=1)


def run(loaded: Any, g: GainSpec, ctx: SuiteRun) -> dict[str, Any]:
    from longmix.eval.context_gain import context_gain

    res = context_gain(loaded, ctx.data, ctx.max_len, g.window, g.stride, g.max_docs, ctx.seed, name=ctx.name)
    res.pop("per_document_gain", None)
    return res


def cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="HF checkpoint folders; several = comparison overlay")],
    data: Annotated[list[Path], typer.Option("--data", help="held-out documents: JSONL file/folder or tokenized "
                                             ".arrow shards (repeatable)")],
    max_len: Annotated[int, typer.Option(min=16, help="tokens per document (shorter ones are skipped)")] = 1024,
    window: Annotated[int, typer.Option(min=1, help="short context W: the last W tokens only")] = 128,
    stride: Annotated[int | None, typer.Option(min=1, help="sliding-window stride S (short contexts of W..W+S-1 "
                                               "tokens; 1 = exact; default W/2)")] = None,
    max_docs: Annotated[int, typer.Option(min=1)] = 16,
    key_gain: Annotated[float, typer.Option(help="key token: gain above this (nats)")] = 2.0,
    key_loss: Annotated[float, typer.Option(help="key token: full-context loss below this (nats)")] = 2.0,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="windows per forward")] = 8,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (default: the checkpoint's)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for context_gain.json/.png")] = Path("eval"),
) -> None:
    """Per-token loss with the whole context vs only the last W tokens: mean gain, gain by position, key tokens."""
    from longmix.eval.context_gain import context_gain
    from longmix.eval.plots import plot_context_gain

    if window >= max_len:
        raise UserError(f"--window ({window}) must be shorter than --max-len ({max_len})")
    results = each_checkpoint(
        checkpoints, lambda loaded, name: context_gain(loaded, data, max_len, window, stride, max_docs, seed,
                                                       key_gain=key_gain, key_loss=key_loss, name=name,
                                                       batch_size=batch_size),
        tokenizer=tokenizer, device=device, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "context_gain.json", {"max_len": max_len, "window": window, "results": results})
    png = plot_context_gain(results, output / "context_gain.png")
    table = Table(title=f"context gain: loss with {max_len} tokens of context vs the last {window} (nats)")
    for col in ("checkpoint", "docs", "full loss", "short loss", "mean gain", "key tokens", "key-token loss"):
        table.add_column(col)
    for r in results:
        kl = f"{r['key_token_loss']:.3f}" if r["key_token_loss"] is not None else "-"
        table.add_row(r["name"], str(r["n_docs"]), f"{r['mean_full_loss']:.4f}", f"{r['mean_short_loss']:.4f}",
                      f"{r['mean_gain']:.4f}", f"{r['key_token_share']:.2%}", kl)
    out_console.print(table)
    console.print(f"wrote {output / 'context_gain.json'} and {png}")


EVALUATION = Evaluation("context-gain", cli, spec=GainSpec, key="context_gain", run=run)
