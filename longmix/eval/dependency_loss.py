"""Loss on the tokens that need far context, by distance (documents of `longmix demo-longdep`).

Each record's ``deps`` name a target span (a copied passage, or the digits of a fact used late) and where its
source is, ``distance`` tokens back. The target's loss, next to the loss of the same text at its source
(where nothing earlier predicts it), says how much the model used context that far back: a model that
attends there copies (loss near 0), one that cannot pays about the source's loss. The first
``skip_repeat`` tokens of a copied passage are not scored: nothing announces that a copy starts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.models.loading import Loaded
from longmix.models.token_loss import token_losses


def read_dependency_docs(paths: list[Path], max_docs: int | None, first: int = 0) -> list[dict[str, Any]]:
    """The documents from ``first`` on (wrapping around), ``max_docs`` of them: draw k of a suite reads block k."""
    docs = []
    for p in paths:
        files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
        for f in files:
            if not f.is_file():
                raise UserError(f"dependency data '{f}' not found (write it with `longmix demo-longdep`)")
            for line in f.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if "deps" not in rec:
                        raise UserError(f"{f}: records have no 'deps' (write them with `longmix demo-longdep`)")
                    docs.append(rec)
    if not docs:
        raise UserError(f"no documents in {', '.join(map(str, paths))}")
    k = first % len(docs)
    docs = docs[k:] + docs[:k]
    return docs[:max_docs] if max_docs else docs


def _token_span(offsets: list[tuple[int, int]], a: int, b: int) -> list[int]:
    """Indices of the tokens whose characters lie inside [a, b) (a token starting at a leading space counts)."""
    return [i for i, (s, e) in enumerate(offsets) if e > a and s < b and (s >= a - 1) and e <= b]


def dependency_loss(loaded: Loaded, paths: list[Path], max_len: int, max_docs: int | None = None,
                    skip_repeat: int = 2, name: str = "model", progress: bool = True,
                    first: int = 0) -> dict[str, Any]:
    """Mean target and source loss per planned distance (and per kind); documents are cut at ``max_len``
    tokens and pairs whose target lies past the cut are not scored. ``first``: the document to start from."""
    from longmix.pipeline.progress import progress as progress_of

    docs = read_dependency_docs(paths, max_docs, first)
    rows: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    bos = [loaded.bos_id] if loaded.bos_id is not None else []
    with progress_of(f"dependency loss {name}", len(docs), progress) as advance:
        for doc in docs:
            enc = loaded.tokenizer.encode(doc["text"], add_special_tokens=False)
            ids = np.asarray(bos + enc.ids, dtype=np.int64)[:max_len]  # pairs past the cut are left out
            nll = token_losses(loaded.model, ids[None], loaded.device)[0]  # nll[k]: loss of ids[k + 1]
            shift = len(bos) - 1  # encoder token i is ids[i + len(bos)], scored at nll[i + len(bos) - 1]
            for dep in doc["deps"]:
                t0, t1 = dep["target"]
                target = doc["text"][t0:t1]
                s0 = doc["text"].find(target, dep["src"][0])
                dst = _token_span(enc.offsets, t0, t1)
                src = _token_span(enc.offsets, s0, s0 + len(target))
                if dep["kind"] == "repeat":
                    dst, src = dst[skip_repeat:], src[skip_repeat:]
                dst = [i + shift for i in dst if 0 <= i + shift < len(nll)]
                src = [i + shift for i in src if 0 <= i + shift < len(nll)]
                if dst and src:
                    rows[(dep["kind"], int(dep["planned"]))].append((float(nll[dst].mean()), float(nll[src].mean())))
            advance(1)
    if not rows:
        raise UserError(f"no dependency fits {max_len} tokens in {', '.join(map(str, paths))}")
    distances = sorted({d for _, d in rows})
    by_distance = []
    for d in distances:
        pairs = [p for (k, dd), ps in rows.items() if dd == d for p in ps]
        arr = np.asarray(pairs)
        by_distance.append({"distance": d, "n": len(arr), "target_loss": float(arr[:, 0].mean()),
                            "source_loss": float(arr[:, 1].mean()),
                            "target_se": float(arr[:, 0].std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else None,
                            "kinds": {k: float(np.mean([p[0] for p in ps]))
                                      for (k, dd), ps in rows.items() if dd == d}})
    return {"name": name, "n_docs": len(docs), "max_len": max_len,
            "skip_repeat": skip_repeat, "by_distance": by_distance}


def range_mean(res: dict[str, Any], lo: int, hi: int, key: str = "target_loss") -> float | None:
    """Mean over the dependencies with lo < distance <= hi, weighted by their counts."""
    rows = [r for r in res["by_distance"] if lo < r["distance"] <= hi]
    n = sum(r["n"] for r in rows)
    return sum(r[key] * r["n"] for r in rows) / n if n else None
