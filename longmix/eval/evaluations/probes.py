"""Passkey and first-sentence retrieval (`longmix eval probes`; a suite's `eval.probes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict
from longmix.eval.evaluation import Evaluation, SuiteRun
from longmix.eval.evaluations.options import AttnImpl, Device, Dtype, TrustCode, console, floats, out_console


class ProbeSpec(Strict):
    """Passkey and first-sentence probes per arm (longmix eval probes)."""

    filler: list[str] | None = Field(None, description="real text for the filler (default: eval.data)")
    tasks: list[Literal["passkey", "first_sentence"]] = ["passkey", "first_sentence"]
    lengths: list[int] = Field([512, 1024, 2048], min_length=1)
    depths: list[float] = [0.0, 0.5, 1.0]
    trials: int = Field(3, ge=1)


def run(loaded: Any, p: ProbeSpec, ctx: SuiteRun) -> dict[str, Any]:
    """The summary by task (results.json keeps no single prompts)."""
    from longmix.eval.probes import filler_texts, run_probes, summarize_probes

    fill = filler_texts([ctx.resolve(f) for f in p.filler] if p.filler else ctx.data, ctx.seed, max(p.lengths) * 12)
    return summarize_probes(run_probes(loaded, fill, p.lengths, p.depths, p.trials, ctx.seed, tuple(p.tasks), 1,
                                       ctx.progress))


def cli(
    checkpoint: Annotated[Path, typer.Argument(help="HF checkpoint folder")],
    filler: Annotated[list[Path], typer.Option("--filler", help="JSONL file/folder of real text for filler and "
                                               "first sentences (repeatable)")],
    lengths: Annotated[str, typer.Option(help="context lengths in tokens, comma-separated")] = "256,512,1024",
    depths: Annotated[str, typer.Option(help="passkey depths in [0, 1], comma-separated")] = "0,0.25,0.5,0.75,1",
    trials: Annotated[int, typer.Option(min=1, help="prompts per grid cell")] = 5,
    task: Annotated[list[str] | None, typer.Option(help="passkey and/or first_sentence (default: both)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json (default: the checkpoint's)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    attn_implementation: AttnImpl = "auto",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for probes.json and heatmaps")] = Path("eval"),
) -> None:
    """Passkey retrieval and first-sentence retrieval over lengths x depths, greedy; exact match and ROUGE-L."""
    from longmix.eval.plots import plot_probe_heatmap
    from longmix.eval.probes import filler_texts, results_json, run_probes, summarize_probes
    from longmix.models.loading import load_checkpoint

    tasks = tuple(task or ("passkey", "first_sentence"))
    if bad := set(tasks) - {"passkey", "first_sentence"}:
        raise UserError(f"unknown --task {', '.join(sorted(bad))}; use passkey or first_sentence")
    lens = [int(v) for v in floats(lengths, "--lengths")]
    deps = floats(depths, "--depths")
    if not lens or min(lens) < 16:
        raise UserError("--lengths must list lengths of at least 16 tokens")
    if not deps or not all(0 <= d <= 1 for d in deps):
        raise UserError("--depths must lie in [0, 1]")
    loaded = load_checkpoint(checkpoint, tokenizer, device, dtype, attn_implementation=attn_implementation,
                             trust_remote_code=trust_remote_code)
    fillers = filler_texts(filler, seed, min_chars=max(lens) * 12)
    results = run_probes(loaded, fillers, lens, deps, trials, seed, tasks, batch_size)
    summary = summarize_probes(results)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "probes.json", {"checkpoint": str(checkpoint), "seed": seed, "summary": summary,
                                        "results": results_json(results)})
    for name, s in summary.items():
        metric = "exact" if name == "passkey" else "rouge_l"
        plot_probe_heatmap(name, s, metric, output / f"probe_{name}.png")
        table = Table(title=f"{name} ({metric}; rows: depth, columns: length)")
        table.add_column("depth")
        for L in s["lengths"]:
            table.add_column(str(L))
        for d, row in zip(s["depths"], s[metric], strict=True):
            table.add_row(f"{d:.0%}", *[f"{v:.2f}" for v in row])
        out_console.print(table)
        out_console.print(f"{name}: mean exact {s['mean_exact']:.3f}, mean ROUGE-L {s['mean_rouge_l']:.3f}")
    console.print(f"wrote {output / 'probes.json'} and heatmaps in {output}")


EVALUATION = Evaluation("probes", cli, spec=ProbeSpec, key="probes", run=run)
