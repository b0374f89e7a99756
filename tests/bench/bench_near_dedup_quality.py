"""Near-dedup quality: precision, recall and F1 of `longmix dedup` and datatrove against exact Jaccard.

    python tests/bench/bench_near_dedup_quality.py [--thresholds 0.8,0.7] [--workers 2]

Builds (or reuses) the corpus of near_dup_corpus.py: stdlib sources and pydoc topics of very different
lengths, with planted families of near copies: word edits at known rates, and realistic variants
(a header line or a footer block added, a licence block of the Python licence prepended, header and
footer lines stripped, truncation to 90/75/50% of the words). Ground truth is the exact word 5-gram
Jaccard of every pair in the corpus (across families too: shared boilerplate counts). At each threshold
it runs ``longmix dedup`` and datatrove 0.10.1's MinHash pipeline (its own virtualenv, whitespace word
tokenizer, datasketch's optimal bands x rows for the threshold) on the same files in the same run, and
scores which documents survived (an exact duplicate is a near duplicate with Jaccard 1):

* a removed document is a true positive if its true Jaccard to some kept document is >= the threshold,
  else a false positive;
* misses: kept documents linked by Jaccard >= threshold form components, and each component of c
  kept documents should have lost c - 1 of them;
* precision = TP / removed, recall = TP / (TP + misses);
* pair recall: of the pairs with Jaccard >= threshold + 0.05, the share with at most one survivor.

It also checks that the ground truth's normalization (lowercase, punctuation folded, whitespace split)
gives the same words as longmix's own shingling on every document, and prints how many differ.
Exit status 1 if ``--min-f1`` is given and any threshold scores below it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import near_dup_corpus as ndc  # noqa: E402


def normalization_check(corpus: ndc.Corpus) -> tuple[int, int, list[str]]:
    """Documents whose longmix word list differs from the ground truth's: (n_differ, n_docs, examples)."""
    try:
        import pyarrow as pa

        from longmix.data.dedup.minhash import shingle_text
    except ImportError:
        return -1, 0, ["longmix.data.minhash.shingle_text not importable"]
    differ, total, examples = 0, 0, []
    for f in corpus.files:
        with f.open(encoding="utf-8") as fh:
            recs = [json.loads(line) for line in fh]
        words = shingle_text(pa.array([r["text"] for r in recs], type=pa.large_string())).to_pylist()
        for rec, lm_words in zip(recs, words, strict=True):
            total += 1
            lm_words = [w for w in lm_words if w]
            ref = ndc.normalize_words(rec["text"])
            if lm_words != ref:
                differ += 1
                if len(examples) < 3:
                    only = sorted(set(ref) - set(lm_words))[:5]
                    examples.append(f"{rec['id']}: {len(ref)} vs {len(lm_words)} words; "
                                    f"truth-only e.g. {only}")
    return differ, total, examples


def per_rate_table(truth: dict, kept: set[str]) -> list[tuple[str, int, float, float, float]]:
    """Per kind of copy (edit rate or variant): copies, mean/min Jaccard to the original, share removed."""
    by_rate: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for fam in truth["families"]:
        for i, doc_id in enumerate(fam["ids"]):
            tag = doc_id.split("-", 1)[1]
            by_rate[tag].append((fam["jaccard"][0][i] if i else 1.0, doc_id not in kept))
    rows = []
    for rate in sorted(by_rate, key=lambda t: (t[0] != "o", not t[1:].isdigit(), t)):
        vals = by_rate[rate]
        js = [j for j, _ in vals]
        rows.append((rate, len(vals), statistics.mean(js), min(js), sum(r for _, r in vals) / len(vals)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thresholds", default="0.8,0.7", help="comma-separated Jaccard thresholds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench" / "quality")
    ap.add_argument("--min-f1", type=float, default=None, help="exit 1 if any threshold's F1 is below this")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]

    corpus_dir = args.corpus or REPO / "build" / "bench" / f"near_dup_real_s1_seed{args.seed}"
    corpus = ndc.ensure_corpus(corpus_dir, seed=args.seed, scale=1, n_files=args.files,
                               kinds=ndc.REALISTIC_KINDS)
    truth = json.loads(corpus.truth_path.read_text())
    if truth["ngram"] != args.ngram:
        raise SystemExit(f"corpus truth is for {truth['ngram']}-grams, not {args.ngram}")
    all_ids = ndc.corpus_ids(corpus)
    print(f"corpus {corpus.out}: {corpus.n_docs} docs, {corpus.n_bytes / 1e6:.1f} MB, {corpus.n_families} "
          f"families of 1 original + {len(truth['rates'])} edited copies (rates {truth['rates']}) + "
          f"{len(truth['kinds'])} variants ({', '.join(truth['kinds'])}), {corpus.n_singletons} singletons; "
          f"{len(truth['pairs'])} pairs with Jaccard >= {truth['pair_floor']}")

    differ, total, examples = normalization_check(corpus)
    if differ >= 0:
        print(f"normalization check: {differ} of {total} documents get different words from longmix's "
              f"shingle_text than from the ground truth's normalization")
        for e in examples:
            print(f"  {e}")

    results = []
    per_rate = {}
    peers = []
    if not args.skip_datatrove:
        from bench_near_dedup_throughput import ensure_datatrove_venv, run_datatrove
        dt_python = ensure_datatrove_venv()
    for t in thresholds:
        res = ndc.run_longmix(corpus.files, args.work / f"t{t}", threshold=t, num_perm=args.num_perm,
                              ngram=args.ngram, workers=args.workers)
        s = ndc.score(truth, set(res["kept_ids"]), all_ids, t)
        lsh = res["reports"].get("near_dedup", {}).get("lsh", {})
        results.append((t, s, res, lsh))
        per_rate[t] = per_rate_table(truth, set(res["kept_ids"]))
        if not args.skip_datatrove:
            bands, rows = ndc.lsh_bands_rows(t, args.num_perm)
            dt = run_datatrove(corpus, args.work / f"datatrove_t{t}", workers=args.workers, ngram=args.ngram,
                               bands=bands, rows=rows, tokenizer="split", python=dt_python)
            peers.append((t, ndc.score(truth, set(dt["kept_ids"]), all_ids, t), dt,
                          {"bands": bands, "rows": rows}))

    print()
    print(f"{'tool':>10} {'threshold':>9} {'bands x rows':>12} {'removed':>8} {'TP':>6} "
          f"{'FP':>5} {'FP-ch':>5} {'FN':>5} {'precision':>9} {'recall':>7} {'F1':>6} {'pair R':>7} {'wall s':>7}")
    rows_out = [("longmix", r) for r in results] + [("datatrove", r) for r in peers]
    for tool, (t, s, res, lsh) in sorted(rows_out, key=lambda x: (-x[1][0], x[0] != "longmix")):
        br = f"{lsh.get('bands', '?')} x {lsh.get('rows', '?')}"
        print(f"{tool:>10} {t:>9.2f} {br:>12} {s.removed:>8} {s.tp:>6} {s.fp:>5} {s.fp_chained:>5} {s.fn:>5} "
              f"{s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {s.pair_recall:>7.3f} {res['wall_seconds']:>7.1f}")
    for (t, s, _, _), (_, d, _, _) in zip(results, peers, strict=False):
        print(f"threshold {t}: F1 longmix {s.f1:.4f} vs datatrove {d.f1:.4f} (ratio {s.f1 / max(d.f1, 1e-9):.3f}); "
              f"pair recall at J >= {t + 0.05:.2f}: {s.pair_recall:.4f} of {s.strong_pairs} pairs "
              f"(datatrove {d.pair_recall:.4f})")

    print("FP-ch: false positives that do reach the threshold with another family member, but not with "
          "any kept one (lost to transitive clustering and the choice of representative)")
    print("\ncopies removed by edit rate (true Jaccard to the family's original):")
    print(f"{'copy':>9} {'copies':>6} {'mean J':>7} {'min J':>6} " +
          " ".join(f"{'removed@' + str(t):>11}" for t in thresholds))
    rates = [r[0] for r in per_rate[thresholds[0]]]
    for k, rate in enumerate(rates):
        _, n, mean_j, min_j, _ = per_rate[thresholds[0]][k]
        print(f"{rate:>9} {n:>6} {mean_j:>7.3f} {min_j:>6.3f} " +
              " ".join(f"{per_rate[t][k][4]:>11.1%}" for t in thresholds))
    print("(orig = the originals, eNNN = word edits at rate NNN/1000; a family keeps at least one document)")
    print(f"\ncommand: {results[0][2]['command']}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "corpus": {"dir": str(corpus.out), **{k: corpus.manifest[k] for k in
                       ("n_docs", "n_bytes_jsonl", "n_families", "n_singletons", "rates")}},
            "normalization_differ": differ,
            "results": [{"tool": tool, "threshold": t, "lsh": lsh, "precision": s.precision, "recall": s.recall,
                         "f1": s.f1, **vars(s), "wall_seconds": res["wall_seconds"],
                         "stage_seconds": res.get("stage_seconds"), "command": res.get("command")}
                        for tool, (t, s, res, lsh) in rows_out],
        }, indent=2) + "\n")
    if args.min_f1 is not None and any(s.f1 < args.min_f1 for _, s, _, _ in results):
        print(f"F1 below {args.min_f1}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
