"""Long-dependency scoring: throughput against a plain forward pass, and the score distribution per source.

    python tests/bench/bench_longdep.py [--docs-per-source 6] [--window 128] [--max-len 512]

Loads SmolLM2-135M (build/models/smollm2-135m, from `make model`), takes the first documents of at least
`--max-len` scorer tokens from each source of the demo corpus (build/demo/corpus, from `make demo`), and
scores each exactly as the longdep stage does (longmix.data.longdep.score.score_document). The floor is
one plain forward pass of the same model over the same windows (the cost of reading the tokens once).
Prints tokens/s for both and their ratio: the score costs one full-context pass plus the short-context
windows (about 1 + 1.5 * (L - W) / L passes with the default stride W/2), so its floor ratio is known in
advance and the measured one says how close the implementation gets. Writes the per-source score
distribution as a plot (docs/img/longdep-scores.png) and the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "build" / "models" / "smollm2-135m")
    ap.add_argument("--corpus", type=Path, default=REPO / "build" / "demo" / "corpus")
    ap.add_argument("--docs-per-source", type=int, default=6)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "longdep-scores.png")
    ap.add_argument("--json", type=Path, default=REPO / "build" / "bench" / "longdep.json")
    args = ap.parse_args(argv)

    import torch

    from longmix.data.longdep.score import score_document
    from longmix.models.loading import load_checkpoint
    from longmix.models.token_loss import token_losses

    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model, device="cpu")
    bos = [loaded.bos_id] if loaded.bos_id is not None else []
    stride = max(1, args.window // 2)
    per_source: dict[str, list[float]] = {}
    score_s = floor_s = 0.0
    doc_tokens = forward_tokens = 0
    for folder in sorted(p for p in args.corpus.iterdir() if p.is_dir()):
        picked = []
        for f in sorted(folder.glob("*.jsonl")):
            for line in f.open():
                ids = bos + loaded.tokenizer.encode(json.loads(line)["text"], add_special_tokens=False).ids
                if len(ids) >= args.max_len:
                    picked.append(np.asarray(ids[: args.max_len], dtype=np.int64))
                if len(picked) >= args.docs_per_source:
                    break
            if len(picked) >= args.docs_per_source:
                break
        scores = []
        for ids in picked:
            t0 = time.perf_counter()
            s = score_document(loaded.model, ids, window=args.window, stride=stride, max_len=args.max_len,
                               max_windows=1, min_tokens=args.window + 1, margin=0.5, device="cpu",
                               batch_size=args.batch_size)
            score_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            token_losses(loaded.model, ids[None], "cpu")
            floor_s += time.perf_counter() - t0
            doc_tokens += len(ids)
            forward_tokens += s.forward_tokens
            scores.append(s.score)
        per_source[folder.name] = scores
        print(f"{folder.name:>6}: {len(scores)} documents, scores "
              + ", ".join(f"{x:.3f}" for x in scores), flush=True)

    score_tps, floor_tps = doc_tokens / score_s, doc_tokens / floor_s
    print(f"\nscoring: {doc_tokens:,} document tokens in {score_s:.1f} s = {score_tps:,.0f} tokens/s "
          f"(the scorer ran over {forward_tokens:,} tokens: {forward_tokens / doc_tokens:.2f} passes)")
    print(f"floor (one plain forward over the same tokens): {floor_s:.1f} s = {floor_tps:,.0f} tokens/s")
    print(f"ratio scoring / floor: {score_tps / floor_tps:.3f} "
          f"(per pass over the model: {forward_tokens / score_s / floor_tps:.2f} of the floor's speed)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(per_source)
    ax.boxplot([per_source[n] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, n in enumerate(names, start=1):
        ax.scatter(np.full(len(per_source[n]), i) + np.linspace(-0.08, 0.08, len(per_source[n])),
                   per_source[n], s=10, alpha=0.6)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("longdep score (nats)")
    ax.set_title(f"SmolLM2-135M, W={args.window}, {args.max_len} tokens, {args.docs_per_source} docs/source",
                 fontsize=9)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"scores": per_source, "score_tokens_per_s": score_tps,
                                     "floor_tokens_per_s": floor_tps, "forward_tokens": forward_tokens,
                                     "doc_tokens": doc_tokens, "args": {k: str(v) for k, v in vars(args).items()}},
                                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
