"""`longmix sft-data`: self-instruct long-QA examples from long documents with an instruction-tuned generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from longmix.core.errors import UserError


def sft_data(
    recipe: Annotated[Path | None, typer.Argument(help="sft-data recipe (YAML); options override its keys")] = None,
    input: Annotated[list[Path] | None, typer.Option(
        "--input", "-i", help="JSONL/Parquet files or folders of long documents (`text`, optional `id`)")] = None,
    section_separator: Annotated[str | None, typer.Option(
        help="join records named <doc id><separator><section> into one document each (e.g. ':')")] = None,
    generator: Annotated[Path | None, typer.Option(help="instruction-tuned HF model folder (chat template)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="output folder")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of cuts, chunks, styles, sampling, held-out split")] = None,
    min_tokens: Annotated[int | None, typer.Option(help="drop documents shorter than this (tokens)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="drop documents longer than this (tokens)")] = None,
    target_tokens: Annotated[int | None, typer.Option(help="cut each document to this many tokens")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="the passage the generator asks about (tokens)")] = None,
    style: Annotated[list[str] | None, typer.Option(help="question styles: factual, summary, where")] = None,
    questions_per_doc: Annotated[int | None, typer.Option(help="questions per document")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="longest generated reply (tokens)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="prompts generated together")] = None,
    min_support: Annotated[float | None, typer.Option(help="keep answers whose content words the chunk has")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="keep answers the model re-answers alike (F1)")] = None,
    heldout_fraction: Annotated[float | None, typer.Option(help="documents held out for evaluation")] = None,
    docs_per_shard: Annotated[int | None, typer.Option(help="documents per resumable shard")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = None,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="allow a generator folder's own model code")] = False,
) -> None:
    """Generate long-QA SFT examples (longqa.jsonl, heldout.jsonl, report.json), resuming finished shards."""
    from longmix.data.sft.run import prepare, run

    options = {"input": input or None, "section_separator": section_separator, "generator": generator,
               "output": output, "seed": seed,
               "min_tokens": min_tokens, "max_tokens": max_tokens, "target_tokens": target_tokens,
               "chunk_tokens": chunk_tokens, "styles": style or None, "questions_per_doc": questions_per_doc,
               "max_new_tokens": max_new_tokens, "batch_size": batch_size, "min_support": min_support,
               "min_agreement": min_agreement, "heldout_fraction": heldout_fraction,
               "docs_per_shard": docs_per_shard, "device": device, "trust_remote_code": trust_remote_code or None}
    settings = settings_of(recipe, {k: v for k, v in options.items() if v is not None})
    report = run(prepare(settings))  # prepare checks everything before the model loads
    dropped = ", ".join(f"{r} {n}" for r, n in report["dropped"].items() if n) or "none"
    typer.echo(f"sft-data: {report['kept']} of {report['in']} questions kept (dropped: {dropped}); "
               f"{report['train_examples']} in {settings.output / 'longqa.jsonl'}, {report['heldout_examples']} "
               f"held out in {settings.output / 'heldout.jsonl'}")


def settings_of(recipe: Path | None, options: dict[str, Any] | None = None) -> Any:
    """The sft-data settings of a recipe (its relative paths from its folder), options overriding its keys."""
    from longmix.core.recipe_io import load_with_extends, parse_model
    from longmix.data.sft.settings import SftDataSettings

    data: dict[str, Any] = {}
    if recipe is not None:
        if not recipe.is_file():
            raise UserError(f"recipe '{recipe}' not found")
        data = _from_recipe_folder(load_with_extends(recipe), recipe.resolve().parent)
    data.update(options or {})
    return parse_model(SftDataSettings, data, str(recipe) if recipe else "sft-data options")


def _from_recipe_folder(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A recipe's relative paths start at its own folder, as in every longmix recipe (options: the shell's)."""
    def rel(p: Any) -> Any:
        relative = isinstance(p, str) and not Path(p).expanduser().is_absolute()
        return os.path.normpath(folder / p) if relative else p

    out = dict(data)
    for key in ("generator", "output"):
        if key in out:
            out[key] = rel(out[key])
    if isinstance(out.get("input"), list):
        out["input"] = [rel(p) for p in out["input"]]
    elif "input" in out:
        out["input"] = [rel(out["input"])]
    return out
