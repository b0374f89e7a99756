"""Held-out long-document QA answered by a chat model (`longmix eval longqa`; a suite's `eval.longqa`): exact
match, token F1 and ROUGE-L against the generator's checked answers, by evidence depth and prompt style. The
measurement is `longmix/eval/longqa.py`."""

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

CHAT = "a chat-form evaluation"


class LongQASpec(Strict):
    """Held-out long QA per arm (longmix eval longqa)."""

    data: str = Field(description="held-out long-QA JSONL (longmix sft-data on documents the SFT never saw)")
    max_len: int | None = Field(None, ge=64, description="prompt plus answer budget, in tokens (default: "
                                "eval.max_len); longer examples are skipped and counted")
    max_examples: int | None = Field(200, ge=1, description="a seeded subset of this many (None: all)")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(1, ge=1)


def run(loaded: Any, q: LongQASpec, ctx: SuiteRun) -> dict[str, Any]:
    """The summary (results.json keeps no single answers)."""
    from longmix.eval.longqa import read_heldout, run_longqa, select, summarize
    from longmix.models.chat_template import template_of_loaded

    examples = select(read_heldout(ctx.resolve(q.data)), q.max_examples, ctx.seed)
    results, skipped = run_longqa(loaded, template_of_loaded(loaded, CHAT), examples, q.max_len or ctx.max_len,
                                  q.max_new_tokens, q.batch_size, f"longqa {ctx.name}", ctx.progress)
    return summarize(results, skipped, ctx.seed)


def cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="HF checkpoint folders with a chat template")],
    data: Annotated[Path, typer.Option("--data", help="held-out long-QA JSONL (longmix sft-data's format)")],
    max_len: Annotated[int, typer.Option(min=64, help="prompt plus answer budget in tokens; longer examples are "
                                         "skipped and counted")] = 4096,
    max_examples: Annotated[int | None, typer.Option(min=1, help="a seeded subset of this many (default: all)")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="answer budget in tokens")] = 64,
    seed: Annotated[int, typer.Option(help="selection of --max-examples and the bootstrap")] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for longqa.json and the plot")] = Path("eval"),
) -> None:
    """Held-out long-document QA in the model's chat template, greedy; exact match, token F1 and ROUGE-L with
    95% bootstrap intervals, by evidence depth and prompt style."""
    from longmix.eval.longqa import read_heldout, results_json, run_longqa, select, summarize
    from longmix.eval.plots import plot_longqa_depth
    from longmix.models.chat_template import require_chat_template, template_of_loaded

    for ckpt in checkpoints:  # every mistake before the first model loads
        if not (ckpt / "config.json").is_file():
            raise UserError(f"checkpoint '{ckpt}' has no config.json; give an HF checkpoint folder")
        require_chat_template(ckpt, "longmix eval longqa")
    examples = select(read_heldout(data), max_examples, seed)
    output.mkdir(parents=True, exist_ok=True)

    def one(loaded: Any, name: str) -> dict[str, Any]:
        results, skipped = run_longqa(loaded, template_of_loaded(loaded, CHAT), examples, max_len, max_new_tokens,
                                      batch_size, f"longqa {name}")
        summary = summarize(results, skipped, seed)
        _table(name, summary)
        return {"name": name, "summary": summary, "results": results_json(results)}

    report = each_checkpoint(checkpoints, one, device=device, dtype=dtype, attn_implementation=attn_implementation,
                             trust_remote_code=trust_remote_code)
    write_json(output / "longqa.json", {"data": str(data), "seed": seed, "max_len": max_len,
                                        "max_examples": max_examples, "max_new_tokens": max_new_tokens,
                                        "selected": len(examples), "template": "the checkpoint's chat template",
                                        "checkpoints": report})
    plot_longqa_depth(report, output / "longqa_depth.png")
    console.print(f"wrote {output / 'longqa.json'} and {output / 'longqa_depth.png'}")


def _cell(g: dict[str, Any], m: str) -> str:
    if g[m] is None:
        return "-"
    lo, hi = g[f"{m}_ci"]
    return f"{g[m]:.3f} [{lo:.2f}, {hi:.2f}]"


def _table(name: str, s: dict[str, Any]) -> None:
    table = Table(title=f"long QA {name}: {s['n']} scored, {s['skipped']} skipped (too long); mean [95% bootstrap]")
    for col in ("group", "n", "exact match", "token F1", "ROUGE-L"):
        table.add_column(col)
    rows = [("all", s)] + [(f"depth {b['bin']}", b) for b in s["by_depth"]] + \
        [(f"style {k}", g) for k, g in s["by_style"].items()]
    for label, g in rows:
        table.add_row(label, str(g["n"]), *[_cell(g, m) for m in ("em", "f1", "rouge_l")])
    out_console.print(table)


EVALUATION = Evaluation("longqa", cli, spec=LongQASpec, key="longqa", run=run)
