"""Console rendering of stage reports (rich)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


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
    mix = reports.get("mix")
    if mix:
        for sf in mix["mix"]["shortfalls"]:
            console.print(f"[red]SHORTFALL[/red] {sf['message']}")
    pack = reports.get("pack")
    if pack:
        p = pack["packing"]
        console.print(f"packed {p['rows']:,} sequences of {p['seq_len']:,} tokens ({p['strategy']}, padding "
                      f"{p['padding_share']:.2%}); manifest: {pack['manifest']}")
    nd = reports.get("near_dedup")
    if nd:
        c, lsh = nd["clustering"], nd["lsh"]
        console.print(f"near-dedup: {c['clusters']:,} clusters over {c['docs_in_clusters']:,} documents "
                      f"(largest {c['largest_cluster']}), bands x rows = {lsh['bands']} x {lsh['rows']}, "
                      f"threshold {lsh['threshold']}")
