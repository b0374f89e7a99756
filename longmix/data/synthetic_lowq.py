"""Low-quality documents made from real ones, for the data-mix ablation's quality axis.

Two kinds, both of every length (each is built from 1-8 real documents joined, so about half are long):

- ``salad``: the words of each line shuffled and the lines shuffled: the vocabulary of real text without
  its order (the fastText quality model, which sees word bigrams, flags it);
- ``boilerplate``: a third of the real text, with navigation, cookie and copyright lines repeated between
  its paragraphs until they are most of the document (the duplicate-line heuristics flag it).

``corpus/part-*.jsonl`` is mixed into a source with real text (as junk sits in a web crawl);
``classifier/lq.jsonl`` is other junk, from other files and another seed, and ``classifier/hq.jsonl`` those
files' real documents: the quality model's training data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from longmix.core.atomic import atomic_path, write_json

BOILERPLATE = [
    "Home | About us | Products | Blog | Contact | Login",
    "This website uses cookies to improve your experience. Accept all cookies",
    "Copyright (c) All rights reserved. Terms of use | Privacy policy",
    "Click here to subscribe to our newsletter and get 10% off your first order!",
    "Share on Facebook | Share on Twitter | Share by email",
    "Related posts: Top 10 tips | You won't believe number 7 | Read more",
]


def salad(text: str, rng: random.Random) -> str:
    lines = []
    for line in text.splitlines():
        words = line.split()
        rng.shuffle(words)
        if words:
            lines.append(" ".join(words))
    rng.shuffle(lines)
    return "\n".join(lines)


def boilerplate(text: str, rng: random.Random) -> str:
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    keep = paragraphs[: max(1, len(paragraphs) // 3)]
    out = []
    for p in keep:
        out.append(p)
        n_lines = max(3, p.count("\n") * 3 + 3)  # boilerplate lines outnumber the paragraph's own
        out.append("\n".join(rng.choice(BOILERPLATE) for _ in range(n_lines)))
    return "\n\n".join(out)


def _source_texts(paths: list[Path]) -> list[str]:
    from longmix.data.ingest.texts import read_texts

    files = [f for p in paths for f in (sorted(p.rglob("*.jsonl")) if p.is_dir() else [p])]
    texts = [t for _, t in read_texts(files, "text", "id", 256 << 20, fmt="jsonl") if len(t) > 200]
    if not texts:
        from longmix.core.errors import UserError

        raise UserError(f"no documents of 200+ characters in {', '.join(map(str, paths))}")
    return texts


def _junk(texts: list[str], rng: random.Random, k: int) -> dict[str, Any]:
    joined = "\n\n".join(rng.choice(texts) for _ in range(rng.randint(1, 8)))
    kind = "salad" if k % 2 == 0 else "boilerplate"
    return {"text": salad(joined, rng) if kind == "salad" else boilerplate(joined, rng), "lowq": kind}


def split_files(sources: list[Path], classifier_share: float = 0.25) -> tuple[list[Path], list[Path]]:
    """The JSONL files of ``sources``, sorted: the last ``classifier_share`` of them (at least one) train the
    quality model, the rest are what the corpus junk is made from."""
    files = sorted(f for p in sources for f in (sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]))
    if len(files) < 2:
        from longmix.core.errors import UserError

        raise UserError("demo-lowq needs at least two JSONL files (corpus junk and classifier text come from "
                        "different files)")
    k = max(1, round(len(files) * classifier_share))
    return files[:-k], files[-k:]


def write_lowq_corpus(out: Path, sources: list[Path], docs: int, classifier_docs: int, seed: int = 0,
                      files: int = 2) -> dict[str, Any]:
    """corpus/ (junk made from most of ``sources``' files), classifier/lq.jsonl (junk from the other files)
    and classifier/hq.jsonl (those other files' real documents), for `longmix quality train`."""
    sources, classifier_sources = split_files(sources)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"seed": seed, "files": {}}
    jobs = [(f"corpus/part-{i:05d}.jsonl", sources, docs // files + (i < docs % files), seed * 1000 + i)
            for i in range(files)] + [("classifier/lq.jsonl", classifier_sources, classifier_docs, seed * 1000 + 999)]
    for name, paths, n, s in jobs:
        rng, texts = random.Random(s), _source_texts(paths)
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        kinds: dict[str, int] = {}
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            for k in range(n):
                doc = _junk(texts, rng, k)
                kinds[doc["lowq"]] = kinds.get(doc["lowq"], 0) + 1
                f.write(json.dumps({"id": f"lowq-{Path(name).stem}-{k}", **doc}) + "\n")
        summary["files"][name] = {"docs": n, "kinds": kinds}
    hq = _source_texts(classifier_sources)
    with atomic_path(out / "classifier" / "hq.jsonl") as tmp, open(tmp, "w") as f:
        for k, text in enumerate(hq):
            f.write(json.dumps({"id": f"hq-{k}", "text": text}) + "\n")
    summary["files"]["classifier/hq.jsonl"] = {"docs": len(hq), "kinds": {"real": len(hq)}}
    summary["corpus_from"] = [str(p) for p in sources]
    summary["classifier_from"] = [str(p) for p in classifier_sources]
    write_json(out / "corpus.json", summary)
    return summary
