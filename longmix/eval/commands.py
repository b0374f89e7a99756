"""`longmix eval ...`: context-loss, probes, rope."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from longmix.atomic import write_json
from longmix.errors import UserError

eval_app = typer.Typer(no_args_is_help=True, help="Long-context evaluation: loss vs context, probes, RoPE.")
console = Console(stderr=True)
out_console = Console(width=160)  # tables stay whole in logs and pipes
log = logging.getLogger(__name__)

Device = Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N")]
Dtype = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16")]


def _name(ckpt: Path, taken: set[str]) -> str:
    name = ckpt.resolve().name
    while name in taken:  # two folders called `final` still get two legend entries
        name = f"{ckpt.resolve().parent.name}/{name}"
    taken.add(name)
    return name


@eval_app.command("context-loss")
def context_loss_cmd(
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
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for context_loss.json/.png")] = Path("eval"),
) -> None:
    """Per-position loss on whole held-out documents, binned by context length, with L(c) = (α/c)^β + γ fitted."""
    from longmix.eval.context_loss import context_loss
    from longmix.eval.loading import load_checkpoint
    from longmix.eval.plots import plot_context_loss

    if min_len is not None and not 2 <= min_len <= max_len:
        raise UserError(f"--min-len must be between 2 and --max-len ({max_len}), got {min_len}")
    results, taken = [], set()
    for ckpt in checkpoints:
        name = _name(ckpt, taken)
        loaded = load_checkpoint(ckpt, tokenizer, device, dtype)
        res = context_loss(loaded, data, max_len, min_len, max_docs, seed, batch_size, bins, name, fit_min=fit_min)
        res["checkpoint"] = str(ckpt)
        results.append(res)
        del loaded
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "context_loss.json", {"max_len": max_len, "seed": seed, "results": results})
    png = plot_context_loss(results, output / "context_loss.png")
    table = Table(title=f"loss vs context length ({max_len} tokens)")
    for col in ("checkpoint", "docs", "mean loss", "first bin", "last bin", "fit α", "fit β", "fit γ [95% CI]", "R²"):
        table.add_column(col)
    for r in results:
        f, b = r["fit"], r["bins"]
        fit_cells = [f"{f['alpha']:.3g}", f"{f['beta']:.3f}",
                     f"{f['gamma']:.3f} [{_num(f['gamma_ci'][0])}, {_num(f['gamma_ci'][1])}]", f"{f['r2']:.3f}"] \
            if f else ["-", "-", "fit failed", "-"]
        table.add_row(r["name"], str(r["n_docs"]), f"{r['mean_loss']:.4f}",
                      f"{b['loss'][0]:.3f} (c={b['context'][0]:.0f})",
                      f"{b['loss'][-1]:.3f} (c={b['context'][-1]:.0f})",
                      *fit_cells)
    out_console.print(table)
    console.print(f"wrote {output / 'context_loss.json'} and {png}")


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def _floats(values: str, what: str) -> list[float]:
    try:
        return [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got {values!r}") from None


@eval_app.command("probes")
def probes_cmd(
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
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for probes.json and heatmaps")] = Path("eval"),
) -> None:
    """Passkey retrieval and first-sentence retrieval over lengths x depths, greedy; exact match and ROUGE-L."""
    from longmix.eval.loading import load_checkpoint
    from longmix.eval.plots import plot_probe_heatmap
    from longmix.eval.probes import filler_texts, results_json, run_probes, summarize_probes

    tasks = tuple(task or ("passkey", "first_sentence"))
    if bad := set(tasks) - {"passkey", "first_sentence"}:
        raise UserError(f"unknown --task {', '.join(sorted(bad))}; use passkey or first_sentence")
    lens = [int(v) for v in _floats(lengths, "--lengths")]
    deps = _floats(depths, "--depths")
    if not lens or min(lens) < 16:
        raise UserError("--lengths must list lengths of at least 16 tokens")
    if not deps or not all(0 <= d <= 1 for d in deps):
        raise UserError("--depths must lie in [0, 1]")
    loaded = load_checkpoint(checkpoint, tokenizer, device, dtype)
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


@eval_app.command("rope")
def rope_cmd(
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
