"""RULER-style synthetic tasks (`longmix eval ruler`; a suite's `eval.ruler`), scored as RULER does, with the
effective length. The tasks and their prompts are `longmix/eval/ruler.py`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field, model_validator
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict
from longmix.eval.evaluation import Evaluation, SuiteRun, each_checkpoint
from longmix.eval.evaluations.options import AttnImpl, Device, Dtype, TrustCode, console, floats, out_console

CHAT = "a chat-form evaluation"


class RulerSpec(Strict):
    """RULER-style tasks per arm (longmix eval ruler)."""

    haystack: list[str] | None = Field(None, description="real text for the essay haystacks (default: eval.data)")
    tasks: list[str] | None = Field(None, description="default: all")
    lengths: list[int] = Field([1024, 2048], min_length=1)
    depths: list[float] | None = Field(None, description="NIAH target depths (0-1); default: at random, as RULER")
    style: Literal["ruler", "lm-eval"] = Field("ruler", description="NVIDIA RULER's prompts, or lm-eval's variant")
    samples: int = Field(2, ge=1)
    threshold: float = 85.6
    chat: bool = Field(False, description="prompts in the checkpoint's chat template (an instruction-tuned model)")

    @model_validator(mode="after")
    def _known(self) -> RulerSpec:
        from longmix.eval.ruler import TASKS

        if bad := sorted(set(self.tasks or []) - set(TASKS)):
            raise ValueError(f"unknown RULER task(s) {', '.join(bad)}; choose from {', '.join(TASKS)}")
        if self.chat and self.style != "ruler":
            raise ValueError("ruler.chat uses RULER's own prompts (style ruler), not lm-eval's")
        return self


def score(loaded: Any, haystack: list[str], style: str, tasks: Sequence[str], lengths: Sequence[int],
          depths: Sequence[float | None], samples: int, seed: int, batch_size: int, label: str,
          chat: Any = None) -> list[Any]:
    """One checkpoint's scored RULER samples (the same prompts for the same haystack and seed); ``chat`` (a
    ChatTemplate) puts them in the chat form."""
    from longmix.eval.ruler import Generator, build_samples
    from longmix.eval.ruler_run import generate_all
    from longmix.eval.ruler_score import score_samples

    built = build_samples(Generator(loaded.tokenizer, loaded.bos_id, haystack, style, chat), tasks, lengths,
                          depths, samples, seed)
    return score_samples(built, generate_all(loaded, built, batch_size, label))


def run(loaded: Any, r: RulerSpec, ctx: SuiteRun) -> dict[str, Any]:
    """The summary (results.json keeps no single prompts)."""
    from longmix.eval.ruler import TASKS, haystack_texts
    from longmix.eval.ruler_score import summarize
    from longmix.models.chat_template import template_of_loaded

    hay = haystack_texts([ctx.resolve(p) for p in r.haystack] if r.haystack else ctx.data, ctx.seed, r.lengths)
    results = score(loaded, hay, r.style, r.tasks or list(TASKS), r.lengths, r.depths or [None], r.samples,
                    ctx.seed, 1, f"ruler {ctx.name}", template_of_loaded(loaded, CHAT) if r.chat else None)
    return summarize(results, r.threshold)


def cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="HF checkpoint folders (each gets its own table)")],
    haystack: Annotated[list[Path], typer.Option("--haystack", help="JSONL file/folder of real text for the "
                                                 "essay haystacks (repeatable)")],
    lengths: Annotated[str, typer.Option(help="context lengths in tokens, comma-separated")] = "1024,2048,4096",
    tasks: Annotated[str | None, typer.Option(help="comma-separated (default: all): niah_single_1, niah_single_2, "
                                              "niah_single_3, niah_multikey, niah_multivalue, niah_multiquery, "
                                              "vt, cwe, fwe")] = None,
    depths: Annotated[str, typer.Option(help="NIAH target-needle depths in [0, 1], comma-separated, for a depth x "
                                        "length grid; random: placed at random, as RULER does")] = "random",
    style: Annotated[str, typer.Option(help="ruler: NVIDIA RULER's prompts; lm-eval: lm-evaluation-harness "
                                       "0.4.13's variant of them (for comparing with that harness)")] = "ruler",
    samples: Annotated[int, typer.Option(min=1, help="prompts per task x length (x depth for NIAH)")] = 4,
    threshold: Annotated[float, typer.Option(help="score that counts as effective (RULER: Llama-2-7B at 4K)")] = 85.6,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    chat: Annotated[bool, typer.Option("--chat", help="each prompt in the checkpoint's chat template: the task as "
                                       "the user turn, the answer prefix after the generation prompt")] = False,
    rope_theta: Annotated[float | None, typer.Option(help="load with this RoPE base instead (a load-time ABF)")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (default: the checkpoint's)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for ruler.json and heatmaps")] = Path("eval"),
) -> None:
    """RULER-style synthetic tasks (needle in a haystack, variable tracking, common/frequent words), scored as
    RULER does, with the effective length."""
    from longmix.eval.ruler import STYLES, TASKS, haystack_texts
    from longmix.eval.ruler_score import results_json, summarize
    from longmix.models.chat_template import require_chat_template, template_of_loaded

    lens = [int(v) for v in floats(lengths, "--lengths")]
    deps: list[float | None] = [None] if depths.strip() == "random" else list(floats(depths, "--depths"))
    names = [t.strip() for t in tasks.split(",")] if tasks else list(TASKS)
    if not lens or min(lens) < 64:
        raise UserError("--lengths must list lengths of at least 64 tokens")
    if not deps or not all(d is None or 0 <= d <= 1 for d in deps):
        raise UserError("--depths must lie in [0, 1] (or be random)")
    if style not in STYLES:
        raise UserError(f"--style must be one of {', '.join(STYLES)}")
    if bad := sorted(set(names) - set(TASKS)):
        raise UserError(f"unknown --tasks {', '.join(bad)}; choose from {', '.join(TASKS)}")
    if chat and style != "ruler":
        raise UserError("--chat uses RULER's own prompts (--style ruler), not lm-eval's")
    for ckpt in checkpoints if chat else []:
        require_chat_template(ckpt, "longmix eval ruler --chat")
    fillers = haystack_texts(haystack, seed, lens)
    output.mkdir(parents=True, exist_ok=True)

    def one(loaded: Any, name: str) -> dict[str, Any]:
        results = score(loaded, fillers, style, names, lens, deps, samples, seed, batch_size, f"ruler {name}",
                        template_of_loaded(loaded, CHAT) if chat else None)
        summary = summarize(results, threshold)
        _outputs(name, summary, threshold, output)
        return {"name": name, "rope_theta": rope_theta, "summary": summary, "results": results_json(results)}

    report = each_checkpoint(checkpoints, one, tokenizer=tokenizer, device=device, dtype=dtype, rope_theta=rope_theta,
                             attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    write_json(output / "ruler.json", {"seed": seed, "lengths": lens, "depths": deps, "samples": samples,
                                       "style": style, "template": "chat (the checkpoint's chat template, the "
                                       "answer prefix after the generation prompt)" if chat else
                                       "base (completion, no chat template)",
                                       "checkpoints": report})
    console.print(f"wrote {output / 'ruler.json'} and heatmaps in {output}")


def _outputs(name: str, summary: dict[str, Any], threshold: float, output: Path) -> None:
    """One checkpoint's RULER plots and table, as soon as it is scored."""
    from longmix.eval.plots import heatmap, plot_ruler

    plot_ruler(summary, output / f"ruler_{name.replace('/', '_')}.png", name)
    for task, g in summary["depth_grids"].items():
        heatmap(g["score"], [f"{d:.0%}" for d in g["depths"]], [str(L) for L in summary["lengths"]],
                f"{name} {task}", output / f"ruler_{name.replace('/', '_')}_{task}.png", vmax=100.0)
    table = Table(title=f"RULER {name}: score (0-100) by task and length; effective length "
                  f"{summary['effective_length'] or 'none'} (threshold {threshold:g})")
    table.add_column("task")
    for L in summary["lengths"]:
        table.add_column(str(L))
    for t in summary["tasks"]:
        table.add_row(t, *[f"{v:.1f}" for v in summary["table"][t]])
    table.add_row("mean", *[f"{v:.1f}" for v in summary["mean"]])
    out_console.print(table)


EVALUATION = Evaluation("ruler", cli, spec=RulerSpec, key="ruler", run=run)
