"""Training and evaluating fastText classifiers from labelled documents (`longmix quality|langid ...`).

Inputs are JSONL (.gz/.zst), Parquet or folders of text files, as for ingest; globs are expanded.
The held-out split is by document, so no chunk of a held-out document is ever trained on.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.data.filters import fasttext_models as ft
from longmix.data.ingest.texts import read_texts as input_texts

QUALITY_POS, QUALITY_NEG = "hq", "lq"
_MAX_DOC_BYTES = 64 << 20


def read_texts(patterns: list[str], text_field: str = "text") -> list[str]:
    """Every document's text from files, folders or globs; unreadable records are skipped (counted nowhere
    else: training data is not pipeline data)."""
    texts: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise UserError(f"training input '{pattern}' matches no file")
        for m in matches:
            path = Path(m)
            texts.extend(t for _, t in input_texts([path], text_field, None, _MAX_DOC_BYTES) if t.strip())
    return texts


def train_labelled(groups: dict[str, list[str]], out: Path, params: ft.TrainParams,
                   holdout: float) -> tuple[Any, dict[str, list[str]]]:
    """Train on label -> documents minus a held-out share per label; returns (model, held-out docs)."""
    train: list[tuple[str, str]] = []
    held: dict[str, list[str]] = {}
    for i, (label, docs) in enumerate(sorted(groups.items())):
        if not docs:
            raise UserError(f"no documents for label '{label}'")
        tr, te = ft.split_holdout(len(docs), holdout, params.seed + i)
        train.extend((label, docs[j]) for j in tr)
        held[label] = [docs[j] for j in te]
    return ft.train_classifier(train, out, params), held


def quality_metrics(model: Any, positive: list[str], negative: list[str], params: ft.TrainParams,
                    threshold: float = 0.5) -> dict[str, Any]:
    label = ft.LABEL_PREFIX + QUALITY_POS
    if label not in model.get_labels():
        raise UserError(f"the model has no label '{label}' (labels: {', '.join(model.get_labels())}); "
                        f"it was not trained by 'longmix quality train'")
    sp = ft.score_label(model, positive, label, params.chunk_chars, params.max_chunks)
    sn = ft.score_label(model, negative, label, params.chunk_chars, params.max_chunks)
    return ft.binary_metrics(sp, sn, threshold)


def train_quality(positive: list[str], negative: list[str], out: Path, params: ft.TrainParams,
                  holdout: float) -> dict[str, Any]:
    model, held = train_labelled({QUALITY_POS: positive, QUALITY_NEG: negative}, out, params, holdout)
    metrics = quality_metrics(model, held[QUALITY_POS], held[QUALITY_NEG], params) if holdout > 0 else {}
    return {"model": str(out), "train_docs": len(positive) + len(negative) - sum(map(len, held.values())),
            "held_out": metrics}


def langid_accuracy(model: Any, held: dict[str, list[str]], params: ft.TrainParams) -> dict[str, Any]:
    per: dict[str, float] = {}
    right = total = 0
    for label, docs in held.items():
        langs, _ = ft.identify(model, docs, params.chunk_chars, params.max_chunks)
        hits = int(np.sum([lang == label for lang in langs]))
        per[label] = round(hits / len(docs), 4) if docs else 0.0
        right, total = right + hits, total + len(docs)
    return {"accuracy": round(right / total, 4) if total else 0.0, "per_label": per, "docs": total}
