"""Peak memory of near-dedup on the demo corpus, on 4x that corpus, and with one 50 MB document.

The 4x corpus is the demo corpus plus three copies with 15% of words replaced (5-gram Jaccard
about 0.4 against the original: not near-duplicates, so the work grows with the corpus).
The third case adds a single 50 MB document (the standard library's sources end to end) and a near copy of
it (0.2% of space-separated tokens replaced, so both are candidates and their shingle sets are verified exactly).
Only the near_dedup stage is measured: ingest and exact dedup run first in their own process.
Prints the driver's peak RSS (global clustering step) and the largest worker's (signatures, apply).

    python tests/bench/bench_near_dedup_memory.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from longmix.data.demo_corpus import write_demo_corpus

_MEASURE = """
import json, resource, sys
from longmix.data.recipe import load_recipe
from longmix.data.flow import build
reports = build(load_recipe(sys.argv[1]), progress=False)
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"driver_mb": self_kb / 1024, "worker_mb": child_kb / 1024,
                  "docs": reports["near_dedup"]["in"], "seconds": reports["near_dedup"]["seconds"],
                  "huge_removed": reports["near_dedup"]["sources"].get("huge", {}).get("dropped", 0)}))
"""


def perturbed_copies(corpus: Path, out: Path, copies: int, rate: float = 0.15) -> None:
    rng = random.Random(0)
    for k in range(copies):
        for path in sorted(corpus.rglob("*.jsonl")):
            target = out / f"copy{k}" / path.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path) as src, open(target, "w") as dst:
                for line in src:
                    doc = json.loads(line)
                    words = doc["text"].split(" ")
                    doc["text"] = " ".join(w if rng.random() > rate else f"x{rng.randrange(10**9)}" for w in words)
                    doc["id"] = f"copy{k}/{doc['id']}"
                    dst.write(json.dumps(doc) + "\n")


def huge_documents(out: Path, mb: int = 50) -> Path:
    """One document of `mb` MB of stdlib sources, and a copy with 0.2% of its tokens replaced."""
    import sysconfig

    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= mb * 1_000_000:
            break
    text = "\n".join(parts)[: mb * 1_000_000]
    rng = random.Random(5)
    copy = " ".join(w if rng.random() > 0.002 else f"x{rng.randrange(10**9)}" for w in text.split(" "))
    (out / "huge").mkdir(parents=True, exist_ok=True)
    with open(out / "huge" / "huge.jsonl", "w") as f:
        f.write(json.dumps({"id": "huge", "text": text}) + "\n")
        f.write(json.dumps({"id": "huge-copy", "text": copy}) + "\n")
    return out


def measure(root: Path, corpus_dirs: list[Path], workers: int, extra_sources: tuple[str, ...] = ()) -> dict:
    recipe = {"output": str(root / "out"), "seed": 1, "executor": {"kind": "local", "workers": workers},
              "sources": [{"name": s, "paths": [str(d / s / "*.jsonl") for d in corpus_dirs
                                                if (d / s).is_dir()]}
                          for s in ("code", "docs", "legal", *extra_sources)],
              "stages": {"ingest": {"max_doc_bytes": 128 << 20}}}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cli = [sys.executable, "-m", "longmix.cli", "build", str(path), "--until", "exact_dedup"]
    subprocess.run(cli, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["corpus_mb"] = sum(p.stat().st_size for d in corpus_dirs for p in d.rglob("*.jsonl")) / 1e6
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base = tmp_path / "corpus"
        write_demo_corpus(base)
        perturbed_copies(base, tmp_path / "extra", 3)
        one = measure(tmp_path / "x1", [base], args.workers)
        four = measure(tmp_path / "x4", [base] + [tmp_path / "extra" / f"copy{k}" for k in range(3)], args.workers)
        huge = measure(tmp_path / "huge", [base, huge_documents(tmp_path / "big")], args.workers, ("huge",))
    print(f"{'corpus':>8} {'MB':>8} {'docs':>7} {'driver MB':>10} {'worker MB':>10} {'seconds':>8}")
    for name, r in (("1x", one), ("4x", four), ("1x+50MB", huge)):
        print(f"{name:>8} {r['corpus_mb']:8.1f} {r['docs']:7d} {r['driver_mb']:10.0f} {r['worker_mb']:10.0f} "
              f"{r['seconds']:8.1f}")
    print(f"growth 4x/1x: corpus {four['corpus_mb'] / one['corpus_mb']:.2f}, driver "
          f"{four['driver_mb'] / one['driver_mb']:.2f}, worker {four['worker_mb'] / one['worker_mb']:.2f}")
    print(f"two 50 MB documents (a near pair) on top of 1x: corpus {huge['corpus_mb'] / one['corpus_mb']:.2f}x, "
          f"driver +{huge['driver_mb'] - one['driver_mb']:.0f} MB, "
          f"worker +{huge['worker_mb'] - one['worker_mb']:.0f} MB"
          f"; the pair {'was' if huge.get('huge_removed') else 'was NOT'} found")


if __name__ == "__main__":
    main()
