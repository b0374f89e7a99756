"""Near-dedup throughput: longmix vs datatrove's MinHash pipeline on the same corpus and workers.

    python tests/bench/bench_near_dedup_throughput.py --workers 2

builds (or reuses) the near-duplicate corpus of near_dup_corpus.py at ``--scale K``, then runs

* longmix: ``longmix dedup <jsonl files> -o OUT --threshold T --num-perm P --ngram N --workers W``
  (ingest + exact dedup + MinHash LSH near-dedup, kept documents written as Parquet);
* datatrove (in its own virtualenv, ``.venv-datatrove``, run as a subprocess so longmix's environment
  never imports it): JsonlReader -> MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster,
  JsonlReader -> MinhashDedupFilter -> JsonlWriter, each stage on a LocalPipelineExecutor with
  ``workers=W`` (tasks: one per input file for the reading stages, one per band for the buckets, 1 for the
  clustering, as datatrove requires), the same n-gram size and the same bands x rows that longmix
  derives from (threshold, num_perm) with datasketch's optimal-parameter routine.

Both timings are end to end: wall clock of the whole command from process start to exit, including
interpreter start-up, reading the JSONL input (datatrove reads it twice, in its first and last stage)
and writing the kept documents. longmix's near_dedup stage seconds (from its report.json) are printed
too, with what they leave out. F1 for both comes from which ids survived, scored against the exact
word 5-gram Jaccard of the planted families (near_dup_corpus.score).

Output compression: datatrove writes its kept documents as plain JSONL here (``compression=None``; its
default is gzip); longmix runs twice, with its default (zstd Parquet at every stage) and with
``--compression none``, the same uncompressed output as datatrove's. Both ratios are printed.

datatrove's text normalization is set to match the ground truth's (lowercase, punctuation folded,
whitespace normalized; its number and diacritics rewriting turned off). Its English word tokenizer is
spaCy's (datatrove's default for English); ``--datatrove-tokenizer split`` swaps in str.split, which is
faster and on punctuation-free text gives the same words, so ``both`` reports the ratio against each.

If ``.venv-datatrove`` (or $LONGMIX_DATATROVE_VENV) lacks datatrove it is created with:
    python3 -m venv .venv-datatrove && \
    .venv-datatrove/bin/pip install datatrove==0.10.1 spacy regex "xxhash<4" orjson tokenizers
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DT_VENV = Path(os.environ.get("LONGMIX_DATATROVE_VENV", REPO / ".venv-datatrove"))
DT_PACKAGES = ["datatrove==0.10.1", "spacy", "regex", "xxhash<4", "orjson", "tokenizers"]


# ----------------------------------------------------------------------------------------------
# datatrove side: runs inside .venv-datatrove (``python THIS_FILE _datatrove_worker ...``)


def _datatrove_worker(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--ngram", type=int, required=True)
    ap.add_argument("--bands", type=int, required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--tokenizer", choices=["spacy", "split"], required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """Whitespace split: the same words as spaCy's on datatrove's punctuation-free simplified text."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    language = "en" if args.tokenizer == "spacy" else SplitTokenizer("en")
    config = MinhashConfig(
        n_grams=args.ngram,
        num_buckets=args.bands,
        hashes_per_bucket=args.rows,
        seed=1,
        norm_config=TextNormConfig(norm_numbers=False, norm_unicode_diacritics=False),
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )
    work = Path(args.work)

    def reader():
        return JsonlReader(args.input, glob_pattern="*.jsonl", text_key="text", id_key="id", compression=None)

    stages = {
        "signatures": LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(str(work / "signatures"), config=config, language=language)],
            tasks=args.files, workers=args.workers, logging_dir=str(work / "logs/signatures")),
        "buckets": LocalPipelineExecutor(
            [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)],
            tasks=args.bands, workers=args.workers, logging_dir=str(work / "logs/buckets")),
        "cluster": LocalPipelineExecutor(
            [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=config)],
            tasks=1, workers=1, logging_dir=str(work / "logs/cluster")),
        "filter": LocalPipelineExecutor(
            [reader(), MinhashDedupFilter(str(work / "remove_ids")),
             JsonlWriter(str(work / "output"), compression=None)],
            tasks=args.files, workers=args.workers, logging_dir=str(work / "logs/filter")),
    }
    seconds = {}
    t_pipe = time.perf_counter()
    for name, executor in stages.items():
        t0 = time.perf_counter()
        executor.run()
        seconds[name] = round(time.perf_counter() - t0, 3)
    pipeline_s = time.perf_counter() - t_pipe

    kept = []
    for f in sorted((work / "output").glob("*.jsonl")):
        with f.open(encoding="utf-8") as fh:
            kept.extend(json.loads(line)["id"] for line in fh)
    Path(args.result).write_text(json.dumps({
        "stage_seconds": seconds, "pipeline_seconds": round(pipeline_s, 3),
        "import_seconds": round(t_pipe - t_start, 3), "kept_ids": kept,
    }))
    return 0


# ----------------------------------------------------------------------------------------------
# driver: runs in longmix's environment


def ensure_datatrove_venv(log=print) -> Path:
    py = DT_VENV / "bin" / "python"
    probe = "import datatrove, spacy, regex, xxhash, orjson, tokenizers"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return py
    base = shutil.which("python3") or sys.executable
    log(f"creating {DT_VENV} with: {base} -m venv {DT_VENV} && "
        f"{shlex.join([str(py), '-m', 'pip', 'install', *DT_PACKAGES])}")
    if not py.exists():
        subprocess.run([base, "-m", "venv", str(DT_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *DT_PACKAGES], check=True)
    return py


def run_datatrove(corpus, work: Path, *, workers: int, ngram: int, bands: int, rows: int,
                  tokenizer: str, python: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    result = work / "result.json"
    cmd = [str(python), str(Path(__file__).resolve()), "_datatrove_worker",
           "--input", str(corpus.files[0].parent), "--work", str(work), "--workers", str(workers),
           "--files", str(len(corpus.files)), "--ngram", str(ngram), "--bands", str(bands),
           "--rows", str(rows), "--tokenizer", tokenizer, "--result", str(result)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with (work / "datatrove.log").open("w") as logf:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (work / "datatrove.log").read_text()[-3000:]
        raise RuntimeError(f"datatrove run failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(result.read_text())
    res["wall_seconds"] = wall
    res["command"] = " ".join(cmd)
    return res


def fmt_row(cols, widths):
    cells = zip(cols, widths, strict=True)
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(cells))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_datatrove_worker"]:
        return _datatrove_worker(argv[1:])

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=int, default=2, help="corpus scale K (K x the families of scale 1)")
    ap.add_argument("--files", type=int, default=8, help="JSONL files in the corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--datatrove-tokenizer", choices=["spacy", "split", "both"], default="both")
    ap.add_argument("--corpus", type=Path, default=None, help="corpus folder (default build/bench/...)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench" / "throughput")
    ap.add_argument("--skip-longmix", action="store_true")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest is reported")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import near_dup_corpus as ndc

    corpus_dir = args.corpus or REPO / "build" / "bench" / f"near_dup_s{args.scale}_seed{args.seed}"
    corpus = ndc.ensure_corpus(corpus_dir, seed=args.seed, scale=args.scale, n_files=args.files)
    truth = json.loads(corpus.truth_path.read_text())
    all_ids = ndc.corpus_ids(corpus)
    mb = corpus.n_bytes / 1e6
    bands, rows = ndc.lsh_bands_rows(args.threshold, args.num_perm)
    print(f"corpus: {corpus.n_docs} docs, {mb:.1f} MB JSONL "
          f"({corpus.manifest['n_text_bytes'] / 1e6:.1f} MB text) in {len(corpus.files)} files; "
          f"{corpus.n_families} families, {corpus.n_singletons} singletons")
    print(f"params: threshold {args.threshold}, num_perm {args.num_perm} -> {bands} bands x {rows} rows, "
          f"{args.ngram}-grams, {args.workers} workers, cpus on machine: {os.cpu_count()}")

    runners = {}
    if not args.skip_longmix:
        runners["longmix"] = lambda: ndc.run_longmix(
            corpus.files, args.work / "longmix", threshold=args.threshold, num_perm=args.num_perm,
            ngram=args.ngram, workers=args.workers)
        # datatrove writes its output uncompressed here (JsonlWriter compression=None): the same for longmix.
        runners["longmix (uncompressed)"] = lambda: ndc.run_longmix(
            corpus.files, args.work / "longmix_uncompressed", threshold=args.threshold, num_perm=args.num_perm,
            ngram=args.ngram, workers=args.workers, extra=["--compression", "none"])
    if not args.skip_datatrove:
        py = ensure_datatrove_venv()
        toks = ["spacy", "split"] if args.datatrove_tokenizer == "both" else [args.datatrove_tokenizer]
        for tok in toks:
            runners[f"datatrove ({tok})"] = lambda tok=tok: run_datatrove(
                corpus, args.work / f"datatrove_{tok}", workers=args.workers, ngram=args.ngram,
                bands=bands, rows=rows, tokenizer=tok, python=py)
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for rep in range(args.repeat):  # tools interleaved, so a burst of load elsewhere hits all alike
        for name, run in runners.items():
            res = run()
            runs[name].append(res)
            print(f"[{rep + 1}/{args.repeat}] {name}: {res['wall_seconds']:.1f} s wall; "
                  f"stage seconds {res['stage_seconds']}", flush=True)
    results: dict[str, dict] = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["wall_seconds"])
        if any(set(r["kept_ids"]) != set(best["kept_ids"]) for r in rs):
            print(f"warning: {name} kept different documents across repeats")
        best["all_walls"] = [round(r["wall_seconds"], 2) for r in rs]
        best["score"] = ndc.score(truth, set(best["kept_ids"]), all_ids, args.threshold)
        results[name] = best

    print()
    widths = [24, 9, 9, 8, 8, 7, 7, 7, 7]
    print(f"best of {args.repeat} run(s) per tool, wall clock end to end:")
    print(fmt_row(["tool", "wall s", "docs/s", "MB/s", "removed", "P", "R", "F1", "kept"], widths))
    for name, res in results.items():
        s = res["score"]
        w = res["wall_seconds"]
        print(fmt_row([name, f"{w:.1f}", f"{corpus.n_docs / w:.1f}", f"{mb / w:.2f}", s.removed,
                       f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", len(res["kept_ids"])], widths))
    if args.repeat > 1:
        print("all walls (s): " + "; ".join(f"{n} {r['all_walls']}" for n, r in results.items()))
    if "longmix" in results:
        lm = results["longmix"]
        near = lm["stage_seconds"].get("near_dedup")
        if near:
            print(f"\nlongmix near_dedup stage alone: {near:.1f} s ({corpus.n_docs / near:.1f} docs/s, "
                  f"{mb / near:.2f} MB/s) -- signatures, band grouping, components, writing kept shards; "
                  f"excludes ingest of the JSONL ({lm['stage_seconds'].get('ingest', 'n/a')} s), exact dedup "
                  f"({lm['stage_seconds'].get('exact_dedup', 'n/a')} s) and process start-up")
        for lm_name, lm_res in results.items():
            if not lm_name.startswith("longmix"):
                continue
            for name, res in results.items():
                if name.startswith("datatrove"):
                    ratio = res["wall_seconds"] / lm_res["wall_seconds"]
                    print(f"ratio {lm_name}/{name} (end to end, docs/s): {ratio:.2f}x"
                          f"   [datatrove pipeline alone {res['pipeline_seconds']:.1f} s, imports "
                          f"{res['import_seconds']:.1f} s]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "corpus": {"dir": str(corpus.out), **{k: corpus.manifest[k] for k in
                       ("n_docs", "n_bytes_jsonl", "n_text_bytes", "n_families", "n_singletons", "scale")}},
            "params": vars(args) | {"bands": bands, "rows": rows, "corpus": str(corpus_dir),
                                    "work": str(args.work), "json": str(args.json)},
            "results": {name: {k: v for k, v in res.items() if k != "kept_ids"} | {
                "kept": len(res["kept_ids"]), "docs_per_s": corpus.n_docs / res["wall_seconds"],
                "mb_per_s": mb / res["wall_seconds"], "precision": res["score"].precision,
                "recall": res["score"].recall, "f1": res["score"].f1, "score": vars(res["score"])}
                for name, res in results.items()},
        }, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
