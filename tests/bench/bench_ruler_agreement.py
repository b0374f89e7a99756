"""RULER scores from two harnesses on the same model: lm-evaluation-harness's RULER tasks (the baseline, through
its own HF backend) and `longmix eval ruler` with `style="lm-eval"` (the same prompt variant), side by side with
standard errors, for the tasks that need no download; optionally longmix's NVIDIA-RULER prompts as a third
column (`--ruler-style`).

    HF_HUB_OFFLINE=1 .venv/bin/python tests/bench/bench_ruler_agreement.py \\
        --model build/models/smollm2-135m --lengths 1024,2048 --samples 25 [--tasks vt,fwe] [--ruler-style] \\
        [--out ruler_agree.json]

Needs `make model` (SmolLM2-135M) and lm-eval (the dev extra). Both harnesses decode greedily up to each task's
answer budget, batch 8, on the same device; prompts are drawn independently (each harness its own seeds), so
the comparison is of scores, with the gap in standard errors of the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

TASKS = {"niah_single_1": "niah_single_1", "vt": "ruler_vt", "cwe": "ruler_cwe", "fwe": "ruler_fwe"}


def mean_se(scores: list[float]) -> tuple[float, float]:
    m = statistics.mean(scores)
    return m, (statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else float("nan"))


def lm_eval_scores(model: Path, length: int, samples: int, batch: int, tasks: list[str]) -> dict[str, list[float]]:
    import lm_eval

    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model), "dtype": "float32",
                                                          "device": "cpu"},
                                  tasks=[TASKS[t] for t in tasks], metadata={"max_seq_lengths": [length]},
                                  limit=samples, batch_size=batch, log_samples=True)
    return {ours: [100.0 * s[str(length)] for s in res["samples"][TASKS[ours]]] for ours in tasks}


def longmix_scores(model: Path, length: int, samples: int, batch: int, style: str,
                   tasks: list[str]) -> dict[str, list[float]]:
    from longmix.eval.ruler import Generator, build_samples
    from longmix.eval.ruler_run import generate_all
    from longmix.eval.ruler_score import score_samples
    from longmix.models.loading import load_checkpoint

    loaded = load_checkpoint(model, device="cpu", dtype="float32")
    out = {}
    for task in tasks:
        built = build_samples(Generator(loaded.tokenizer, loaded.bos_id, [], style), [task], [length], [None],
                              samples, 0)
        out[task] = [r.score for r in score_samples(built, generate_all(loaded, built, batch, f"{task} {length}"))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=Path("build/models/smollm2-135m"))
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--samples", type=int, default=25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ruler-style", action="store_true", help="also longmix's NVIDIA-RULER prompts")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"a subset of {', '.join(TASKS)}")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    if bad := sorted(set(tasks) - set(TASKS)):
        ap.error(f"unknown task(s) {', '.join(bad)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows, started = [], time.monotonic()
    for length in (int(v) for v in args.lengths.split(",")):
        theirs = lm_eval_scores(args.model, length, args.samples, args.batch, tasks)
        ours = longmix_scores(args.model, length, args.samples, args.batch, "lm-eval", tasks)
        nvidia = (longmix_scores(args.model, length, args.samples, args.batch, "ruler", tasks)
                  if args.ruler_style else {})
        for task in tasks:
            (a, sa), (b, sb) = mean_se(theirs[task]), mean_se(ours[task])
            gap = abs(a - b) / math.sqrt(sa ** 2 + sb ** 2) if sa + sb > 0 else 0.0
            row = {"task": task, "length": length, "lm_eval": [a, sa], "longmix": [b, sb], "gap_se": gap,
                   "n": [len(theirs[task]), len(ours[task])]}
            if nvidia:
                row["longmix_ruler"] = list(mean_se(nvidia[task]))
            rows.append(row)
    print(f"model {args.model}, {args.samples} prompts per cell, {time.monotonic() - started:,.0f} s")
    head = "| task | length | lm-eval (baseline) | longmix, lm-eval prompts | gap (SE) | within 2 SE |"
    print(head + (" longmix, RULER prompts |" if args.ruler_style else ""))
    print("|---" * (6 + bool(args.ruler_style)) + "|")
    for r in rows:
        line = (f"| {r['task']} | {r['length']} | {r['lm_eval'][0]:.1f} ± {r['lm_eval'][1]:.1f} | "
                f"{r['longmix'][0]:.1f} ± {r['longmix'][1]:.1f} | {r['gap_se']:.2f} | "
                f"{'yes' if r['gap_se'] <= 2 else 'NO'} |")
        if "longmix_ruler" in r:
            line += f" {r['longmix_ruler'][0]:.1f} ± {r['longmix_ruler'][1]:.1f} |"
        print(line)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
