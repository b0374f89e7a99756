"""Matplotlib PNGs of the evaluation results (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    _plt().close(fig)
    return out


def plot_context_loss(results: list[dict[str, Any]], out: Path) -> Path:
    """Binned loss vs context length (log x) with standard-error bars and each checkpoint's fitted curve;
    several checkpoints share the axes (the comparison overlay)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, res in enumerate(results):
        color = f"C{k}"
        b = res["bins"]
        x, y = np.asarray(b["context"]), np.asarray(b["loss"])
        se = np.asarray([0.0 if v is None else v for v in b["se"]])
        ax.errorbar(x, y, yerr=se, fmt="o", ms=3, color=color, alpha=0.8, label=f"{res['name']} ({res['n_docs']} docs)")
        fit = res.get("fit")
        if fit:
            xs = np.geomspace(max(x.min(), res.get("fit_min_context", 1)), x.max(), 200)  # the fitted range only
            ys = (fit["alpha"] / xs) ** fit["beta"] + fit["gamma"]
            ax.plot(xs, ys, "-", color=color, lw=1.2,
                    label=f"fit ({fit['alpha']:.3g}/c)^{fit['beta']:.2f} + {fit['gamma']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("context length c (tokens before the predicted token)")
    ax.set_ylabel("token loss (nats)")
    ax.set_title("Loss vs context length, L(c) = (α/c)^β + γ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_context_gain(results: list[dict[str, Any]], out: Path) -> Path:
    """Mean context gain (short-context minus full-context loss) vs context length, one curve per checkpoint."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, r in enumerate(results):
        b = r["bins"]
        se = [s if s is not None else 0.0 for s in b["gain_se"]]
        ax.errorbar(b["context"], b["gain"], yerr=se, fmt="o-", ms=3, color=f"C{k}",
                    label=f"{r['name']} (mean {r['mean_gain']:.3f}, key tokens {r['key_token_share']:.1%})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("context length c (tokens before the predicted token)")
    ax.set_ylabel(f"gain over the last {results[0]['window']} tokens (nats)")
    ax.set_title("Context gain: loss(last W tokens) - loss(full context)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)


def heatmap(grid: Any, rows: list[str], cols: list[str], title: str, out: Path, vmax: float = 1.0,
            ylabel: str = "depth") -> Path:
    """A rows x columns heatmap in [0, vmax] (red to green), values written in the cells."""
    plt = _plt()
    grid = np.asarray(grid, dtype=float)
    label = max((len(r) for r in rows), default=0)  # room for the row labels (arm names can be long)
    fig, ax = plt.subplots(figsize=(2.6 + 0.9 * len(cols) + 0.08 * label, 1.2 + 0.5 * len(rows)))
    im = ax.imshow(grid, vmin=0, vmax=vmax, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    fmt = "{:.2f}" if vmax <= 1 else "{:.0f}"
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, fmt.format(grid[i, j]), ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, out)


def plot_probe_heatmap(task: str, summary: dict[str, Any], metric: str, out: Path) -> Path:
    """Depth (rows) x length (columns) heatmap of a probe metric in [0, 1]."""
    return heatmap(summary[metric], [f"{d:.0%}" for d in summary["depths"]], [str(L) for L in summary["lengths"]],
                   f"{task}: {metric}", out)


def plot_ruler(summary: dict[str, Any], out: Path, name: str = "") -> Path:
    """Task (rows, plus the mean) x length heatmap of RULER scores in [0, 100]."""
    rows = [*summary["tasks"], "mean"]
    grid = [summary["table"][t] for t in summary["tasks"]] + [summary["mean"]]
    eff = summary["effective_length"]
    title = f"RULER {name} (effective length {eff if eff else 'none'} at > {summary['threshold']:g})".replace("  ", " ")
    return heatmap(grid, rows, [str(L) for L in summary["lengths"]], title, out, vmax=100.0, ylabel="task")


def plot_rope(analysis: dict[str, Any], out: Path) -> Path:
    """The decay bound (the paper's Fig. 4) and the expected score of each RoPE variant vs distance."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.asarray(analysis["distances"])
    for k, v in enumerate(analysis["variants"]):
        label = f"{v['name']} (granularity {v['granularity']:.3g})"
        axes[0].plot(x[1:], np.asarray(v["decay_bound"])[1:], color=f"C{k}", lw=1, label=label)
        axes[1].plot(x[1:], np.asarray(v["expected_score"])[1:], color=f"C{k}", lw=1, label=v["name"])
    axes[0].set_title(f"relative upper bound of the attention score (head dim {analysis['head_dim']})")
    axes[1].set_title("expected score, q = k (1 at distance 0)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("relative distance (tokens)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    return _save(fig, out)


def plot_dependency_gap(distances: list[int], gaps: dict[str, list[float]], out: Path, title: str = "") -> Path:
    """Target minus source loss of planted dependencies vs distance, one line per model (0: the copy unused)."""
    return _lines_log2({label: (distances, ys) for label, ys in gaps.items()}, out, (7, 4.5),
                       "distance back to the source (tokens)", "target loss - source loss (nats)",
                       f"{title}: use of distant context" if title else "use of distant context", zero_line=True)


def plot_loss_by_position(curves: dict[str, tuple[list[float], list[float]]], out: Path, title: str = "",
                          marks: dict[str, float] | None = None) -> Path:
    """Binned token loss vs context position, one line per model (``curves``: label -> (positions, losses)),
    without fits, with optional vertical marks (e.g. the window a model was trained to)."""
    return _lines_log2(curves, out, (8, 4.8), "context position (tokens before the predicted token)",
                       "token loss (nats)", f"{title}: loss by position" if title else "loss by position", marks=marks)


def _lines_log2(curves: dict[str, tuple[list, list]], out: Path, size: tuple[float, float], xlabel: str,
                ylabel: str, title: str, zero_line: bool = False, marks: dict[str, float] | None = None) -> Path:
    """One marked line per model over a log-2 x axis (token distances and positions)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    for k, (label, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", ms=3, color=f"C{k % 10}", lw=1.4, label=label)
    if zero_line:
        ax.axhline(0.0, color="0.4", ls="--", lw=1.0)
    for text, x in (marks or {}).items():
        ax.axvline(x, color="0.4", ls="--", lw=1.0)
        ax.text(x, ax.get_ylim()[1], f" {text}", va="top", fontsize=8, color="0.3")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_harness(results: list[dict[str, Any]], out: Path) -> Path:
    """Each task's first metric per checkpoint, with its standard error: lm-eval's numbers at a glance."""
    plt = _plt()
    tasks = sorted({t for r in results for t in r["tasks"]})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(tasks) * len(results)), 3.6))
    width = 0.8 / max(1, len(results))
    for i, r in enumerate(results):
        vals, errs = [], []
        for t in tasks:
            entry = r["tasks"].get(t, {"metrics": {}, "stderr": {}})
            metric = next(iter(entry["metrics"]), None)
            vals.append(entry["metrics"].get(metric, np.nan) if metric else np.nan)
            errs.append(entry["stderr"].get(metric, 0.0) if metric else 0.0)
        ax.bar(np.arange(len(tasks)) + i * width, vals, width, yerr=errs, capsize=3, label=r["name"])
    ax.set_xticks(np.arange(len(tasks)) + width * (len(results) - 1) / 2)
    ax.set_xticklabels([f"{t}\n({next(iter(results[0]['tasks'].get(t, {}).get('metrics', {})), '')})"
                        for t in tasks], fontsize=8)
    ax.set_ylabel("score (lm-eval)")
    ax.set_title("lm-evaluation-harness tasks")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_longqa_depth(results: list[dict[str, Any]], out: Path, metric: str = "f1") -> Path:
    """Long-QA score by evidence depth bin, one line per checkpoint, with each bin's 95% bootstrap interval
    (bins without examples left out)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, r in enumerate(results):
        s = r["summary"]
        pts = [(b, b[metric], b[f"{metric}_ci"]) for b in s["by_depth"] if b["n"]]
        if not pts:
            continue
        x = [(b["lo"] + b["hi"]) / 2 for b, _, _ in pts]
        y = [v for _, v, _ in pts]
        err = np.asarray([[v - ci[0] for _, v, ci in pts], [ci[1] - v for _, v, ci in pts]])
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=4, capsize=3, color=f"C{k % 10}",
                    label=f"{r['name']} (mean {s[metric]:.3f}, n={s['n']})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("evidence depth in the document (bin middle)")
    ax.set_ylabel(f"{metric} (95% bootstrap interval)")
    ax.set_title(f"Held-out long QA: {metric} by evidence depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)
