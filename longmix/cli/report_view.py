"""Console rendering of stage reports (rich)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from longmix.data.flow import FLOW


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def stage_table(reports: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="stage reports", title_justify="left")
    for col in ("stage", "in", "kept", "dropped", "quarantined", "MB out", "seconds"):
        table.add_column(col, justify="left" if col in ("stage", "dropped", "quarantined") else "right")
    for stage, r in reports.items():
        table.add_row(stage, f"{r['in']:,}", f"{r['kept']:,}", _reasons(r["dropped"]), _reasons(r["quarantined"]),
                      f"{r['bytes_out'] / 1e6:,.1f}", f"{r['seconds']:.1f}")
    return table


def source_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("source", "in", "kept", "dropped", "quarantined"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for src, c in report["sources"].items():
        table.add_row(src, *(f"{c[k]:,}" for k in ("in", "kept", "dropped", "quarantined")))
    return table


def stdout_console() -> Console:
    """Rich console for results; wide enough not to fold report rows when piped to a file."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_reports(reports: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    console = console or stdout_console()
    console.print(stage_table(reports))
    last = list(reports)[-1]
    console.print(source_table(reports[last], f"per source after {last}"))
    for stage in FLOW:  # each stage's own summary lines, in flow order
        if stage.name in reports and not reports[stage.name].get("report_only"):
            for line in stage.summary(reports[stage.name]):
                console.print(line)
