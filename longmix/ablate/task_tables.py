"""The task sections of an ablation report: RULER, probes, long QA and context gain per arm (and the base
model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _evals(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("base (no continued training)", summary["base"]["eval"])] if summary.get("base") else []
    return rows + [(f"{r['label']} (seed {r['seed']})", r["eval"]) for r in summary["arms"]]


def ruler_section(summary: dict[str, Any], folder: Path) -> list[str]:
    """RULER means per run, every cell per run, and one task x length heatmap per arm (the mean over its seeds:
    a load-time arm's seeds are its draws, so a cell there holds seeds x samples prompts)."""
    from longmix.eval.plots import heatmap, plot_ruler

    evals = [(n, e["ruler"]) for n, e in _evals(summary) if e.get("ruler")]
    if not evals:
        return []
    lengths = evals[0][1]["lengths"]
    tasks = evals[0][1]["tasks"]
    samples = ((summary.get("eval") or {}).get("ruler") or {}).get("samples")
    seeds = len(summary.get("seeds") or [1])
    lines = ["## RULER tasks", "",
             f"RULER-style synthetic tasks, score 0-100 (RULER's string_match_all), mean over {', '.join(tasks)}; "
             f"effective length: the longest length up to which every mean stays above {evals[0][1]['threshold']:g}."
             + (f" {samples} prompt(s) per task and length in each run, {samples * seeds} per cell of an arm's "
                f"heatmap (its {seeds} seed(s))." if samples else ""),
             "", "| arm | " + " | ".join(f"mean @ {L}" for L in lengths) + " | effective length |",
             "|" + "---|" * (len(lengths) + 2)]
    for name, r in evals:
        means = " | ".join(f"{v:.1f}" for v in r["mean"])
        lines.append(f"| {name} | {means} | {r['effective_length'] or '-'} |")
    lines += ["", "| arm | " + " | ".join(f"{t} @ {L}" for t in tasks for L in lengths) + " |",
              "|" + "---|" * (len(tasks) * len(lengths) + 1)]
    for name, r in evals:
        lines.append(f"| {name} | " + " | ".join(f"{v:.0f}" for t in tasks for v in r["table"][t]) + " |")
    lines.append("")
    by_arm = _ruler_by_arm(summary)
    heatmap([r["mean"] for _, r in by_arm], [name for name, _ in by_arm], [str(L) for L in lengths],
            "RULER mean by arm and length", folder / "ruler_arms.png", vmax=100.0,
            ylabel="arm")
    lines += ["![RULER mean by arm and length](ruler_arms.png)", ""]
    for i, (name, r) in enumerate(by_arm):
        png = f"ruler_{i}.png"
        plot_ruler(r, folder / png, name)
        lines.append(f"![RULER {name}]({png})")
    return lines + [""]


def _ruler_by_arm(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The base's RULER summary, then each arm's averaged over its seeds (same tasks and lengths in every run)."""
    from statistics import mean

    from longmix.eval.ruler_score import effective_length

    out = [("base (no continued training)", summary["base"]["eval"]["ruler"])] \
        if summary.get("base") and summary["base"]["eval"].get("ruler") else []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in summary["arms"]:
        if r["eval"].get("ruler"):
            groups.setdefault(r["label"], []).append(r["eval"]["ruler"])
    for label, runs in groups.items():
        first = runs[0]
        table = {t: [mean(run["table"][t][j] for run in runs) for j in range(len(first["lengths"]))]
                 for t in first["tasks"]}
        means = [mean(run["mean"][j] for run in runs) for j in range(len(first["lengths"]))]
        name = label + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        out.append((name, {**first, "table": table, "mean": means,
                           "effective_length": effective_length(dict(zip(first["lengths"], means, strict=True)),
                                                                first["threshold"])}))
    return out


def probes_section(summary: dict[str, Any]) -> list[str]:
    evals = [(n, e["probes"]) for n, e in _evals(summary) if e.get("probes")]
    if not evals:
        return []
    lines = ["## Retrieval probes", "", "Mean over depths per length: passkey exact match, first-sentence ROUGE-L.", ""]
    tasks = sorted(evals[0][1])
    lengths = evals[0][1][tasks[0]]["lengths"]
    lines += ["| arm | " + " | ".join(f"{t} @ {L}" for t in tasks for L in lengths) + " |",
              "|" + "---|" * (len(tasks) * len(lengths) + 1)]
    for name, p in evals:
        cells = []
        for t in tasks:
            grid = p[t]["exact" if t == "passkey" else "rouge_l"]
            cells += [f"{sum(row[j] for row in grid) / len(grid):.2f}" for j in range(len(lengths))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def gain_section(summary: dict[str, Any]) -> list[str]:
    evals = [(n, e["context_gain"]) for n, e in _evals(summary) if e.get("context_gain")]
    if not evals:
        return []
    g0 = evals[0][1]
    lines = ["## Context gain", "",
             f"Loss with the whole context minus loss with only the last {g0['window']} tokens, over tokens with more "
             f"context than that ({g0['n_docs']} documents of {g0['max_len']} tokens). Key tokens gain more than "
             f"{g0['key_gain']:g} nats and have a full-context loss under {g0['key_loss']:g} (LongPPL); higher gain "
             "means more use of distant context.", "",
             "| arm | full loss | short loss | mean gain | key tokens | key-token loss |", "|---|---|---|---|---|---|"]
    for name, g in evals:
        kl = f"{g['key_token_loss']:.3f}" if g["key_token_loss"] is not None else "-"
        lines.append(f"| {name} | {g['mean_full_loss']:.3f} | {g['mean_short_loss']:.3f} | {g['mean_gain']:.4f} | "
                     f"{g['key_token_share']:.2%} | {kl} |")
    return lines + [""]


def harness_section(summary: dict[str, Any]) -> list[str]:
    """lm-eval's numbers per arm: each task's metrics with their standard errors."""
    evals = [(n, e["harness"]) for n, e in _evals(summary) if e.get("harness")]
    if not evals:
        return []
    columns = [(t, m) for t, entry in evals[0][1]["tasks"].items() for m in entry["metrics"]]
    lines = ["## Standard tasks (lm-evaluation-harness)", "",
             f"lm-eval {evals[0][1]['lm_eval_version']}, HF backend, value ± standard error.", "",
             "| arm | " + " | ".join(f"{t} {m}" for t, m in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, h in evals:
        cells = []
        for t, m in columns:
            entry = h["tasks"].get(t, {"metrics": {}, "stderr": {}})
            v, se = entry["metrics"].get(m), entry["stderr"].get(m)
            cells.append("-" if v is None else f"{v:.3f}" + (f" ± {se:.3f}" if se is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def longqa_section(summary: dict[str, Any]) -> list[str]:
    """Held-out long QA per run: exact match, F1 (95% bootstrap interval over the examples) and ROUGE-L, and F1
    by where the evidence sits in the document."""
    evals = [(n, e["longqa"]) for n, e in _evals(summary) if e.get("longqa")]
    if not evals:
        return []
    bins = [b["bin"] for b in evals[0][1]["by_depth"]]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["## Held-out long QA", "",
             f"Questions about documents no run trained on, against the generator's checked answers; "
             f"{evals[0][1]['n']} examples scored ({evals[0][1]['skipped']} too long skipped). F1 by evidence depth "
             "(where the answer's chunk sits in the document).", "",
             "| run | EM | F1 [95%] | ROUGE-L | " + " | ".join(f"F1 @ {b}" for b in bins) + " |",
             "|" + "---|" * (len(bins) + 4)]
    for name, q in evals:
        ci = q.get("f1_ci")
        f1 = num(q["f1"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        lines.append(f"| {name} | {num(q['em'])} | {f1} | {num(q['rouge_l'])} | " +
                     " | ".join(num(b["f1"]) for b in q["by_depth"]) + " |")
    return lines + [""]


def task_sections(summary: dict[str, Any], folder: Path) -> list[str]:
    return ruler_section(summary, folder) + probes_section(summary) + longqa_section(summary) + \
        gain_section(summary) + harness_section(summary)


def dependency_section(summary: dict[str, Any], folder: Path) -> list[str]:
    """Loss on the planted dependency targets by distance, and the target minus its own source (the same text
    earlier in the document), mean over seeds per arm, with the plot of the latter."""
    from statistics import mean

    from longmix.eval.plots import plot_dependency_gap

    groups: dict[str, list[dict[str, Any]]] = {}
    if summary.get("base") and summary["base"]["eval"].get("dependency"):
        groups["base (no continued training)"] = [summary["base"]["eval"]["dependency"]]
    for r in summary["arms"]:
        if r["eval"].get("dependency"):
            groups.setdefault(r["label"], []).append(r["eval"]["dependency"])
    if not groups:
        return []
    first = next(iter(groups.values()))[0]
    distances = [row["distance"] for row in first["by_distance"]]
    target, gap = {}, {}
    for label, runs in groups.items():
        target[label] = [mean(run["by_distance"][i]["target_loss"] for run in runs) for i in range(len(distances))]
        gap[label] = [mean(run["by_distance"][i]["target_loss"] - run["by_distance"][i]["source_loss"]
                           for run in runs) for i in range(len(distances))]
    head = "| model | " + " | ".join(f"d={d}" for d in distances) + " |"
    rule = "|" + "---|" * (len(distances) + 1)
    lines = ["## Loss on long-range dependencies, by distance", "",
             f"Loss (nats) on the planted targets of {first['n_docs']} held-out documents (copied passages "
             f"without their first {first['skip_repeat']} tokens, and facts' digits), by the distance back to "
             "their source; mean over seeds.", "", head, rule]
    lines += [f"| {label} | " + " | ".join(f"{v:.2f}" for v in c) + " |" for label, c in target.items()]
    lines += ["", "Target minus source: the same text where it first appears, earlier in the document, where "
              "nothing predicts it. A model that uses context that far back is far below 0 (SmolLM2-135M: "
              "-2 to -6 nats); about 0 means the earlier copy went unused, and above 0 means the later "
              "position itself costs loss.", "", head, rule]
    lines += [f"| {label} | " + " | ".join(f"{v:+.3f}" for v in c) + " |" for label, c in gap.items()]
    plot_dependency_gap(distances, gap, folder / "dependency_loss.png", summary["suite"])
    return lines + ["", "![dependency loss by distance](dependency_loss.png)", ""]
