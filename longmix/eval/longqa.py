"""Held-out long-document QA (the `longmix sft-data` format, built from documents the SFT never saw), answered by
a chat model and scored against the generator's checked answers.

- Prompt: the checkpoint's chat template applied to the conversation without its assistant turn, generation
  prompt added. An example whose prompt plus the answer budget exceeds ``max_len`` tokens is skipped and
  counted, never cut: cutting the document could cut the evidence the question is about.
- Scores (per example): SQuAD's exact match and token F1 on normalized answers (lowercase, punctuation and
  the articles a/an/the removed, whitespace collapsed), and ROUGE-L F1 (`longmix.eval.probes.rouge_l`).
- Summary: means with a 95% percentile-bootstrap interval (seeded), by evidence depth (where the answer's chunk
  sits in the document) and by prompt style.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.eval.probes import rouge_l

METRICS = ("em", "f1", "rouge_l")
DEPTH_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BOOTSTRAP = 2000
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@dataclass
class QAExample:
    id: str
    messages: list[dict[str, str]]  # the conversation up to (not including) the reference assistant turn
    answer: str
    question: str
    depth: float
    style: str


@dataclass
class QAResult:
    id: str
    style: str
    depth: float
    question: str
    answer: str
    prediction: str
    prompt_tokens: int
    em: float
    f1: float
    rouge_l: float


# -- scoring (SQuAD v1.1's evaluate script)
def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed, articles removed, whitespace collapsed (SQuAD's normalization)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalized tokens' multiset overlap; two empty answers agree (1.0), one empty one scores 0."""
    from longmix.data.sft.check import overlap_f1

    return overlap_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def score(prediction: str, reference: str) -> dict[str, float]:
    return {"em": exact_match(prediction, reference), "f1": token_f1(prediction, reference),
            "rouge_l": rouge_l(prediction, reference)}


# -- the held-out file
def read_heldout(path: Path) -> list[QAExample]:
    """The examples of a long-QA JSONL; a malformed line is a one-line UserError naming it."""
    if not Path(path).is_file():
        raise UserError(f"held-out QA file '{path}' not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(_example(json.loads(line), n))
            except ValueError as e:  # json errors are ValueErrors too
                raise UserError(f"{path}:{n}: {e}") from None
    if not out:
        raise UserError(f"held-out QA file '{path}' has no examples")
    return out


def _example(rec: Any, n: int) -> QAExample:
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list) or not rec["messages"]:
        raise ValueError("expected an object with a non-empty 'messages' list")
    msgs = rec["messages"]
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or \
                not isinstance(m.get("content"), str):
            raise ValueError("each message needs a role (system, user or assistant) and a string content")
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
        raise ValueError("the conversation must end with a user turn and the reference assistant answer")
    prov = rec.get("provenance") or {}
    depth = prov.get("depth")
    if not isinstance(depth, (int, float)) or not 0 <= depth <= 1:
        raise ValueError("provenance.depth must be a number in [0, 1]")
    return QAExample(id=str(rec.get("id", f"line{n}")), messages=msgs[:-1],
                     answer=str(prov.get("answer", msgs[-1]["content"])), question=str(prov.get("question", "")),
                     depth=float(depth), style=str(prov.get("style", "unknown")))


def select(examples: list[QAExample], max_examples: int | None, seed: int) -> list[QAExample]:
    """A seeded subset of ``max_examples`` (all when None or more), kept in file order."""
    if max_examples is None or max_examples >= len(examples):
        return list(examples)
    keep = sorted(random.Random(f"longqa:{seed}").sample(range(len(examples)), max_examples))
    return [examples[i] for i in keep]


# -- running
def prompts(examples: list[QAExample], chat: Any, tokenizer: Any, max_len: int,
            max_new_tokens: int) -> tuple[list[tuple[QAExample, list[int]]], int]:
    """(example, prompt ids) of those whose prompt plus the answer budget fits ``max_len``, and how many did
    not. ``chat.prompt`` applies the chat template (generation prompt added); ``tokenizer`` is the model's
    ``tokenizers.Tokenizer``."""
    kept, skipped = [], 0
    for ex in examples:
        ids = tokenizer.encode(chat.prompt(ex.messages), add_special_tokens=False).ids
        if len(ids) + max_new_tokens > max_len:
            skipped += 1
        else:
            kept.append((ex, ids))
    return kept, skipped


def run_longqa(loaded: Any, chat: Any, examples: list[QAExample], max_len: int, max_new_tokens: int,
               batch_size: int = 1, label: str = "longqa", show: bool = True) -> tuple[list[QAResult], int]:
    """Greedy answers to the examples that fit, scored; (results in the examples' order, skipped count).
    Prompts batch by length (longest first), so a batch pads little; the order does not change an answer. An
    answer ends at EOS or the chat template's end-of-turn token, whichever the model writes first."""
    from longmix.models.generate import generate, stop_ids_of
    from longmix.pipeline.progress import progress

    kept, skipped = prompts(examples, chat, loaded.tokenizer, max_len, max_new_tokens)
    order = sorted(range(len(kept)), key=lambda i: (-len(kept[i][1]), i))
    outputs: list[str] = [""] * len(kept)
    with progress(label, len(kept), show) as advance:
        for s in range(0, len(order), batch_size):
            part = order[s:s + batch_size]
            answers = generate(loaded, [kept[i][1] for i in part], max_new_tokens, batch_size=len(part),
                               stop_ids=stop_ids_of(loaded))
            for i, out in zip(part, answers, strict=True):
                outputs[i] = out.strip()
            advance(len(part))
    results = [QAResult(ex.id, ex.style, ex.depth, ex.question, ex.answer, out, len(ids), **score(out, ex.answer))
               for (ex, ids), out in zip(kept, outputs, strict=True)]
    return results, skipped


# -- summary
def bootstrap_interval(values: list[float], seed: int = 0, level: float = 0.95,
                       resamples: int = BOOTSTRAP) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean (seeded); None for no values."""
    if not values:
        return None
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _group(rs: list[QAResult], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rs)}
    for m in METRICS:
        vals = [getattr(r, m) for r in rs]
        out[m] = float(np.mean(vals)) if vals else None
        ci = bootstrap_interval(vals, seed)
        out[f"{m}_ci"] = list(ci) if ci else None
    return out


def depth_bin(depth: float, edges: tuple[float, ...] = DEPTH_EDGES) -> int:
    """The bin of a depth: [e_k, e_k+1), the last bin closed (depth 1.0 falls in it)."""
    for k in range(len(edges) - 1):
        if depth < edges[k + 1]:
            return k
    return len(edges) - 2


def summarize(results: list[QAResult], skipped: int, seed: int = 0,
              edges: tuple[float, ...] = DEPTH_EDGES) -> dict[str, Any]:
    """Overall means with intervals, by depth bin and by prompt style; ``n`` scored, ``skipped`` too long."""
    bins = [[r for r in results if depth_bin(r.depth, edges) == k] for k in range(len(edges) - 1)]
    return {"n": len(results), "skipped": skipped, "interval": f"95% percentile bootstrap of the mean, "
            f"{BOOTSTRAP} resamples, seed {seed}", **_group(results, seed),
            "by_depth": [{"bin": f"{edges[k]:.1f}-{edges[k + 1]:.1f}", "lo": edges[k], "hi": edges[k + 1],
                          **_group(b, seed)} for k, b in enumerate(bins)],
            "by_style": {s: _group([r for r in results if r.style == s], seed)
                         for s in sorted({r.style for r in results})}}


def results_json(results: list[QAResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
