"""The `longmix` command line: one subcommand per step of the flow."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longmix.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="longmix: long-context data mixes, training and evaluation.")
console = Console(stderr=True)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="data recipe (YAML)")],
    executor: Annotated[str | None, typer.Option(help="local or ray (default: the recipe's)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="parallel tasks (default: the recipe's)")] = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="override the recipe's output")] = None,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="with --until filter: show what each filter would drop, write nothing")] = False,
) -> None:
    """Run a data recipe, resuming whatever finished before."""
    from longmix.config import load_recipe
    from longmix.pipeline.build import build as run_build
    from longmix.report_view import print_reports

    overrides = {"output": str(output.resolve())} if output else {}
    rec = load_recipe(recipe, overrides)
    reports = run_build(rec, until=until, executor=executor, workers=workers, report_only=report_only)
    print_reports(reports)
    if report_only:
        from longmix.data.filters.dry_run import print_report_only

        print_report_only(reports["filter"], Console())
        return
    console.print(f"outputs in {rec.output_dir}")


@app.command()
def dedup(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL (.gz/.zst) or Parquet files")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder")],
    threshold: Annotated[float, typer.Option(help="Jaccard threshold of word n-gram sets")] = 0.8,
    num_perm: Annotated[int, typer.Option(help="MinHash permutations")] = 128,
    ngram: Annotated[int, typer.Option(help="words per shingle")] = 5,
    keep: Annotated[str, typer.Option(help="which duplicate to keep: longest or source_priority")] = "longest",
    text_field: Annotated[str, typer.Option(help="field holding the text")] = "text",
    id_field: Annotated[str, typer.Option(help="field holding the id ('' for none)")] = "id",
    workers: Annotated[int | None, typer.Option(min=1, help="parallel tasks (default: all cores)")] = None,
    executor: Annotated[str, typer.Option(help="local or ray")] = "local",
    seed: Annotated[int, typer.Option(help="MinHash seed")] = 1,
) -> None:
    """Exact + MinHash near-dedup of JSONL/Parquet files, on their own."""
    from longmix.config import Recipe, parse_model
    from longmix.pipeline.build import build as run_build
    from longmix.report_view import print_reports

    for p in inputs:
        if not p.exists():
            raise UserError(f"input '{p}' not found")
    data = {
        "name": "dedup", "output": str(output.resolve()), "seed": seed,
        "executor": {"kind": executor, **({"workers": workers} if workers else {})},
        "sources": [{"name": "input", "paths": [str(p.resolve()) for p in inputs],
                     "text_field": text_field, "id_field": id_field or None}],
        "stages": {"near_dedup": {"threshold": threshold, "num_perm": num_perm, "ngram": ngram, "keep": keep}},
    }
    rec = parse_model(Recipe, data, "dedup options")
    reports = run_build(rec)
    print_reports(reports)
    console.print(f"kept documents in {rec.output_dir / 'near_dedup' / 'shards'}; removed lists in "
                  f"{rec.output_dir}/*/removed.parquet")


@app.command("demo-corpus")
def demo_corpus(out: Annotated[Path, typer.Argument(help="folder to write the corpus to")]) -> None:
    """Write the built-in demo corpus (text shipped with Python) as JSONL."""
    from longmix.data.demo_corpus import write_demo_corpus

    summary = write_demo_corpus(out)
    for name, s in summary["sources"].items():
        console.print(f"{name}: {s['docs']:,} documents, {s['chars'] / 1e6:.1f} M chars, {len(s['files'])} files")
    console.print(f"demo corpus (Python {summary['python']}) in {out}")


def _mount_subapps() -> None:
    from longmix.data.filters.commands import langid_app, quality_app

    app.add_typer(quality_app, name="quality")
    app.add_typer(langid_app, name="langid")
    from longmix.data.mix_commands import inspect, tokenizer_app, verify

    app.add_typer(tokenizer_app, name="tokenizer")
    app.command("verify")(verify)
    app.command("inspect")(inspect)
    from longmix.eval.commands import eval_app

    app.add_typer(eval_app, name="eval")
    from longmix.train.model_commands import model_app

    app.add_typer(model_app, name="model")
    from longmix.ablate.commands import ablate

    app.command("ablate")(ablate)


_mount_subapps()


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="training recipe (YAML), e.g. train/demo-short.yaml")],
    nproc: Annotated[int, typer.Option(min=1, help="local processes to launch (ignored under a launcher)")] = 1,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="override the recipe's run folder")] = None,
    stop_at_step: Annotated[int | None, typer.Option(min=1, help="checkpoint and stop after this step "
                                                     "(the schedule still spans the whole run)")] = None,
) -> None:
    """Continual pretraining with DeepSpeed ZeRO-3 from packed-shard manifests; resumes from the newest checkpoint."""
    from longmix.train.launch import launch, under_launcher
    from longmix.train.recipe import load_train_recipe

    overrides = {"output": str(output.resolve())} if output else {}
    rec = load_train_recipe(recipe, overrides)  # validate before spawning ranks: one clear error, not N
    if not under_launcher():
        from longmix.train.preflight import preflight

        preflight(rec, nproc)
        extra = (["--output", overrides["output"]] if output else []) + \
            (["--stop-at-step", str(stop_at_step)] if stop_at_step else [])
        rc = launch(recipe, nproc, extra)
        if rc:
            console.print(f"[red]error:[/red] training exited with code {rc} (see the rank logs above)")
            sys.exit(rc)
        return
    from longmix.train.trainer import train as run_train

    run_train(rec, stop_at_step)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="run folder, its checkpoints/ folder, or a step_* folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HF checkpoint folder to write")],
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16")] = "float32",
) -> None:
    """Write a consolidated safetensors HF checkpoint (from_pretrained-ready) from a training checkpoint."""
    from longmix.train.export import export as run_export

    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16, not {dtype!r}")
    folder = run_export(checkpoint, output, dtype)
    console.print(f"exported {folder} to {output}")


def main() -> None:
    try:
        app()
    except UserError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
