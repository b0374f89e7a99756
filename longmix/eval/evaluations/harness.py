"""Standard benchmarks through lm-evaluation-harness (`longmix eval harness`; a suite's `eval.harness`). It
loads the checkpoint folder its own way, so it runs on the folder, not on a loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import Field
from rich.table import Table

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict
from longmix.eval.evaluation import Evaluation, SuiteRun, checkpoint_name
from longmix.eval.evaluations.options import TrustCode, console, out_console


class HarnessSpec(Strict):
    """lm-evaluation-harness tasks per arm (longmix eval harness): short-task retention beside the long-context
    numbers. Offline, only tasks over local data run (`include_path`, docs/evaluation.md)."""

    tasks: list[str] = Field(min_length=1)
    include_path: list[str] | None = Field(None, description="folders of task YAMLs (relative to the suite)")
    limit: int | None = Field(None, ge=1, description="documents per task (default: all)")
    num_fewshot: int | None = Field(None, ge=0)


def run(checkpoint: Path, h: HarnessSpec, ctx: SuiteRun) -> dict[str, Any]:
    from longmix.eval.harness import run_harness

    return run_harness(checkpoint, h.tasks, include_path=[ctx.resolve(p) for p in h.include_path or []],
                       limit=h.limit, num_fewshot=h.num_fewshot, seed=ctx.seed)


def cli(
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
        results.append({"name": checkpoint_name(ckpt, taken), **res})
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


EVALUATION = Evaluation("harness", cli, spec=HarnessSpec, key="harness", run=run, on_folder=True)
