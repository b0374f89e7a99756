"""Retrieval probes over a grid of context lengths x depths, greedy decoding.

- passkey: a random 5-digit number stated at a relative depth inside filler text, asked for at the end;
  scored by exact match of the first number the model writes.
- first-sentence retrieval (the paper's FIRST-SENTENCE-RETRIEVAL): the input opens with a sentence, then
  filler up to the length; the model is asked for the first sentence. Scored by ROUGE-L F1 (and exact match
  after normalization). The target always sits at depth 0, so this task has one depth column.

Filler is real text (documents of a corpus, in a seeded order), not one repeated line: a repeated line
makes the needle the only novelty and overstates retrieval. Prompts are built in token ids to exactly the
requested length, so a whole (length) row batches without padding.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.eval.loading import seeded_texts
from longmix.models.loading import Loaded

PASSKEY_INTRO = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n"
PASSKEY_NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is"
FSR_QUESTION = "\n\nThe first sentence of the text above is:"
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def normalize_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence, O(len(a) * len(b)) with one row of memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lowercased word tokens (Lin 2004, beta = 1)."""
    p, r = normalize_words(prediction), normalize_words(reference)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def score_passkey(output: str, key: str) -> float:
    """1.0 when the first number in the output is the key (so '12345.' or ' 12345 is' count, '1234' doesn't)."""
    m = re.search(r"\d+", output)
    return float(m is not None and m.group(0) == key)


def first_sentence(text: str, max_chars: int = 300) -> str:
    """The text up to its first sentence end (., !, ? then space) or line break."""
    text = text.strip()
    m = _SENTENCE_END.search(text)
    return (text[:m.start()] if m else text)[:max_chars].strip()


def score_first_sentence(output: str, target: str) -> tuple[float, float]:
    """(exact match, ROUGE-L F1) of the output cut at its own first sentence end against the target."""
    pred = first_sentence(output)
    return float(normalize_words(pred) == normalize_words(target)), rouge_l(pred, target)


@dataclass
class ProbeResult:
    task: str
    length: int
    depth: float
    trial: int
    expected: str
    output: str
    exact: float
    rouge_l: float


def filler_texts(paths: list[Path], seed: int, min_chars: int) -> list[str]:
    """Documents of a corpus in a seeded order, until ``min_chars`` characters are gathered."""
    out, total = seeded_texts(paths, seed, min_chars)
    if total < min_chars:
        raise UserError(f"filler corpus has {total:,} characters; the probes need at least {min_chars:,}")
    return out


class _Builder:
    def __init__(self, loaded: Loaded, fillers: list[str]):
        self.tok = loaded.tokenizer
        self.bos = [loaded.bos_id] if loaded.bos_id is not None else []
        self.fillers = fillers
        self.filler_ids = np.asarray(self.ids("\n\n".join(fillers)), dtype=np.int64)
        # documents that open with a real sentence (not a heading or a code line) can open a first-sentence prompt
        self.openings = [t for t in (first_sentence(f) for f in fillers) if 4 <= len(normalize_words(t)) <= 40]

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def filler(self, n: int, rng: random.Random) -> list[int]:
        if n > len(self.filler_ids):
            raise UserError(f"filler corpus too small: {len(self.filler_ids):,} tokens for a {n:,}-token probe")
        start = rng.randrange(0, len(self.filler_ids) - n + 1)
        return self.filler_ids[start:start + n].tolist()

    def passkey(self, length: int, depth: float, rng: random.Random) -> tuple[list[int], str]:
        key = str(rng.randrange(10000, 100000))
        intro, needle, question = self.ids(PASSKEY_INTRO), self.ids(PASSKEY_NEEDLE.format(key=key)), \
            self.ids(PASSKEY_QUESTION)
        n = length - len(self.bos) - len(intro) - len(needle) - len(question)
        if n < 1:
            raise UserError(f"length {length} is too short for the passkey prompt")
        fill = self.filler(n, rng)
        k = int(round(depth * n))
        return self.bos + intro + fill[:k] + needle + fill[k:] + question, key

    def first_sentence(self, length: int, rng: random.Random) -> tuple[list[int], str]:
        if not self.openings:
            raise UserError("no filler document opens with a sentence of 4-40 words")
        target = self.openings[rng.randrange(len(self.openings))]
        head, question = self.ids(target + "\n"), self.ids(FSR_QUESTION)
        n = length - len(self.bos) - len(head) - len(question)
        if n < 1:
            raise UserError(f"length {length} is too short for the first-sentence prompt")
        return self.bos + head + self.filler(n, rng) + question, target


def greedy(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of prompts, in one batch, stopping at EOS (see ``longmix.models.generate``)."""
    from longmix.models.generate import generate

    stops = [loaded.eos_id] if loaded.eos_id is not None else []
    return generate(loaded, prompts, max_new_tokens, batch_size=len(prompts), stop_ids=stops)


def run_probes(loaded: Loaded, fillers: list[str], lengths: list[int], depths: list[float], trials: int,
               seed: int, tasks: tuple[str, ...] = ("passkey", "first_sentence"), batch_size: int = 8,
               progress: bool = True) -> list[ProbeResult]:
    from longmix.pipeline.progress import progress as progress_of

    builder = _Builder(loaded, fillers)
    jobs: list[tuple[str, int, float]] = [("passkey", L, d) for L in lengths for d in depths if "passkey" in tasks]
    jobs += [("first_sentence", L, 0.0) for L in lengths if "first_sentence" in tasks]
    results: list[ProbeResult] = []
    with progress_of("probes", len(jobs) * trials, progress) as advance:
        for task, length, depth in jobs:
            # one seeded stream per grid cell: a cell's prompts don't depend on which other cells ran
            rng = random.Random(f"{seed}:{task}:{length}:{depth}")
            built = [builder.passkey(length, depth, rng) if task == "passkey" else builder.first_sentence(length, rng)
                     for _ in range(trials)]
            for i in range(0, trials, batch_size):
                part = built[i:i + batch_size]
                new = 8 if task == "passkey" else max(len(builder.ids(" " + t)) for _, t in part) + 8
                for j, ((_, expected), out) in enumerate(zip(part, greedy(loaded, [p for p, _ in part], new),
                                                             strict=True)):
                    if task == "passkey":
                        exact = score_passkey(out, expected)
                        rl = rouge_l(first_sentence(out), expected)
                    else:
                        exact, rl = score_first_sentence(out, expected)
                    results.append(ProbeResult(task, length, depth, i + j, expected, out, exact, rl))
                advance(len(part))
    return results


def summarize_probes(results: list[ProbeResult]) -> dict[str, Any]:
    """Per task: lengths, depths and grids [depth][length] of mean exact match and ROUGE-L."""
    out: dict[str, Any] = {}
    for task in sorted({r.task for r in results}):
        rs = [r for r in results if r.task == task]
        lengths, depths = sorted({r.length for r in rs}), sorted({r.depth for r in rs})
        grids = {m: [[float(np.mean([getattr(r, m) for r in rs if r.length == L and r.depth == d]))
                      for L in lengths] for d in depths] for m in ("exact", "rouge_l")}
        out[task] = {"lengths": lengths, "depths": depths, **grids,
                     "mean_exact": float(np.mean([r.exact for r in rs])),
                     "mean_rouge_l": float(np.mean([r.rouge_l for r in rs]))}
    return out


def results_json(results: list[ProbeResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
