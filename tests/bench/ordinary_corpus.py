"""A corpus of ordinary documents for the tokenize benchmark, cut from real text that ships with Python.

The demo corpus holds a few huge files (whole stdlib modules and test suites) next to many short pydoc
topics, so a benchmark on it is dominated by a handful of documents. This one cuts every demo-corpus text
at line boundaries into documents whose lengths follow a log-normal law (median ~1.5 KB, a long tail up to
~200 KB): many short and mid-size documents, a few long ones, as in a web or code crawl.

    python tests/bench/ordinary_corpus.py DEMO_CORPUS OUT [--seed 0] [--files 16]

Output: OUT/part-00000.jsonl ... ({"id", "text"}) and OUT/corpus.json (counts, bytes, length quantiles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MEDIAN_CHARS, SIGMA, MIN_CHARS, MAX_CHARS = 1500, 1.1, 200, 200_000


def cut(text: str, rng: np.random.Generator) -> list[str]:
    """`text` in consecutive pieces of log-normal length, each ending at a line end."""
    out, start = [], 0
    while start < len(text):
        want = int(np.clip(rng.lognormal(np.log(MEDIAN_CHARS), SIGMA), MIN_CHARS, MAX_CHARS))
        end = text.find("\n", start + want)
        end = len(text) if end < 0 else end + 1
        piece = text[start:end]
        if piece.strip():
            out.append(piece)
        start = end
    return out


def build(demo: Path, out: Path, seed: int = 0, files: int = 16) -> dict:
    rng = np.random.default_rng(seed)
    docs = []
    for path in sorted(demo.glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            docs.extend(cut(json.loads(line)["text"], rng))
    order = rng.permutation(len(docs))
    out.mkdir(parents=True, exist_ok=True)
    handles = [open(out / f"part-{i:05d}.jsonl", "w") for i in range(files)]
    for k, i in enumerate(order.tolist()):
        handles[k % files].write(json.dumps({"id": f"d{i}", "text": docs[i]}) + "\n")
    for h in handles:
        h.close()
    lens = np.array([len(d) for d in docs])
    summary = {"docs": len(docs), "chars": int(lens.sum()), "files": files, "seed": seed,
               "chars_quantiles": {q: int(np.quantile(lens, q)) for q in (0.1, 0.5, 0.9, 0.99, 1.0)}}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("demo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=16)
    a = ap.parse_args()
    print(json.dumps(build(a.demo, a.out, a.seed, a.files), indent=2))
