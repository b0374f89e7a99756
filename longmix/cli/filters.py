"""`longmix quality train|eval` and `longmix langid train` (typer sub-apps mounted by longmix.cli).

Heavy imports (fasttext, pyarrow) stay inside the commands so `longmix --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from longmix.core.errors import UserError

console = Console(stderr=True)
quality_app = typer.Typer(no_args_is_help=True, help="fastText quality classifier: train and evaluate.")
langid_app = typer.Typer(no_args_is_help=True, help="fastText language-ID model: train a small one.")

_Files = Annotated[list[str], typer.Option(help="JSONL/Parquet file, text folder or glob (repeatable)")]
_Out = Annotated[Path, typer.Option("--output", "-o", help="model file to write (.bin)")]
_Text = Annotated[str, typer.Option(help="JSONL/Parquet field holding the text")]
_ChunkChars = Annotated[int, typer.Option(min=50, help="characters per scored chunk")]
_MaxChunks = Annotated[int, typer.Option(min=1, help="chunks per document, spread over it")]


def _params(**kw: Any) -> Any:
    from longmix.data.filters.fasttext_models import TrainParams

    return TrainParams(**kw)


def _print_metrics(title: str, m: dict[str, Any]) -> None:
    console.print(f"{title}: precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}  "
                  f"accuracy {m['accuracy']:.4f}  ({m['n_pos']} positive, {m['n_neg']} negative; "
                  f"tp {m['tp']} fp {m['fp']} fn {m['fn']} tn {m['tn']}; positive when score >= "
                  f"{m['threshold']})", highlight=False)


@quality_app.command("train")
def quality_train(
    positive: _Files, negative: _Files, output: _Out,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.2,
    ngrams: Annotated[int, typer.Option(min=1, help="word n-grams")] = 2,
    dim: Annotated[int, typer.Option(min=2)] = 64,
    bucket: Annotated[int, typer.Option(min=1, help="hash rows for word n-grams (model size)")] = 200_000,
    min_count: Annotated[int, typer.Option(min=1)] = 1,
    threads: Annotated[int, typer.Option(min=1, help=">1 is faster but not deterministic")] = 1,
    seed: int = 0,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.9, help="share of documents held out")] = 0.1,
    chunk_chars: _ChunkChars = 2000,
    max_chunks: _MaxChunks = 16,
    text_field: _Text = "text",
) -> None:
    """Train a quality classifier (labels __label__hq / __label__lq); prints held-out precision/recall."""
    from longmix.data.filters.train import read_texts, train_quality

    params = _params(epochs=epochs, lr=lr, ngrams=ngrams, dim=dim, bucket=bucket, min_count=min_count, threads=threads,
                     seed=seed, chunk_chars=chunk_chars, max_chunks=max_chunks)
    pos, neg = read_texts(positive, text_field), read_texts(negative, text_field)
    result = train_quality(pos, neg, output, params, holdout)
    console.print(f"trained on {result['train_docs']:,} documents ({len(pos):,} positive, {len(neg):,} "
                  f"negative in all); model in {output}", highlight=False)
    if result["held_out"]:
        _print_metrics("held-out", result["held_out"])


@quality_app.command("eval")
def quality_eval(
    model: Annotated[Path, typer.Argument(help="fastText model from 'longmix quality train'")],
    positive: _Files, negative: _Files,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    chunk_chars: _ChunkChars = 2000,
    max_chunks: _MaxChunks = 16,
    text_field: _Text = "text",
) -> None:
    """Score a labelled set with a quality model: precision, recall, F1, accuracy."""
    from longmix.data.filters.fasttext_models import load_model
    from longmix.data.filters.train import quality_metrics, read_texts

    ft_model = load_model(model, "quality")
    params = _params(chunk_chars=chunk_chars, max_chunks=max_chunks)
    _print_metrics("eval", quality_metrics(ft_model, read_texts(positive, text_field),
                                           read_texts(negative, text_field), params, threshold))


@langid_app.command("train")
def langid_train(
    lang: Annotated[list[str], typer.Option(help="LABEL=PATH: documents of one language (repeatable)")],
    output: _Out,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.1,
    dim: Annotated[int, typer.Option(min=2)] = 32,
    seed: int = 0,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    text_field: _Text = "text",
) -> None:
    """Train a small language-ID model (for tests and offline demos; use lid.176.bin on real data)."""
    from longmix.data.filters.train import langid_accuracy, read_texts, train_labelled

    groups: dict[str, list[str]] = {}
    for item in lang:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--lang '{item}': expected LABEL=PATH, e.g. --lang en=docs/*.jsonl")
        groups.setdefault(label, []).extend(read_texts([path], text_field))
    params = _params(epochs=epochs, lr=lr, ngrams=1, dim=dim, seed=seed)
    model, held = train_labelled(groups, output, params, holdout)
    console.print(f"language-ID model with labels {', '.join(sorted(groups))} in {output}", highlight=False)
    if holdout > 0:
        acc = langid_accuracy(model, held, params)
        console.print(f"held-out accuracy {acc['accuracy']:.4f} over {acc['docs']} documents "
                      f"(per label: {acc['per_label']})", highlight=False)
