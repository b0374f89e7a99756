"""`longmix ablate SUITE.yaml`: run an ablation suite and write its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def ablate(
    suite: Annotated[Path, typer.Argument(help="ablation suite (YAML), e.g. pipelines/ablations/data-mix.yaml")],
    quick: Annotated[bool, typer.Option("--quick", help="tiny budgets and a short eval: minutes, for CI")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="suite folder (default: the suite's)")] = None,
    nproc: Annotated[int, typer.Option(min=1, help="training ranks (one launch trains every arm)")] = 1,
    report_only: Annotated[bool, typer.Option("--report-only", help="rewrite report.md, verdicts and plots from "
                                              "the suite's results.json; train and evaluate nothing")] = False,
) -> None:
    """Run every arm of an ablation suite (cached arms are skipped) and write report.md, results.json, PNGs."""
    from longmix.ablate.runner import AblationRunner
    from longmix.ablate.suite import load_suite

    s = load_suite(suite, quick=quick)
    if report_only:
        from longmix.ablate.report import rewrite_report
        from longmix.eval.evaluations.context_loss import range_keys

        folder = (output.resolve() if output else s.resolve(s.output)) / "report"
        rewrite_report(folder / "results.json", {
            "findings": [f.model_dump(exclude_none=True) for f in s.findings],
            "reference": s.reference or s.arms[0].name,
            "paired_metrics": s.paired_metrics or [f"loss@{k}" for k in range_keys(s.eval.table_contexts)]})
        console.print(f"report in {folder / 'report.md'}")
        return
    summary = AblationRunner(s, output.resolve() if output else None, nproc=nproc).run()
    console.print(f"report in {Path(summary['output']) / 'report' / 'report.md'}")
