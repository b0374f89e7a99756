"""Near-duplicate benchmark corpus built from real text that ships with Python, with exact ground truth.

Originals are the standard library's ``.py`` sources (test folders and site-packages skipped) and the
``pydoc_data.topics`` texts. They are picked deterministically from a seed and made mutually distinct:
an original whose word 5-gram set overlaps an already accepted original above ``--max-overlap``
(Jaccard) is dropped, so the planted families are the only near-duplicates in the corpus.

A fraction of the originals get a *family* of perturbed copies, one per word-level edit rate: each
whitespace-delimited word of the original is, with probability ``rate``, substituted by another word
of the same document, deleted, or preceded by an inserted word (one of the three, uniformly).

Ground truth is the exact word n-gram Jaccard between every pair of documents of a family, after the
normalization the near-dedup uses: lowercase, punctuation folded to spaces (every character that is
not a word character or whitespace), split on whitespace. A document with fewer than ``n`` words has
one shingle, all its words.

``--scale K`` makes K times as many families: copy k >= 1 of every original goes through a letter and
digit substitution cipher seeded by k (each of a-z, A-Z, 0-9 mapped by a fixed permutation), which
keeps the text's structure, lengths and word statistics but gives it a vocabulary of its own. The
distinctness filter runs over all K copies together, so families stay disjoint at any scale.

Output folder:
  data/part-00000.jsonl ...   {"id": ..., "text": ...} records, shuffled, spread over ``--files`` files
  truth.json                  n-gram size, edit rates, and per family the ids and their pairwise Jaccard
  manifest.json               what was built: counts, bytes, parameters

Usage: python tests/bench/near_dup_corpus.py OUT [--seed 0] [--scale 1] [--files 8]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import sysconfig
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

DEFAULT_RATES: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
PAIR_FLOOR = 0.5  # truth.json lists every pair at or above this Jaccard
NGRAM = 5
_FOLD_RE = re.compile(r"[^\w\s]+")
_SPLIT_KEEP_WS = re.compile(r"(\s+)")
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "idle_test", "test", "tests"}


# ----------------------------------------------------------------------------------------------
# Normalization and exact Jaccard (the ground truth)


def normalize_words(text: str) -> list[str]:
    """Lowercase, fold punctuation (anything not a word character or whitespace) to spaces, split."""
    return _FOLD_RE.sub(" ", text.lower()).split()


def shingle_set(text: str, n: int = NGRAM) -> frozenset[tuple[str, ...]]:
    """The set of word n-grams; a document with 1..n-1 words has one shingle (all of them)."""
    words = normalize_words(text)
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(zip(*(words[i:] for i in range(n)), strict=False))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


# ----------------------------------------------------------------------------------------------
# Sources


def stdlib_sources(min_words: int, max_chars: int) -> list[tuple[str, str]]:
    """(name, text) of the stdlib's .py files outside test folders and site-packages, by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in _SKIP_DIRS or p.startswith("test") for p in parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) <= max_chars and len(normalize_words(text)) >= min_words:
            out.append(("stdlib/" + "/".join(parts), text))
    return out


def pydoc_topics(min_words: int, max_chars: int) -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [
        (f"pydoc/{name}", text)
        for name, text in sorted(topics.items())
        if len(text) <= max_chars and len(normalize_words(text)) >= min_words
    ]


def cipher(text: str, k: int) -> str:
    """Letter/digit substitution cipher number k (k = 0 is the identity)."""
    if k == 0:
        return text
    rng = random.Random(f"cipher-{k}")
    lower, digits = list(string.ascii_lowercase), list(string.digits)
    rng.shuffle(lower)
    rng.shuffle(digits)
    src = string.ascii_lowercase + string.ascii_uppercase + string.digits
    dst = "".join(lower) + "".join(lower).upper() + "".join(digits)
    return text.translate(str.maketrans(src, dst))


# ----------------------------------------------------------------------------------------------
# Distinct originals


def shingle_ids(text: str, n: int = NGRAM) -> np.ndarray:
    """The shingle set as sorted unique 64-bit hashes (Python's tuple hash, stable within one process;
    collisions at 2^-64 per pair of shingles), so a large corpus's sets fit in memory."""
    return np.unique(np.fromiter((hash(sh) for sh in shingle_set(text, n)), dtype=np.int64))


def pairwise_jaccard(shingle_sets: Sequence) -> sparse.csr_matrix:
    """Exact Jaccard of every pair with a shared shingle, as a sparse matrix (diagonal included).
    Sets are frozensets of shingles or arrays from shingle_ids."""
    arrays = [s if isinstance(s, np.ndarray) else
              np.unique(np.fromiter((hash(x) for x in s), dtype=np.int64, count=len(s))) for s in shingle_sets]
    sizes = np.asarray([len(x) for x in arrays], dtype=np.float64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    _, cols = np.unique(flat, return_inverse=True)
    row_idx = np.repeat(np.arange(len(arrays), dtype=np.int32), sizes.astype(np.int64))
    x = sparse.csr_matrix((np.ones(len(flat), dtype=np.int32), (row_idx, cols)),
                          shape=(len(arrays), int(cols.max()) + 1 if len(cols) else 1))
    inter = (x @ x.T).tocoo()
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    return sparse.csr_matrix((inter.data / union, (inter.row, inter.col)), shape=inter.shape)


def select_distinct(
    shingle_sets: Sequence[frozenset], order: Iterable[int], max_overlap: float
) -> list[int]:
    """Greedy in `order`: accept a document unless it overlaps an accepted one above max_overlap."""
    jac = pairwise_jaccard(shingle_sets)
    accepted: list[int] = []
    is_accepted = np.zeros(len(shingle_sets), dtype=bool)
    for i in order:
        row = jac.getrow(i)
        others = row.indices[row.indices != i]
        if np.any(is_accepted[others] & (row.data[row.indices != i] > max_overlap)):
            continue
        accepted.append(i)
        is_accepted[i] = True
    return accepted


# ----------------------------------------------------------------------------------------------
# Perturbation


def perturb(text: str, rate: float, rng: random.Random) -> str:
    """Word-level edits at `rate`: each word is substituted, deleted or gets a word inserted before it."""
    pieces = _SPLIT_KEEP_WS.split(text)  # even indices: words (maybe empty), odd: whitespace runs
    vocab = [w for w in pieces[0::2] if w]
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1 or not piece or rng.random() >= rate:
            out.append(piece)
            continue
        op = rng.randrange(3)
        if op == 0:  # substitution
            out.append(rng.choice(vocab))
        elif op == 1:  # insertion before the word
            out.append(rng.choice(vocab) + " " + piece)
        # op == 2: deletion (the surrounding whitespace stays)
    return "".join(out)


def _licence_blocks() -> list[str]:
    """Real boilerplate: paragraphs of the Python licence that ships with the interpreter."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    paras = [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if len(p) > 300]
    return paras[:12] or ["Permission to use, copy, modify, and distribute this software is hereby granted."]


HEADERS = ("# Copyright (c) {y} The Example Project contributors. All rights reserved.",
           "Documentation for release {y}.{m} -- generated automatically, do not edit.",
           "<!-- page cached {y}-{m:02d}-01 by the mirror; original source linked below -->")
FOOTERS = ("Home | Downloads | Documentation | Community | Success Stories | News | Events\n"
           "Copyright {y} Example Foundation. Privacy policy. Report a bug. Back to top.",
           "Was this page helpful? Yes / No. Edit this page on the project site. Last updated {y}-{m:02d}.")


def variant(text: str, kind: str, rng: random.Random, licences: Sequence[str]) -> str:
    """A realistic near copy: small word edits plus boilerplate added or removed, or a truncation."""
    y, m = rng.randrange(1995, 2026), rng.randrange(1, 13)
    if kind == "header":
        return HEADERS[rng.randrange(len(HEADERS))].format(y=y, m=m) + "\n" + perturb(text, 0.01, rng)
    if kind == "footer":
        return perturb(text, 0.01, rng) + "\n\n" + FOOTERS[rng.randrange(len(FOOTERS))].format(y=y, m=m)
    if kind == "licence":
        return licences[rng.randrange(len(licences))] + "\n\n" + perturb(text, 0.005, rng)
    if kind == "strip":  # header and footer lines removed, as a cleaner mirror would
        lines = text.splitlines()
        cut = max(1, len(lines) // 12)
        return "\n".join(lines[cut: len(lines) - cut]) if len(lines) > 4 else text
    if kind.startswith("trunc"):  # the first share of the words (a truncated crawl)
        keep = int(kind[5:]) / 100
        pieces = _SPLIT_KEEP_WS.split(text)
        return "".join(pieces[: max(1, int(len(pieces) * keep))])
    raise ValueError(kind)


REALISTIC_KINDS = ("header", "footer", "licence", "strip", "trunc90", "trunc75", "trunc50")


def rate_tag(rate: float) -> str:
    return f"e{round(rate * 1000):03d}"


# ----------------------------------------------------------------------------------------------
# Build


@dataclass
class Corpus:
    out: Path
    files: list[Path]
    n_docs: int
    n_bytes: int
    n_families: int
    n_singletons: int
    truth_path: Path
    manifest: dict = field(default_factory=dict)


def build(
    out: Path,
    *,
    seed: int = 0,
    scale: int = 1,
    n_files: int = 8,
    rates: Sequence[float] = DEFAULT_RATES,
    family_fraction: float = 0.5,
    max_overlap: float = 0.05,
    min_words: int = 50,
    max_chars: int = 60_000,
    ngram: int = NGRAM,
    kinds: Sequence[str] = (),
    log=print,
) -> Corpus:
    t0 = time.perf_counter()
    out = Path(out)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("part-*.jsonl"):
        old.unlink()

    base = stdlib_sources(min_words, max_chars) + pydoc_topics(min_words, max_chars)
    candidates = [(f"k{k}:{name}", cipher(text, k)) for k in range(scale) for name, text in base]
    sets = [shingle_set(text, ngram) for _, text in candidates]
    order = list(range(len(candidates)))
    random.Random(f"order-{seed}").shuffle(order)
    picked = select_distinct(sets, order, max_overlap)
    log(f"originals: {len(picked)} distinct of {len(candidates)} candidates "
        f"({len(base)} texts x scale {scale}, overlap <= {max_overlap})")

    rng = random.Random(f"perturb-{seed}")
    licences = _licence_blocks()
    docs: list[tuple[str, str]] = []
    families = []
    n_singletons = 0
    for fam, idx in enumerate(picked):
        source_name, text = candidates[idx]
        orig_id = f"f{fam:06d}-orig"
        docs.append((orig_id, text))
        if rng.random() >= family_fraction:
            n_singletons += 1
            continue
        ids, texts = [orig_id], [text]
        for rate in rates:
            copy = perturb(text, rate, rng)
            ids.append(f"f{fam:06d}-{rate_tag(rate)}")
            texts.append(copy)
            docs.append((ids[-1], copy))
        for kind in kinds:
            ids.append(f"f{fam:06d}-{kind}")
            texts.append(variant(text, kind, rng, licences))
            docs.append((ids[-1], texts[-1]))
        fam_sets = [sets[idx]] + [shingle_set(t, ngram) for t in texts[1:]]
        m = len(ids)
        jac = [[1.0] * m for _ in range(m)]
        for a in range(m):
            for b in range(a + 1, m):
                jac[a][b] = jac[b][a] = round(jaccard(fam_sets[a], fam_sets[b]), 6)
        families.append({"family": fam, "origin": source_name, "ids": ids,
                         "rates": [0.0, *rates, *([None] * len(kinds))], "jaccard": jac})

    random.Random(f"shuffle-{seed}").shuffle(docs)
    files = [data_dir / f"part-{i:05d}.jsonl" for i in range(n_files)]
    handles = [f.open("w", encoding="utf-8") for f in files]
    n_bytes = 0
    try:
        for i, (doc_id, text) in enumerate(docs):
            line = json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n"
            handles[i % n_files].write(line)
            n_bytes += len(line.encode("utf-8"))
    finally:
        for h in handles:
            h.close()

    # All pairs of the corpus with Jaccard >= PAIR_FLOOR, across families too: shared boilerplate can
    # make documents of different families near-duplicates, and the scoring must know.
    all_sets = [shingle_ids(t, ngram) for _, t in docs]
    jac_all = sparse.triu(pairwise_jaccard(all_sets), k=1).tocoo()
    keep = jac_all.data >= PAIR_FLOOR
    pairs = [[docs[a][0], docs[b][0], round(float(j), 6)]
             for a, b, j in zip(jac_all.row[keep], jac_all.col[keep], jac_all.data[keep], strict=True)]
    truth_path = out / "truth.json"
    truth_path.write_text(json.dumps({"ngram": ngram, "rates": list(rates), "kinds": list(kinds), "seed": seed,
                                      "scale": scale, "families": families, "pair_floor": PAIR_FLOOR,
                                      "pairs": pairs}))
    manifest = {
        "seed": seed, "scale": scale, "ngram": ngram, "rates": list(rates), "kinds": list(kinds),
        "family_fraction": family_fraction,
        "max_overlap": max_overlap, "min_words": min_words, "max_chars": max_chars,
        "python": sys.version.split()[0], "stdlib": sysconfig.get_paths()["stdlib"],
        "n_docs": len(docs), "n_originals": len(picked), "n_families": len(families),
        "n_singletons": n_singletons, "n_bytes_jsonl": n_bytes,
        "n_text_bytes": sum(len(t.encode("utf-8")) for _, t in docs),
        "files": [f.name for f in files], "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {len(docs)} docs ({n_bytes / 1e6:.1f} MB JSONL) in {n_files} files, "
        f"{len(families)} families, {n_singletons} singletons -> {out} ({manifest['build_seconds']} s)")
    return Corpus(out=out, files=files, n_docs=len(docs), n_bytes=n_bytes, n_families=len(families),
                  n_singletons=n_singletons, truth_path=truth_path, manifest=manifest)


def load_corpus(out: Path) -> Corpus:
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text())
    return Corpus(out=out, files=[out / "data" / f for f in manifest["files"]], n_docs=manifest["n_docs"],
                  n_bytes=manifest["n_bytes_jsonl"], n_families=manifest["n_families"],
                  n_singletons=manifest["n_singletons"], truth_path=out / "truth.json", manifest=manifest)


def ensure_corpus(out: Path, *, log=print, **params) -> Corpus:
    """Reuse the corpus in `out` if it was built with the same parameters, else build it."""
    out = Path(out)
    if (out / "manifest.json").exists():
        c = load_corpus(out)
        m = c.manifest
        want = {"seed": params.get("seed", 0), "scale": params.get("scale", 1),
                "rates": list(params.get("rates", DEFAULT_RATES)), "kinds": list(params.get("kinds", ()))}
        if all(m.get(k) == v for k, v in want.items()) and len(c.files) == params.get("n_files", 8) \
                and all(f.exists() for f in c.files) and c.truth_path.exists() \
                and "pairs" in json.loads(c.truth_path.read_text()):
            log(f"reusing corpus {out}: {c.n_docs} docs, {c.n_bytes / 1e6:.1f} MB")
            return c
    return build(out, log=log, **params)


# ----------------------------------------------------------------------------------------------
# Scoring (shared by both benchmarks)


@dataclass
class Score:
    threshold: float
    removed: int
    tp: int
    fp: int
    fn: int
    should_remove: int
    fp_chained: int = 0  # false positives with Jaccard >= threshold to some removed document
    pair_recall: float = 1.0  # pairs with Jaccard >= threshold + 0.05 of which at most one survived
    strong_pairs: int = 0


    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _components(n: int, edges: list[tuple[int, int]]) -> int:
    from scipy.sparse.csgraph import connected_components

    if not edges:
        return n
    a, b = zip(*edges, strict=True)
    g = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[0]


def score(truth: dict, kept_ids: set[str], all_ids: set[str], threshold: float) -> Score:
    """Document-level precision/recall of a dedup result against the exact Jaccard of all pairs.

    A removed document is a true positive if its true Jaccard to some kept document is >= threshold,
    else a false positive; ``fp_chained`` counts the false positives that do reach the threshold with
    some other (removed) document, i.e. were lost to clustering by transitivity and the choice of
    representative. Misses: the kept documents linked by Jaccard >= threshold form components, and
    every component of c kept documents should have lost c - 1 of them. ``pair_recall`` is the share
    of pairs with Jaccard >= threshold + 0.05 of which at most one document survived.
    """
    removed = all_ids - kept_ids
    near = [(a, b, j) for a, b, j in truth["pairs"] if j >= threshold]
    to_kept: set[str] = set()
    to_any: set[str] = set()
    kept_edges = []
    for a, b, _ in near:
        to_any.update((a, b))
        if b in kept_ids:
            to_kept.add(a)
        if a in kept_ids:
            to_kept.add(b)
        if a in kept_ids and b in kept_ids:
            kept_edges.append((a, b))
    tp = len(removed & to_kept)
    fp_docs = removed - to_kept
    fp_chained = len(fp_docs & to_any)
    index = {d: i for i, d in enumerate(sorted({x for e in kept_edges for x in e}))}
    fn = len(index) - _components(len(index), [(index[a], index[b]) for a, b in kept_edges]) if index else 0
    strong = [(a, b) for a, b, j in truth["pairs"] if j >= threshold + 0.05]
    caught = sum(1 for a, b in strong if not (a in kept_ids and b in kept_ids))
    s = Score(threshold=threshold, removed=len(removed), tp=tp, fp=len(fp_docs), fn=fn, should_remove=tp + fn,
              fp_chained=fp_chained)
    s.pair_recall = caught / len(strong) if strong else 1.0
    s.strong_pairs = len(strong)
    return s


def corpus_ids(corpus: Corpus) -> set[str]:
    ids: set[str] = set()
    for f in corpus.files:
        with f.open(encoding="utf-8") as fh:
            ids.update(json.loads(line)["id"] for line in fh)
    return ids


def lsh_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """The usual bands x rows for a MinHash LSH threshold: the least false-positive plus false-negative
    area under the S-curve, equal weights (datasketch's `_optimal_param`), given to datatrove."""
    best, best_err = (1, 1), float("inf")
    lo, hi = np.linspace(0.0, threshold, 1001), np.linspace(threshold, 1.0, 1001)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo ** r) ** b, lo)
            fn = np.trapezoid((1 - hi ** r) ** b, hi)
            if fp + fn < best_err:
                best, best_err = (b, r), fp + fn
    return best


# ----------------------------------------------------------------------------------------------
# Running longmix (both benchmarks)


def longmix_executable() -> str:
    """The `longmix` console script next to the running interpreter, else the one on PATH."""
    import shutil

    here = Path(sys.executable).parent / "longmix"
    found = str(here) if here.exists() else shutil.which("longmix")
    if not found:
        raise SystemExit("longmix is not installed: run this with the project's .venv/bin/python")
    return found


def run_longmix(files: Sequence[Path], out: Path, *, threshold: float, num_perm: int, ngram: int,
                workers: int, extra: Sequence[str] = ()) -> dict:
    """`longmix dedup` on the JSONL files into a fresh `out`; wall time, stage reports and kept ids."""
    import shutil
    import subprocess

    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [longmix_executable(), "dedup", *map(str, files), "-o", str(out), "--threshold", str(threshold),
           "--num-perm", str(num_perm), "--ngram", str(ngram), "--workers", str(workers),
           "--text-field", "text", "--id-field", "id", *extra]
    log_path = out.parent / f"{out.name}.log"
    with log_path.open("w") as logf:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"longmix dedup failed (exit {proc.returncode}):\n{log_path.read_text()[-3000:]}")
    reports = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/report.json"))}
    stage_seconds = {name: r.get("seconds") for name, r in reports.items()}
    shard_files = sorted((out / "near_dedup" / "shards").rglob("*.parquet"))
    kept = [i for f in shard_files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    removed = {}
    for stage in ("exact_dedup", "near_dedup"):
        p = out / stage / "removed.parquet"
        removed[stage] = pq.read_table(p).num_rows if p.exists() else None
    return {"command": " ".join(cmd), "wall_seconds": wall, "stage_seconds": stage_seconds,
            "reports": reports, "kept_ids": kept, "removed_rows": removed, "log": str(log_path)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=1, help="multiply the number of families by K")
    ap.add_argument("--files", type=int, default=8, help="number of JSONL files")
    ap.add_argument("--rates", type=lambda s: tuple(float(x) for x in s.split(",")), default=DEFAULT_RATES)
    ap.add_argument("--family-fraction", type=float, default=0.5)
    ap.add_argument("--max-overlap", type=float, default=0.05)
    ap.add_argument("--max-chars", type=int, default=60_000)
    args = ap.parse_args(argv)
    build(args.out, seed=args.seed, scale=args.scale, n_files=args.files, rates=args.rates,
          family_fraction=args.family_fraction, max_overlap=args.max_overlap, max_chars=args.max_chars)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
