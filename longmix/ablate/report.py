"""The suite's report folder: results.json, report.md (a table shaped like the paper's ablation tables),
loss-vs-context and training-curve PNGs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from longmix.core.atomic import write_json


def training_summary(metrics: Path) -> dict[str, Any]:
    """Final train/held-out loss, tokens and FLOPs of one run, from the trainer's own metrics.jsonl.

    The runner logs every step, so summing each step's FLOPs (tflops_per_device x step time x ranks is
    what the trainer computed from tokens and attention pairs) gives the run's total exactly."""
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    steps = [r for r in rows if "loss" in r and "step" in r]
    evals = [r for r in rows if "eval_loss" in r]
    flops = sum(r["tflops_per_device"] * 1e12 * r["step_time_s"] for r in steps)  # per rank
    return {
        "steps": len(steps), "final_loss": steps[-1]["loss"] if steps else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "tokens": sum(r["tokens"] for r in steps), "flops_per_rank": flops,
        "seconds": sum(r["step_time_s"] for r in steps),
        "curve": [{"step": r["step"], "loss": r["loss"], "seq_len": r["seq_len"]} for r in steps],
    }


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def aggregate(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: means over seeds (and the spread when there are several)."""
    by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in arms:
        by_arm[r["arm"]].append(r)
    rows = []
    for name, runs in by_arm.items():
        ranges = runs[0]["eval"]["context_ranges"]
        row: dict[str, Any] = {"arm": name, "label": runs[0]["label"], "seeds": [r["seed"] for r in runs],
                               "ranges": {}, "mean_loss": mean(r["eval"]["mean_loss"] for r in runs)}
        for key in ranges:
            vals = [r["eval"]["context_ranges"][key] for r in runs if r["eval"]["context_ranges"][key] is not None]
            row["ranges"][key] = (mean(vals) if vals else None, stdev(vals) if len(vals) > 1 else None)
        fits = [r["eval"]["fit"] for r in runs if r["eval"].get("fit")]
        row["beta"] = mean(f["beta"] for f in fits) if fits else None
        row["gamma"] = mean(f["gamma"] for f in fits) if fits else None
        trained = [r for r in runs if r.get("training")]  # none for a load-time arm (train: none)
        ev = [r["training"]["eval_loss"] for r in trained if r["training"]["eval_loss"] is not None]
        row["heldout_loss"] = mean(ev) if ev else None
        row["tokens"] = trained[0]["training"]["tokens"] if trained else None
        row["tflops"] = mean(r["training"]["flops_per_rank"] for r in trained) / 1e12 if trained else None
        rows.append(row)
    return rows


def results_table(summary: dict[str, Any]) -> str:
    rows = aggregate(summary["arms"])
    ranges = list(rows[0]["ranges"]) if rows else []
    head = ["arm", *[f"loss @ ctx {k}" for k in ranges], "mean loss", "fit β", "fit γ", "held-out (train len)",
            "train tokens", "TFLOPs/rank", "FLOPs vs 1st arm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = summary.get("base")
    if base:
        e = base["eval"]
        fit = e.get("fit") or {}
        lines.append("| base (no continued training) | " + " | ".join(
            _fmt(e["context_ranges"][k]) for k in ranges) + f" | {e['mean_loss']:.3f} | {_fmt(fit.get('beta'))} | "
            f"{_fmt(fit.get('gamma'))} | - | - | - | - |")
    for r in rows:
        ratio = r["tflops"] / rows[0]["tflops"] if r["tflops"] is not None and rows[0]["tflops"] else None
        cells = []
        for k in ranges:
            m, sd = r["ranges"][k]
            cells.append(_fmt(m) + (f" ± {sd:.3f}" if sd is not None else ""))
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['mean_loss']:.3f} | {_fmt(r['beta'])} | "
                     f"{_fmt(r['gamma'])} | {_fmt(r['heldout_loss'])} | {_tokens(r['tokens'])} | "
                     f"{_fmt(r['tflops'], '.2f')} | "
                     f"{_fmt(ratio, '.2f')} |")
    return "\n".join(lines)


def _tokens(n: int | None) -> str:
    return "none (load time)" if n is None else f"{n:,}"


def plot_curves(summary: dict[str, Any], out: Path) -> Path:
    from longmix.eval.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, r in enumerate(summary["arms"]):
        if not r.get("training"):
            continue
        c = r["training"]["curve"]
        ax.plot([p["step"] for p in c], [p["loss"] for p in c], color=f"C{k % 10}", lw=1.2,
                label=f"{r['label']} (seed {r['seed']})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats)")
    ax.set_title(f"{summary['suite']}: training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _position_curves(summary: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Binned loss by position per arm, the mean over its seeds (and the base's), when the runs share their bins:
    one readable line per arm where the loss-vs-context plot draws one per run with its fit."""
    runs = ([("base (no continued training)", summary["base"]["eval"])] if summary.get("base") else []) + \
        [(r["label"], r["eval"]) for r in summary["arms"]]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label, e in runs:
        if (e.get("bins") or {}).get("context"):
            groups[label].append(e["bins"])
    out = {}
    for label, bins in groups.items():
        if any(b["context"] != bins[0]["context"] for b in bins):
            return {}
        out[label] = (bins[0]["context"], [mean(b["loss"][i] for b in bins) for i in range(len(bins[0]["loss"]))])
    return out if len(out) > 1 else {}


def switch_section(summary: dict[str, Any]) -> list[str]:
    """Loss spike at the length switch and the steps to recover (the paper's curriculum figure), per run."""
    from longmix.ablate.verdicts import switch_spike

    rows = []
    for r in summary["arms"]:
        spike, back = switch_spike((r.get("training") or {}).get("curve") or [])
        if spike is not None:
            steps = back if back is not None else "not in run"
            rows.append(f"| {r['label']} (seed {r['seed']}) | {spike:+.3f} | {steps} |")
    if not rows:
        return []
    return ["## Loss at the length switch", "",
            "Training loss of the first step at the new length minus the mean of the 3 steps before it, and the "
            "optimizer steps until the loss is back at or under that mean.", "",
            "| run | spike (nats) | steps to recover |", "|---|---|---|", *rows, ""]


def write_report(summary: dict[str, Any], folder: Path) -> Path:
    from longmix.ablate.task_tables import dependency_section, task_sections
    from longmix.ablate.verdicts import judge, paired_table, verdict_table
    from longmix.eval.plots import plot_context_loss

    folder.mkdir(parents=True, exist_ok=True)
    summary["verdicts"] = [judge(summary, f) for f in summary.get("findings", [])]
    write_json(folder / "results.json", summary)
    curves = ([summary["base"]["eval"]] if summary.get("base") else []) + [r["eval"] for r in summary["arms"]]
    plot_context_loss(curves, folder / "context_loss.png")
    by_arm = _position_curves(summary)
    if by_arm:
        from longmix.eval.plots import plot_loss_by_position

        plot_loss_by_position(by_arm, folder / "loss_by_position.png", summary["suite"])
    trained = any(r.get("training") for r in summary["arms"])
    if trained:
        plot_curves(summary, folder / "training_curves.png")
    load_time = sorted({r["arm"] for r in summary["arms"] if r.get("load_time")})
    e = summary["eval"]
    md = [
        f"# Ablation: {summary['suite']}", "", summary["description"].strip(), "",
        f"Equal budget of {summary['train_tokens']:,} training tokens per arm; seeds {summary['seeds']}. "
        f"Loss vs context on {e['max_docs']} held-out documents of {e['max_len']} tokens "
        f"({', '.join(e['data'])}); each cell is the mean binned token loss (nats) over that context range, "
        "mean ± sd over seeds when there are several. Lower is better.", "",
        *([f"**No training happened for {', '.join(load_time)}**: each is the base checkpoint with its RoPE changed "
           "when loaded (`train: none`); its seeds are evaluation draws (other haystacks, needles and documents), "
           "not training runs.", ""] if load_time else []),
        results_table(summary), "",
        *verdict_table(summary),
        *paired_table(summary, summary.get("reference") or summary["arms"][0]["arm"],
                      summary.get("paired_metrics") or []),
        "![loss vs context](context_loss.png)", "",
        *(["![loss by position, mean over seeds per arm](loss_by_position.png)", ""] if by_arm else []),
        *(["![training curves](training_curves.png)", ""] if trained else []),
        *dependency_section(summary, folder), *switch_section(summary),
        *task_sections(summary, folder),
        "## Lineage (data recipe keys each arm's manifest differs in from the base)", "",
    ]
    for r in summary["arms"]:
        if r.get("load_time"):
            change = ", ".join(f"{k} {v}" for k, v in r["load_time"].items() if v is not None)
            md.append(f"- {r['arm']} (seed {r['seed']}): not trained; RoPE changed at load time ({change})")
            continue
        diffs = sorted({k for lin in r["lineage"] for k in lin["differs_from_base"]})
        md.append(f"- {r['arm']} (seed {r['seed']}): {', '.join(diffs) or 'nothing'}"
                  f"{' (cached)' if r.get('cached') else ''}")
    md += ["", f"Ran in {summary['seconds']:.0f} s (cached arms are not retrained)."]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    return folder


def rewrite_report(results: Path, update: dict[str, Any] | None = None) -> Path:
    """report.md, the verdicts and the plots again from a results.json alone (no model is loaded); ``update``
    replaces summary keys first (the suite's current findings, reference and paired metrics)."""
    import json

    from longmix.core.errors import UserError

    if not results.is_file():
        raise UserError(f"'{results}' not found (run the suite first)")
    return write_report({**json.loads(results.read_text()), **(update or {})}, results.parent)
