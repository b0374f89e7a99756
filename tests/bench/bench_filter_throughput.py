"""Filter-stage throughput: fastText quality model + every heuristic on, against the floor of merely
reading and writing the same document shards.

    python tests/bench/bench_filter_throughput.py --mb 50 --workers 1

Builds (in --work) document shards of about --shard-mb each from the demo corpus (code, docs, legal;
repeated with a per-copy suffix until --mb of text), trains a quality model on it (prose vs code, the
`longmix quality train` defaults), then times over the same shards, with --workers processes:

* floor: read each shard (pyarrow, in --batch-docs batches) and write it back (zstd Parquet);
* filter: `longmix.data.filters.stage:filter_task` (the stage's task) with the model and all heuristics;
* the same without the model (heuristics only), to show where the time goes.

Prints docs/s and MB/s (text bytes) per worker for both and the ratio filter/floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

ALL_ON = {"min_chars": 50, "max_chars": 10_000_000, "min_words": 10, "max_words": 2_000_000,
          "min_mean_word_len": 2.0, "max_mean_word_len": 20.0, "max_symbol_ratio": 1.0, "max_bullet_line_frac": 0.9,
          "min_punct_line_frac": 0.01, "max_dup_line_frac": 0.5, "max_dup_line_char_frac": 0.5,
          "max_dup_ngram_frac": 0.5, "dup_ngram_n": 5}


def make_shards(work: Path, mb: float, shard_mb: float) -> list[Path]:
    import pyarrow as pa

    from longmix.data.demo_corpus import write_demo_corpus
    from longmix.formats.documents import DOC_SCHEMA, write_table

    shards = sorted((work / "shards").glob("*.parquet"))
    if shards:
        return shards
    corpus = work / "corpus"
    write_demo_corpus(corpus)
    base = [(src, json.loads(line)["text"]) for src in ("code", "docs", "legal")
            for f in sorted((corpus / src).glob("*.jsonl")) for line in f.open()]
    rows, size, total, copy, k = [], 0, 0, 0, 0
    while total < mb * 1e6:
        for src, text in base:
            t = f"{text}\n# copy {copy}\n"
            rows.append({"id": f"{src}-{copy}-{len(rows)}", "source": src, "text": t, "n_chars": len(t),
                         "meta": "{}", "content_hash": ""})
            size += len(t)
            if size >= shard_mb * 1e6:
                write_table(work / "shards" / f"{k:05d}.parquet", pa.Table.from_pylist(rows, schema=DOC_SCHEMA))
                total, rows, size, k = total + size, [], 0, k + 1
                if total >= mb * 1e6:
                    break
        copy += 1
    if rows:
        write_table(work / "shards" / f"{k:05d}.parquet", pa.Table.from_pylist(rows, schema=DOC_SCHEMA))
    return sorted((work / "shards").glob("*.parquet"))


def train_model(work: Path) -> Path:
    from longmix.data.filters.fasttext_models import TrainParams
    from longmix.data.filters.train import read_texts, train_quality

    out = work / "quality.bin"
    if not out.is_file():
        corpus = work / "corpus"
        result = train_quality(read_texts([str(corpus / "docs" / "*.jsonl")]),
                               read_texts([str(corpus / "code" / "*.jsonl")]), out, TrainParams(), 0.1)
        print(f"quality model: held-out {result['held_out']}")
    return out


def floor_task(in_path: str, out_path: str, batch_docs: int) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from longmix.formats.documents import write_table

    batches = list(pq.ParquetFile(in_path).iter_batches(batch_size=batch_docs))
    table = pa.Table.from_batches(batches)
    write_table(Path(out_path), table)
    return table.num_rows, int(pc.sum(pc.binary_length(table.column("text").cast(pa.large_binary()))).as_py())


def filter_run(in_path: str, out_dir: str, rel: str, cfg: dict) -> tuple[int, int]:
    from longmix.data.filters.settings import FilterConfig
    from longmix.data.filters.stage import filter_task

    params = {s: FilterConfig.model_validate(cfg).heuristics.model_dump() for s in ("code", "docs", "legal")}
    stats = filter_task(in_path=in_path, out_dir=out_dir, rel_path=rel, dropped_path=f"{out_dir}/dropped/{rel}",
                        cfg=cfg, params=params)
    return stats["in"], stats["bytes_in"]


def timed(pool: ProcessPoolExecutor, fn, jobs: list[tuple]) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    results = list(pool.map(fn, *zip(*jobs, strict=True)))
    return time.perf_counter() - t0, sum(r[0] for r in results), sum(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("build/bench-filter"))
    ap.add_argument("--mb", type=float, default=50.0, help="MB of text in all")
    ap.add_argument("--shard-mb", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-docs", type=int, default=512)
    ap.add_argument("--max-chunks", type=int, default=16)
    args = ap.parse_args()

    import multiprocessing as mp

    from longmix.data.filters.settings import FilterConfig
    from longmix.pipeline.executors import _worker_init

    shards = make_shards(args.work, args.mb, args.shard_mb)
    model = train_model(args.work)
    cfg = FilterConfig(enabled=True, heuristics=ALL_ON, quality={"model": str(model), "threshold": 0.5},
                       batch_docs=args.batch_docs, max_chunks=args.max_chunks).model_dump()
    out = args.work / "out"
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        list(pool.map(int, range(args.workers)))  # start the workers before timing
        t_floor, n, nbytes = timed(pool, floor_task, [(str(p), str(out / "floor" / p.name), args.batch_docs)
                                                      for p in shards])
        t_filter, n2, _ = timed(pool, filter_run, [(str(p), str(out / "filter"), p.name, cfg) for p in shards])
        no_model = {**cfg, "quality": {"model": None}}
        t_heur, _, _ = timed(pool, filter_run, [(str(p), str(out / "heuristics"), p.name, no_model) for p in shards])
    assert n == n2
    w = args.workers
    print(f"{len(shards)} shards, {n:,} documents, {nbytes / 1e6:,.1f} MB of text, {w} worker(s); "
          f"max_chunks {args.max_chunks}, chunk_chars 2000")
    for name, t in (("read+write (floor)", t_floor), ("filter (model + all heuristics)", t_filter),
                    ("filter (heuristics only)", t_heur)):
        print(f"{name:34s} {t:7.2f} s  {n / t / w:9,.0f} docs/s/worker  {nbytes / 1e6 / t / w:7.2f} MB/s/worker")
    print(f"ratio filter / floor: {t_filter / t_floor:.2f}x the time (heuristics only: {t_heur / t_floor:.2f}x)")


if __name__ == "__main__":
    main()
