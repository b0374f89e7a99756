"""`longmix tokenizer train`: a BPE tokenizer from the corpus, read the way ingest reads it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longmix.core.errors import UserError

tokenizer_app = typer.Typer(no_args_is_help=True, help="Train or look at tokenizers.")
console = Console(stderr=True)


def _texts(inputs: list[Path], text_field: str, max_docs: int | None) -> Iterator[str]:
    from longmix.data.ingest.normalize import normalize_text
    from longmix.data.ingest.texts import read_texts

    for n, (_, text) in enumerate(read_texts(inputs, text_field), 1):
        yield normalize_text(text)
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
