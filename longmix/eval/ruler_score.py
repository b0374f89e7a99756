"""RULER's scoring of generated answers and the summary of a run: the output stripped, control characters as
newlines, then ``string_match_all``, the share of expected strings that occur in it (case-insensitive), times
100. The effective length is the longest length up to which every length's mean over tasks stays above a
threshold (RULER uses 85.6, Llama-2-7B's score at 4K). The prompts are built in `ruler.py`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from longmix.eval.ruler import NIAH_TASKS, TASKS, RulerSample

DEFAULT_THRESHOLD = 85.6


@dataclass
class RulerResult:
    task: str
    length: int
    depth: float | None
    sample: int
    answers: list[str]
    output: str
    score: float


def postprocess(output: str) -> str:
    """RULER's clean-up of a prediction (scripts/eval/evaluate.py): strip, control characters as newlines."""
    return re.sub(r"[\x00-\x1f]", "\n", output.strip()).strip()


def string_match_all(output: str, answers: Sequence[str]) -> float:
    """RULER's metric for NIAH, VT, CWE and FWE: 100 x the share of answers found in the output, ignoring case."""
    out = postprocess(output).lower()
    return 100.0 * sum(a.lower() in out for a in answers) / len(answers)


def effective_length(per_length: dict[int, float], threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """The longest length L such that the score at every length <= L is above ``threshold``; None if the
    shortest already falls short."""
    best = None
    for L in sorted(per_length):
        if per_length[L] <= threshold:
            break
        best = L
    return best


def score_samples(samples: list[RulerSample], outputs: list[str]) -> list[RulerResult]:
    results, seen = [], {}
    for s, out in zip(samples, outputs, strict=True):
        k = (s.task, s.length, s.depth)
        seen[k] = seen.get(k, -1) + 1
        results.append(RulerResult(s.task, s.length, s.depth, seen[k], s.answers, out,
                                   string_match_all(out, s.answers)))
    return results


def summarize(results: list[RulerResult], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Task x length means, the mean over tasks per length, the effective length, and depth x length grids
    for the NIAH tasks."""
    tasks = [t for t in TASKS if any(r.task == t for r in results)]
    lengths = sorted({r.length for r in results})
    table = {t: [float(np.mean([r.score for r in results if r.task == t and r.length == L])) for L in lengths]
             for t in tasks}
    mean = [float(np.mean([table[t][i] for t in tasks])) for i in range(len(lengths))]
    depth_grids = {}
    for t in tasks:
        if t in NIAH_TASKS and all(r.depth is not None for r in results if r.task == t):  # a stated depth grid
            depths = sorted({r.depth for r in results if r.task == t})
            depth_grids[t] = {"depths": depths, "score": [
                [float(np.mean([r.score for r in results if r.task == t and r.length == L and r.depth == d]))
                 for L in lengths] for d in depths]}
    return {"tasks": tasks, "lengths": lengths, "table": table, "mean": mean, "threshold": threshold,
            "effective_length": effective_length(dict(zip(lengths, mean, strict=True)), threshold),
            "depth_grids": depth_grids}


def results_json(results: list[RulerResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
