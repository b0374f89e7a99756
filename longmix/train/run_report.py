"""`longmix report RUN`: a training run's curves as PNGs and a markdown summary, from metrics.jsonl alone (for
people who run no tracker, and for a run folder copied off a cluster)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError

# (file stem, title, metrics.jsonl key(s) of training steps, y label)
CURVES = [
    ("loss", "training loss", "loss", "loss (nats/token)"),
    ("lr", "learning rate", "lr", "learning rate"),
    ("tokens_per_s", "throughput", "tokens_per_s", "tokens/s"),
    ("grad_norm", "gradient norm", "grad_norm", "global grad norm"),
]
BREAKDOWNS = [("loss_by_source", "loss by source"), ("loss_by_bucket", "loss by length bucket"),
              ("eval_loss_by_band", "held-out loss by position band")]


def read_run(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl; pass a training run folder (the recipe's `output:`)")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n} is not a JSON line; the file was edited or cut short") from None
    if not any("loss" in r for r in records):
        raise UserError(f"{path} holds no training steps yet")
    return records


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def write_report(run: Path, out: Path | None = None) -> Path:
    """PNGs and report.md into `out` (default <run>/report); returns the markdown's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longmix.core.atomic import atomic_path

    records = read_run(run)
    out = out or run / "report"
    out.mkdir(parents=True, exist_ok=True)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    warnings = [r for r in records if "warning" in r]
    stopped = [r for r in records if "stopped" in r]
    images = []

    def save(fig: Any, stem: str) -> None:
        fig.tight_layout()
        with atomic_path(out / f"{stem}.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        images.append(stem)

    for stem, title, key, ylabel in CURVES:
        pts = [(r["step"], r[key]) for r in steps if _finite(r.get(key))]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        ax.plot(*zip(*pts, strict=True), label="train")
        if key == "loss" and evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="held out")
            ax.legend()
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        save(fig, stem)
    for key, title in BREAKDOWNS:
        rows = [r for r in (evals if key.startswith("eval_") else steps) if isinstance(r.get(key), dict)]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        for name in sorted({k for r in rows for k in r[key]}):
            pts = [(r["step"], r[key][name]) for r in rows if _finite(r[key].get(name))]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=name)
        ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
        ax.legend(fontsize="small")
        save(fig, key)

    last = steps[-1]
    finite = [r["loss"] for r in steps if _finite(r.get("loss"))]
    lines = [f"# Training run {run.name}", "",
             f"- steps logged: {len(steps)} of {last.get('total_steps', '?')} (last step {last['step']})",
             f"- loss: first {finite[0]:.4f}, last {finite[-1]:.4f}, lowest {min(finite):.4f}" if finite else
             "- loss: never finite",
             f"- held-out loss: {evals[-1]['eval_loss']:.4f} at step {evals[-1]['step']}" if evals else
             "- held-out loss: not evaluated",
             f"- throughput (last step): {last.get('tokens_per_s', 0):,.0f} tokens/s"
             + (f", MFU {last['mfu'] * 100:.1f}%" if _finite(last.get("mfu")) else ""),
             f"- warnings: {len(warnings)}" + "".join(f"\n  - step {w['step']}: {w['detail']}" for w in warnings[:20]),
             ]
    if stopped:
        lines.append(f"- **stopped**: {stopped[-1]['stopped']}")
    lines += [""] + [f"![{stem}]({stem}.png)" for stem in images] + [""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out / "report.md"
