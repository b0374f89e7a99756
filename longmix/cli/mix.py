"""CLI commands of the mix side: `tokenizer train`, `verify`, `inspect`."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longmix.core.errors import UserError

tokenizer_app = typer.Typer(no_args_is_help=True, help="Train or look at tokenizers.")
console = Console(stderr=True)


def _texts(inputs: list[Path], text_field: str, max_docs: int | None) -> Iterator[str]:
    from longmix.data.ingest.normalize import normalize_text
    from longmix.data.ingest.readers import Good, expand_input, read_records

    n = 0
    for path in inputs:
        for f, fmt in expand_input(path):
            for rec in read_records(f, fmt, text_field):
                if isinstance(rec, Good):
                    yield normalize_text(rec.text)
                    n += 1
                    if max_docs and n >= max_docs:
                        return


@tokenizer_app.command("train")
def tokenizer_train(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL/Parquet files or folders of them (or of .txt)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="tokenizer.json to write")],
    vocab_size: Annotated[int, typer.Option(min=260, help="vocabulary size, special tokens included")] = 8192,
    text_field: Annotated[str, typer.Option(help="field holding the text")] = "text",
    max_docs: Annotated[int | None, typer.Option(min=1, help="train on at most this many documents")] = None,
) -> None:
    """Train a byte-level BPE tokenizer (<s>, </s>, <pad>) on the spot; real runs bring their model's own."""
    from longmix.data.tokenize.encode import train_bpe

    for p in inputs:
        if not p.exists():
            raise UserError(f"input '{p}' not found")
    seen = [0]

    def counted() -> Iterator[str]:
        for text in _texts(inputs, text_field, max_docs):
            if text.strip():
                seen[0] += 1
                yield text

    tok = train_bpe(counted(), vocab_size, None)
    if not seen[0]:
        raise UserError(f"no usable text in {', '.join(map(str, inputs))} (text field '{text_field}'); "
                        "nothing written")
    from longmix.data.tokenize.encode import save_tokenizer

    save_tokenizer(tok, output)
    got = tok.get_vocab_size()
    if got < 0.9 * vocab_size:
        console.print(f"[yellow]warning:[/yellow] the vocabulary came out at {got:,} of the {vocab_size:,} asked "
                      f"for: {seen[0]:,} documents hold too little distinct text", highlight=False)
    typer.echo(f"tokenizer with {got:,} tokens (from {seen[0]:,} documents) written to {output}")


def verify(manifest: Annotated[str, typer.Argument(help="manifest.json (a path or a store URI)")]) -> None:
    """Check every shard of a manifest against its sha256, schema and row invariants."""
    from longmix.core.storage import is_uri
    from longmix.formats.manifest import verify_manifest
    from longmix.formats.staging import verify_store_manifest

    m = verify_store_manifest(manifest) if is_uri(manifest) else verify_manifest(manifest)
    typer.echo(f"ok: {len(m.shards)} shards, {m.totals.sequences:,} sequences, {m.totals.tokens:,} tokens "
               f"verified against {manifest}")  # the verdict scripts read: stdout


def inspect(
    manifest: Annotated[Path, typer.Argument(help="manifest.json")],
    plots: Annotated[Path | None, typer.Option("--plots", help="folder for PNG plots (default: beside it)")] = None,
) -> None:
    """Print the mix table (target vs achieved per source x bucket) and write plots."""
    from longmix.cli.report_view import stdout_console
    from longmix.data.mix.inspect import inspect as run_inspect
    from longmix.formats.manifest import load_manifest

    m = load_manifest(manifest)
    written = run_inspect(m, manifest, plots or manifest.parent / "plots", stdout_console())
    console.print("plots: " + ", ".join(str(p) for p in written))


class ExportFormat(str, Enum):
    mds = "mds"
    megatron = "megatron"
    hf = "hf"
    olmo = "olmo"


class TokenType(str, Enum):
    auto = "auto"
    uint16 = "uint16"
    uint32 = "uint32"
    uint64 = "uint64"
    int32 = "int32"
    int64 = "int64"


def export_data(
    manifest: Annotated[str, typer.Argument(help="manifest.json of a built mix (a path or a store URI)")],
    to: Annotated[ExportFormat, typer.Option("--to", help="mds: MosaicML streaming shards (ProLong's columns); "
                                             "megatron: an indexed dataset (.bin + .idx); hf: a `datasets` folder "
                                             "(Parquet + card); olmo: OLMo-core token files + document indices")],
    output: Annotated[str, typer.Option("--output", "-o", help="folder (or store URI) for the files")],
    dtype: Annotated[TokenType, typer.Option("--dtype", help="token id type; auto: the format's own choice "
                                             "for the vocabulary")] = TokenType.auto,
) -> None:
    """Write a mix in another trainer's format, with the mix's lineage beside it (docs/interop.md)."""
    from longmix.core.storage import is_uri
    from longmix.formats.export.run import export_mix
    from longmix.formats.manifest import verify_manifest
    from longmix.formats.staging import stage_manifest

    local = stage_manifest(manifest) if is_uri(manifest) else Path(manifest)
    m = verify_manifest(local)  # an unverifiable manifest is one line before anything is written
    summary = export_mix(local, m, to.value, output, dtype.value,
                         say=lambda line: console.print(line, highlight=False))
    console.print(f"exported {summary['rows']:,} rows, {summary['documents']:,} documents, {summary['tokens']:,} "
                  f"tokens ({summary['dtype']}) of {manifest} as {to.value} to {output}", highlight=False)
