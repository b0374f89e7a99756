"""`longmix eval ...`: context-loss, probes, rope."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError

eval_app = typer.Typer(no_args_is_help=True, help="Long-context evaluation: loss vs context, probes, RoPE.")
console = Console(stderr=True)
out_console = Console(width=160)  # tables stay whole in logs and pipes
log = logging.getLogger(__name__)

Device = Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N")]
Dtype = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16")]
TrustCode = Annotated[bool, typer.Option("--trust-remote-code", help="allow a checkpoint folder's own model code "
                                        "(auto_map) to run")]
AttnImpl = Annotated[str, typer.Option(help="auto (sdpa, or eager for models that softcap attention logits), "
                                       "sdpa, eager, flash_attention_2, flex_attention")]


def _name(ckpt: Path, taken: set[str]) -> str:
    name = ckpt.resolve().name
    while name in taken:  # two folders called `final` still get two legend entries
        name = f"{ckpt.resolve().parent.name}/{name}"
    taken.add(name)
    return name


def each_checkpoint(checkpoints: list[Path], run: Callable[[Any, str], dict[str, Any]], **load: Any) -> list[dict]:
    """``run(loaded, name)`` on every checkpoint, one loaded at a time (legend names unique); each result
    records its checkpoint. ``load`` goes to ``load_checkpoint`` (tokenizer, device, dtype, attention...)."""
    from longmix.models.loading import load_checkpoint

    results, taken = [], set()
    for ckpt in checkpoints:
        name = _name(ckpt, taken)
        loaded = load_checkpoint(ckpt, **load)
        results.append({**run(loaded, name), "checkpoint": str(ckpt)})
        del loaded
    return results


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
    lens = [int(v) for v in _floats(lengths, "--lengths")]
    deps = _floats(depths, "--depths")
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


@eval_app.command("context-gain")
def context_gain_cmd(
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


@eval_app.command("dependency-loss")
def dependency_loss_cmd(
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


@eval_app.command("ruler")
def ruler_cmd(
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
    from longmix.eval.ruler import (
        STYLES,
        TASKS,
        Generator,
        build_samples,
        haystack_texts,
        results_json,
        score_samples,
        summarize,
    )
    from longmix.eval.ruler_run import generate_all

    lens = [int(v) for v in _floats(lengths, "--lengths")]
    deps: list[float | None] = [None] if depths.strip() == "random" else list(_floats(depths, "--depths"))
    names = [t.strip() for t in tasks.split(",")] if tasks else list(TASKS)
    if not lens or min(lens) < 64:
        raise UserError("--lengths must list lengths of at least 64 tokens")
    if not deps or not all(d is None or 0 <= d <= 1 for d in deps):
        raise UserError("--depths must lie in [0, 1] (or be random)")
    if style not in STYLES:
        raise UserError(f"--style must be one of {', '.join(STYLES)}")
    if bad := sorted(set(names) - set(TASKS)):
        raise UserError(f"unknown --tasks {', '.join(bad)}; choose from {', '.join(TASKS)}")
    fillers = haystack_texts(haystack, seed, lens)
    output.mkdir(parents=True, exist_ok=True)

    def run(loaded: Any, name: str) -> dict[str, Any]:
        built = build_samples(Generator(loaded.tokenizer, loaded.bos_id, fillers, style), names, lens, deps, samples,
                              seed)
        results = score_samples(built, generate_all(loaded, built, batch_size, f"ruler {name}"))
        summary = summarize(results, threshold)
        _ruler_outputs(name, summary, threshold, output)
        return {"name": name, "rope_theta": rope_theta, "summary": summary, "results": results_json(results)}

    report = each_checkpoint(checkpoints, run, tokenizer=tokenizer, device=device, dtype=dtype, rope_theta=rope_theta,
                             attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    write_json(output / "ruler.json", {"seed": seed, "lengths": lens, "depths": deps, "samples": samples,
                                       "style": style, "template": "base (completion, no chat template)",
                                       "checkpoints": report})
    console.print(f"wrote {output / 'ruler.json'} and heatmaps in {output}")


def _ruler_outputs(name: str, summary: dict[str, Any], threshold: float, output: Path) -> None:
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


@eval_app.command("harness")
def harness_cmd(
    checkpoints: Annotated[list[Path], typer.Argument(help="exported HF checkpoint folders")],
    tasks: Annotated[str, typer.Option(help="lm-eval task names, comma-separated (e.g. hellaswag,arc_easy)")],
    include_path: Annotated[list[Path] | None, typer.Option("--include-path", help="folder of your own task "
                                                            "YAMLs (repeatable): local data, offline")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="documents per task (default: all)")] = None,
    num_fewshot: Annotated[int | None, typer.Option(min=0, help="few-shot examples (default: the task's)")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16")] = "float32",
    trust_remote_code: TrustCode = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for harness.json/.png")] = Path("eval"),
) -> None:
    """Standard benchmarks through lm-evaluation-harness's HF backend; results as longmix eval JSON and a plot."""
    from longmix.eval.harness import check_tasks, run_harness
    from longmix.eval.plots import plot_harness

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    check_tasks(names, include_path)  # a typo is one line before any model loads
    for ckpt in checkpoints:
        if not (ckpt / "config.json").is_file():
            raise UserError(f"{ckpt} is not an HF checkpoint folder (no config.json); export a run first")
    output.mkdir(parents=True, exist_ok=True)
    results, taken = [], set()
    for ckpt in checkpoints:
        res = run_harness(ckpt, names, include_path=include_path, limit=limit, num_fewshot=num_fewshot,
                          batch_size=batch_size, device=device, dtype=dtype, seed=seed,
                          trust_remote_code=trust_remote_code)
        results.append({"name": _name(ckpt, taken), **res})
    write_json(output / "harness.json", {"tasks": names, "checkpoints": results})
    png = plot_harness(results, output / "harness.png")
    table = Table(title="lm-evaluation-harness")
    for col in ("checkpoint", "task", "metric", "value", "stderr", "n"):
        table.add_column(col)
    for r in results:
        for task, entry in r["tasks"].items():
            for metric, value in entry["metrics"].items():
                se = entry["stderr"].get(metric)
                table.add_row(r["name"], task, metric, f"{value:.4f}", "" if se is None else f"{se:.4f}",
                              str(entry["n"]))
    out_console.print(table)
    console.print(f"wrote {output / 'harness.json'} and {png}")
