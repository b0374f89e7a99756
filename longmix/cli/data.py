"""`longmix build`, `longmix dedup`, `longmix demo-corpus`: the data flow from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longmix.core.errors import BuildFailed, UserError
from longmix.core.storage import is_uri

console = Console(stderr=True)


def build(
    recipe: Annotated[Path, typer.Argument(help="data recipe (YAML)")],
    executor: Annotated[str | None, typer.Option(help="local or ray (default: the recipe's)")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join, e.g. 10.0.0.1:6379 (default: RAY_ADDRESS, then the recipe's); "
             "implies --executor ray")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="parallel tasks (default: the recipe's)")] = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="override the recipe's output (a folder or a store URI: s3://bucket/run)")] = None,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="with --until filter: show what each filter would drop, write nothing")] = False,
) -> None:
    """Run a data recipe, resuming whatever finished before."""
    from longmix.cli.report_view import print_reports
    from longmix.data.flow import build as run_build
    from longmix.data.recipe import load_recipe

    overrides = {"output": output if is_uri(output) else str(Path(output).resolve())} if output else {}
    rec = load_recipe(recipe, overrides)
    try:
        reports = run_build(rec, until=until, executor=executor or ("ray" if address else None), workers=workers,
                            report_only=report_only, ray_address=address)
    except BuildFailed as exc:
        if exc.reports:  # what did finish explains what failed (e.g. ingest's quarantine counts)
            print_reports(exc.reports)
        raise
    print_reports(reports)
    if report_only:
        from longmix.cli.report_view import print_filter_preview

        print_filter_preview(reports["filter"], Console())
        return
    typer.echo(f"outputs in {rec.output}" if is_uri(rec.output) else f"outputs in {rec.output_dir}")  # stdout,
    # unwrapped: scripts read it


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
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS); implies "
                                                     "--executor ray")] = None,
    seed: Annotated[int, typer.Option(help="MinHash seed")] = 1,
    compression: Annotated[str, typer.Option(help="of the document shards written: zstd, lz4 or none")] = "zstd",
) -> None:
    """Exact + MinHash near-dedup of JSONL/Parquet files, on their own."""
    import os
    from contextlib import nullcontext

    from longmix.pipeline.executors import open_executor

    for p in inputs:
        if not p.exists():
            raise UserError(f"input '{p}' not found")
    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    # The local workers start now and load their libraries while this process imports the flow (~1 s).
    early = open_executor("local", workers or os.cpu_count() or 1) if executor == "local" and not address else None
    with early or nullcontext() as started:
        from longmix.cli.report_view import print_reports
        from longmix.core.recipe_io import parse_model
        from longmix.data.flow import build as run_build
        from longmix.data.recipe import Recipe

        data = {
            "name": "dedup", "output": str(output.resolve()), "seed": seed,
            "executor": {"kind": "ray" if address else executor, **({"workers": workers} if workers else {}),
                         **({"ray_address": address} if address else {})},
            "sources": [{"name": "input", "paths": [str(p.resolve()) for p in inputs],
                         "text_field": text_field, "id_field": id_field or None}],
            "stages": {"near_dedup": {"threshold": threshold, "num_perm": num_perm, "ngram": ngram,
                                      "keep": keep}},
            "documents": {"compression": compression},
        }
        rec = parse_model(Recipe, data, "dedup options")
        reports = run_build(rec, started=started)
    print_reports(reports)
    console.print(f"kept documents in {rec.output_dir / 'near_dedup' / 'shards'}; removed lists in "
                  f"{rec.output_dir}/*/removed.parquet")


def demo_corpus(out: Annotated[Path, typer.Argument(help="folder to write the corpus to")]) -> None:
    """Write the built-in demo corpus (text shipped with Python) as JSONL."""
    from longmix.data.demo_corpus import write_demo_corpus

    summary = write_demo_corpus(out)
    for name, s in summary["sources"].items():
        console.print(f"{name}: {s['docs']:,} documents, {s['chars'] / 1e6:.1f} M chars, {len(s['files'])} files")
    console.print(f"demo corpus (Python {summary['python']}) in {out}")


def demo_lowq(
    out: Annotated[Path, typer.Argument(help="folder to write the corpus to")],
    source: Annotated[list[Path], typer.Option(help="real text (JSONL files/folders): the junk is made from "
                                               "three quarters of its files, the quality model's data from the rest")],
    docs: Annotated[int, typer.Option(min=1, help="junk documents in corpus/")] = 600,
    classifier_docs: Annotated[int, typer.Option(min=1, help="junk documents in classifier/lq.jsonl")] = 300,
    seed: int = 0,
) -> None:
    """Write low-quality documents (word salad, boilerplate-heavy) made from real ones, of every length,
    for the data-mix ablation's quality axis."""
    from longmix.data.synthetic_lowq import write_lowq_corpus

    for p in source:
        if not p.exists():
            raise UserError(f"'{p}' not found")
    summary = write_lowq_corpus(out, source, docs, classifier_docs, seed)
    for name, f in summary["files"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(f["kinds"].items()))
        console.print(f"{name}: {f['docs']:,} documents ({kinds})")


def demo_longdep(
    out: Annotated[Path, typer.Argument(help="folder to write the corpus to")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json the distances are measured in")],
    filler: Annotated[list[Path], typer.Option(help="JSONL file(s)/folder(s) of real text around the planted pairs")],
    heldout_filler: Annotated[list[Path], typer.Option(help="other real text for heldout.jsonl")],
    docs: Annotated[int, typer.Option(min=1, help="training documents (train/part-*.jsonl)")] = 600,
    heldout_docs: Annotated[int, typer.Option(min=1, help="held-out documents (heldout.jsonl)")] = 24,
    slot: Annotated[int, typer.Option(min=16, help="tokens per slot; distances are whole slots")] = 32,
    slots: Annotated[int, typer.Option(min=2, help="slots per document")] = 62,
    distances: Annotated[str | None, typer.Option(
        help="comma-separated token distances, one pair each (default: 32,32,64,64,96,128,160,224,384,768,1152,"
             "1536,1920)")] = None,
    passage_words: Annotated[int, typer.Option(min=1, help="words per copied passage")] = 6,
    seed: int = 0,
) -> None:
    """Write documents with long-range dependencies at known token distances (repeated passages, facts used
    late), for the positional-encoding ablation and `longmix eval dependency-loss`."""
    from longmix.data.synthetic_longdep import write_longdep_corpus

    for p in [tokenizer, *filler, *heldout_filler]:
        if not p.exists():
            raise UserError(f"'{p}' not found")
    from longmix.data.synthetic_longdep import DEFAULT_DISTANCES

    try:
        dist = tuple(int(x) for x in distances.split(",")) if distances else DEFAULT_DISTANCES
    except ValueError:
        raise UserError(f"--distances must be comma-separated integers, got {distances!r}") from None
    if min(dist) < slot or max(dist) > (slots - 1) * slot:
        raise UserError(f"--distances must lie within {slot}..{(slots - 1) * slot} ({slots} slots of {slot} tokens)")
    summary = write_longdep_corpus(out, tokenizer, filler, heldout_filler, docs, heldout_docs, seed, slot, slots,
                                   dist, passage_words=passage_words)
    worst = max(f["max_distance_error"] for f in summary["files"].values())
    console.print(f"{docs:,} + {heldout_docs:,} documents of {slots} x {slot} tokens, distances "
                  f"{summary['distances']} (largest deviation {worst} tokens) in {out}")
