"""Console rendering of stage reports (rich)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from longmix.data.flow import FLOW
from longmix.pipeline.report import StageReport


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
    for stage in FLOW:  # each stage's own summary lines (plain text), in flow order; its warnings in red
        if stage.name in reports and not reports[stage.name].get("report_only"):
            report = StageReport.from_json(reports[stage.name])
            for line in stage.summary(report):
                console.print(line, markup=False)
            for line in stage.warnings(report):
                console.print(line, style="red", markup=False)


def print_filter_preview(report: dict[str, Any], console: Console | None = None) -> None:
    """The filter stage's report-only preview (data/filters/dry_run.py): per source, what each filter trips
    and would drop, then sample dropped documents."""
    console = console or Console()
    for src, entry in report["filters"].items():
        c = report["sources"][src]
        table = Table(title=f"{src}: {c['in']:,} documents, {entry['chars'] / 1e6:,.2f} M chars; would keep "
                            f"{c['kept']:,}", title_justify="left")
        for col in ("filter", "trips", "trips % chars", "would drop", "drop % chars"):
            table.add_column(col, justify="left" if col == "filter" else "right")
        for name, f in entry["filters"].items():
            table.add_row(name, f"{f['trips']:,}", f"{100 * f['trips_share']:.2f}", f"{f['drops']:,}",
                          f"{100 * f['drops_share']:.2f}")
        console.print(table)
    for reason, rows in report["samples"].items():
        console.print(f"sample documents dropped by {reason}", style="bold", markup=False)
        for r in rows:
            snippet = r["snippet"].replace("\n", "\\n")
            console.print(f"  {r['source']}/{r['id']} ({r['n_chars']:,} chars, value {r['value']:.4g}): {snippet}",
                          highlight=False, markup=False, soft_wrap=True)
    console.print("report only: nothing was written; drop --report-only to run the stage")


def mix_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    """`longmix inspect`'s mix table (data/mix/inspect.py gives its rows)."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in ("source", "bucket") else "right")
    for row in rows:
        table.add_row(*row)
    return table
