"""fastText classifiers: train, load (checked), and score long documents chunk by chunk.

A document is scored on up to `max_chunks` chunks of about `chunk_chars` characters, taken evenly
across the whole text, and the chunk scores are averaged weighted by chunk length. fastText itself
reads one line per example and averages word vectors over it, so a single pass over a long document
would be dominated by nothing in particular and, with newlines, by its first line; chunking makes the
score reflect the whole document at a bounded cost. Training uses the same chunking, so a model
learns on the same kind of input it is applied to.
"""

from __future__ import annotations

import random
import struct
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.atomic import atomic_path
from longmix.core.errors import UserError

FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin/.ftz (FASTTEXT_FILEFORMAT_MAGIC_INT32)
LABEL_PREFIX = "__label__"

_loaded: dict[tuple[str, int, int], Any] = {}  # per process: a worker loads each model once


def check_model(path: Path, what: str) -> None:
    """Cheap up-front check (exists, fastText header) so a bad path fails before any work starts."""
    if not path.is_file():
        raise UserError(f"{what} model '{path}' not found; give the path of a fastText .bin model")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) < 4 or struct.unpack("<i", head)[0] != FASTTEXT_MAGIC:
        raise UserError(f"{what} model '{path}' is not a fastText model (bad header); "
                        f"retrain it or point to the right file")


def check_loads(path: Path, what: str) -> None:
    """Load the model once and let it go: a truncated or corrupt file fails before any stage runs, and the
    driver does not hold the weights while the workers load their own copies."""
    st = path.stat()
    load_model(path, what)
    _loaded.pop((str(path.resolve()), st.st_size, st.st_mtime_ns), None)


def load_model(path: str | Path, what: str = "fastText") -> Any:
    import fasttext

    path = Path(path)
    check_model(path, what)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _loaded:
        fasttext.FastText.eprint = lambda *a, **k: None  # silence its load_model warning on stderr
        try:
            _loaded[key] = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise UserError(f"{what} model '{path}' could not be loaded ({str(exc).strip() or type(exc).__name__}); "
                            f"the file is truncated or corrupt: retrain or re-download it") from None
        _check_complete(_loaded[key], path, st.st_size, what)
    return _loaded[key]


def _check_complete(model: Any, path: Path, size: int, what: str) -> None:
    """fastText reads a truncated file without complaint (the missing weights are left as they were), so
    compare the file size with the least its matrices and dictionary take (quantized models: skipped)."""
    if model.f.isQuant():
        return
    words, labels = model.get_words(), model.get_labels()
    rows = len(words) + model.f.getArgs().bucket + len(labels)
    least = 4 * rows * model.get_dimension() + sum(len(w.encode()) + 10 for w in (*words, *labels))
    if size < least:
        raise UserError(f"{what} model '{path}' is truncated ({size:,} bytes, its weights alone need "
                        f"{least:,}): retrain or re-download it")


def chunk_text(text: str, chunk_chars: int, max_chunks: int) -> list[str]:
    """Whitespace-collapsed chunks of ~chunk_chars, at most max_chunks of them spread evenly over the text.

    Chunk edges move to word boundaries (a partial first/last word is dropped), so no chunk starts or
    ends mid-word; only the chosen chunks are touched, so a 100 MB document costs max_chunks slices."""
    n_total = max(1, -(-len(text) // chunk_chars))
    picks = range(n_total) if n_total <= max_chunks else \
        sorted({int(i) for i in np.linspace(0, n_total - 1, max_chunks).round()})
    out = []
    for i in picks:
        start, end = i * chunk_chars, (i + 1) * chunk_chars
        piece = text[start:end]
        words = piece.split()
        if start > 0 and words and not text[start - 1].isspace() and not piece[0].isspace():
            words = words[1:]
        if end < len(text) and words and not piece[-1].isspace() and not text[end].isspace():
            words = words[:-1]
        if words:
            out.append(" ".join(words))
    if not out and text.strip():  # one giant "word": score it whole rather than not at all
        out.append(" ".join(text[:chunk_chars].split()))
    return out


def _chunks_of(texts: Sequence[str], chunk_chars: int, max_chunks: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    chunks: list[str] = []
    owner: list[int] = []
    for d, text in enumerate(texts):
        cs = chunk_text(text, chunk_chars, max_chunks)
        chunks.extend(cs)
        owner.extend([d] * len(cs))
    weights = np.fromiter((len(c) for c in chunks), dtype=np.float64, count=len(chunks))
    return chunks, np.asarray(owner, dtype=np.int64), weights


def predict_chunks(model: Any, chunks: Sequence[str], k: int) -> list[list[tuple[float, str]]]:
    """Top-k (probability, label) per chunk. Calls the binding's one-line predict: fasttext-wheel 0.9.2's
    list predict (multilinePredict) returns wrong probabilities, and its Python wrapper for one line
    breaks on numpy 2; this path is correct on 0.9.2 and 0.9.3."""
    f = model.f
    return [f.predict(c + "\n", k, 0.0, "replace") for c in chunks]


def score_label(model: Any, texts: Sequence[str], label: str, chunk_chars: int, max_chunks: int) -> np.ndarray:
    """P(label) per document: the chunk-length-weighted mean over its chunks; NaN for a text with no words."""
    chunks, owner, weights = _chunks_of(texts, chunk_chars, max_chunks)
    n = len(texts)
    if not chunks:
        return np.full(n, np.nan, dtype=np.float32)
    p = np.fromiter((_prob_of(pairs, label) for pairs in predict_chunks(model, chunks, -1)), dtype=np.float64,
                    count=len(chunks))
    num = np.bincount(owner, weights=p * weights, minlength=n)
    den = np.bincount(owner, weights=weights, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (num / den).astype(np.float32)


def _prob_of(pairs: Sequence[tuple[float, str]], label: str) -> float:
    for p, lab in pairs:
        if lab == label:
            return min(float(p), 1.0)  # fastText's softmax can round a hair above 1
    return 0.0


def identify(model: Any, texts: Sequence[str], chunk_chars: int, max_chunks: int,
             top_k: int = 5) -> tuple[list[str | None], np.ndarray]:
    """(language, score) per document: the label with the highest chunk-length-weighted mean probability
    over the document's chunks (each chunk contributes its top_k labels; lid.176 has 176)."""
    chunks, owner, weights = _chunks_of(texts, chunk_chars, max_chunks)
    langs: list[str | None] = [None] * len(texts)
    scores = np.full(len(texts), np.nan, dtype=np.float32)
    if not chunks:
        return langs, scores
    preds = predict_chunks(model, chunks, top_k)
    acc: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    total = np.bincount(owner, weights=weights, minlength=len(texts))
    for d, w, pairs in zip(owner.tolist(), weights.tolist(), preds, strict=True):
        for p, lab in pairs:
            acc[d][lab] += w * min(float(p), 1.0)
    for d, per in acc.items():
        lab, mass = max(per.items(), key=lambda kv: (kv[1], kv[0]))
        langs[d] = lab.removeprefix(LABEL_PREFIX)
        scores[d] = mass / total[d]
    return langs, scores


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 10
    lr: float = 0.2
    ngrams: int = 2
    dim: int = 64
    bucket: int = 200_000  # hash rows for word n-grams: the model is about (words + bucket) * dim * 4 bytes
    min_count: int = 1
    threads: int = 1  # >1 trains faster but not deterministically (fastText's Hogwild SGD)
    seed: int = 0
    chunk_chars: int = 2000
    max_chunks: int = 16


def train_classifier(examples: Sequence[tuple[str, str]], out: Path, params: TrainParams) -> Any:
    """Train a supervised fastText model on (label, document) pairs; every document contributes its
    chunks (as in scoring), shuffled with the seed since fastText reads its input in order."""
    import fasttext

    lines = [f"{LABEL_PREFIX}{label} {chunk}\n" for label, text in examples
             for chunk in chunk_text(text, params.chunk_chars, params.max_chunks)]
    if len({label for label, _ in examples}) < 2:
        raise UserError("training needs documents of at least two labels")
    random.Random(params.seed).shuffle(lines)
    with tempfile.TemporaryDirectory(prefix="longmix-fasttext-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(lines), encoding="utf-8")
        model = fasttext.train_supervised(
            input=str(train_file), epoch=params.epochs, lr=params.lr, wordNgrams=params.ngrams, dim=params.dim,
            bucket=params.bucket if params.ngrams > 1 else 0,
            minCount=params.min_count, thread=params.threads, seed=params.seed, loss="softmax", verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_out:
        model.save_model(str(tmp_out))
    return model


def split_holdout(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices; at least one of each when n >= 2 and frac > 0."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 1, max(1, round(n * frac))) if n >= 2 and frac > 0 else 0
    return sorted(order[k:]), sorted(order[:k])


def binary_metrics(scores_pos: np.ndarray, scores_neg: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Precision/recall/F1/accuracy of "score >= threshold means positive"."""
    tp = int((scores_pos >= threshold).sum())
    fn = len(scores_pos) - tp
    fp = int((scores_neg >= threshold).sum())
    tn = len(scores_neg) - fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = tp + fn + fp + tn
    return {"n_pos": len(scores_pos), "n_neg": len(scores_neg), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "accuracy": round((tp + tn) / n, 4) if n else 0.0, "threshold": threshold}
