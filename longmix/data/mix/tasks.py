"""The mix plan as tasks, so no process holds the corpus's lengths: the steps of plan.py, each where it
needs to run.

1. **shard tasks** (one per tokenized shard): each document's source, length, bucket and (for sources that
   select long documents) score, routed to its (source, bucket) cell; the shard's per-cell sums;
2. **select tasks** (one per source with `long_select`): that source's long cells only, whole: which of its
   long documents are eligible (select.py, on the same documents in the same order as one process);
3. on the driver, from per-cell sums alone: targets, fills and shortfalls (`cell_targets`), refused before
   any cell is planned when the recipe says `on_shortfall: error`;
4. **cell tasks** (one per cell): the cell's documents in document order, planned from their lengths alone
   (`plan_cell`), their counts routed back to their shards;
5. **plan tasks** (one per shard): the shard's rows of the plan; the driver writes `plan.arrow` one shard at
   a time.
The plan is the same, row for row and count for count, as plan_mix over the whole corpus in one process
(tests/integration/data/test_mix_tasks.py). A cell cannot be split without changing its plan (its seeded
subset is drawn over the whole cell), so the largest task holds the largest cell (71 bytes a document of
it, measured in tests/bench/bench_global_steps_scaling.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.core.errors import UserError
from longmix.data.mix.buckets import assign_buckets, resolve_bucket
from longmix.data.mix.plan import (
    CellTotals,
    MixParams,
    MixReport,
    cell_targets,
    check_shortfalls,
    mix_report,
    plan_cell,
)
from longmix.data.mix.select import select_long
from longmix.formats.ipc import ipc_parts, read_ipc, write_ipc
from longmix.formats.routed import read_slices, slices_for, write_routed
from longmix.pipeline.stage import StageJob

PLAN = "plan.arrow"  # per tokenized document: shard, row, source, n_tokens, count
PLAN_SCHEMA = pa.schema([("shard", pa.int32()), ("row", pa.int64()), ("source", pa.int16()),
                         ("n_tokens", pa.int32()), ("count", pa.int32())])
CELL_ROWS = pa.schema([("row", pa.int64()), ("n_tokens", pa.int32())])
SELECT_ROWS = pa.schema([("row", pa.int64()), ("n_tokens", pa.int32()), ("doc", pa.int64()), ("score", pa.float64())])
COUNT_ROWS = pa.schema([("row", pa.int64()), ("count", pa.int32())])


def _sizes(starts: list[int], stops: list[int]) -> np.ndarray:
    return np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)


def source_index(sources: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """Each document's source as its index in the recipe's sources (int16)."""
    return pc.index_in(sources, value_set=pa.array(names)).to_numpy(zero_copy_only=False).astype(np.int16)


def shard_task(*, tokenized: str, scores: str | None, score_by: dict[str, str], names: list[str],
               edges: list[int], first_doc: int, out_path: str) -> dict[str, Any]:
    """One tokenized shard's documents routed to their cells (source x bucket, cell = source * buckets +
    bucket), and the shard's tokens per cell. `scores`: the longdep stage's file for this shard, whose rows
    must be the shard's documents (refused, never guessed); `score_by`: the score column each selecting
    source (by index, as a string) ranks its long documents by."""
    t = read_ipc(Path(tokenized), ["id", "source", "n_tokens"] if scores else ["source", "n_tokens"])
    src = source_index(t.column("source"), names).astype(np.int64)
    lens = t.column("n_tokens").to_numpy().astype(np.int64)
    n_bkt = len(edges) + 1
    cell = src * n_bkt + assign_buckets(lens, np.asarray(edges, dtype=np.int64))
    score = np.full(len(lens), np.nan) if score_by else None
    if scores is not None and score_by:
        scored = pq.read_table(scores, columns=["id", *sorted(set(score_by.values()))])
        if not scored.column("id").equals(t.column("id")):
            raise UserError(f"{scores}: its rows are not the documents of {tokenized}; delete the longdep folder "
                            "to rescore")
        for s, by in score_by.items():
            mine = src == int(s)
            score[mine] = scored.column(by).to_numpy(zero_copy_only=False)[mine]
    rows = np.arange(len(lens), dtype=np.int64)
    table = pa.table({"row": rows, "n_tokens": lens.astype(np.int32)})
    if score_by:  # what a select task needs: document order and the score (only then: 16 bytes a document)
        table = table.append_column("doc", pa.array(rows + first_doc)).append_column("score", pa.array(score))
    cells = len(names) * n_bkt
    offsets = write_routed(Path(out_path), table, cell, cells)
    return {"offsets": offsets, "tokens": np.bincount(cell, weights=lens, minlength=cells).astype(np.int64).tolist(),
            "docs": int(len(lens))}


def select_task(*, files: list[str], starts: list[int], stops: list[int], buckets: list[int], long_bucket: int,
                source: int, by: str, top: float, out_paths: list[str]) -> dict[str, Any]:
    """One source's long cells whole (the slices, cell by cell: `buckets` names each slice's bucket;
    `out_paths` one per cell, in bucket order): each document's eligibility, written per cell in cell order,
    with select.py's record and each cell's eligible tokens and documents."""
    table = read_slices(files, starts, stops, SELECT_ROWS)
    bkt = np.repeat(np.asarray(buckets, dtype=np.int64), _sizes(starts, stops))
    doc = table.column("doc").to_numpy()
    order = np.argsort(doc, kind="stable")  # document order: select.py breaks ties by it
    lens = table.column("n_tokens").to_numpy().astype(np.int64)
    eligible_sorted, records = select_long(np.full(len(doc), source)[order], bkt[order], lens[order], long_bucket,
                                           {source: (by, top)}, {by: table.column("score").to_numpy()[order]})
    eligible = np.empty(len(doc), dtype=bool)
    eligible[order] = eligible_sorted
    cells = sorted(set(buckets))
    tokens, docs = [], []
    for path, b in zip(out_paths, cells, strict=True):
        mine = bkt == b
        write_ipc(Path(path), pa.table({"eligible": eligible[mine]}))
        tokens.append(int(lens[mine & eligible].sum()))
        docs.append(int((mine & eligible).sum()))
    return {"record": records[str(source)], "buckets": cells, "tokens": tokens, "docs": docs}


def cell_task(*, files: list[str], starts: list[int], stops: list[int], eligible_path: str | None, want: int,
              seed: int, source: int, bucket: int, shards: list[int], n_shards: int, out_path: str
              ) -> dict[str, Any]:
    """One cell planned from its documents' lengths (in document order: shard by shard, row by row), its
    counts routed back to their shards (`shards`: the shard of each slice)."""
    t = read_slices(files, starts, stops, CELL_ROWS)
    lens = t.column("n_tokens").to_numpy()
    eligible = read_ipc(Path(eligible_path)).column("eligible").to_numpy(zero_copy_only=False) \
        if eligible_path else np.ones(len(lens), dtype=bool)
    counts = np.zeros(len(lens), dtype=np.int32)
    counts[eligible], achieved = plan_cell(lens[eligible], want, seed, source, bucket)
    shard = np.repeat(np.asarray(shards, dtype=np.int64), _sizes(starts, stops))
    offsets = write_routed(Path(out_path), pa.table({"row": t.column("row"), "count": counts}), shard, n_shards)
    used = counts > 0
    return {"offsets": offsets, "achieved": int(achieved), "used": int(used.sum()), "docs": int(len(lens)),
            "hist": np.bincount(counts).astype(int).tolist() if len(counts) else [],
            "not_selected": int((~used & ~eligible).sum())}


def plan_task(*, tokenized: str, names: list[str], shard: int, files: list[str], starts: list[int],
              stops: list[int], out_path: str) -> dict[str, Any]:
    """One shard's rows of the plan: (shard, row, source, n_tokens, count) in row order."""
    t = read_ipc(Path(tokenized), ["source", "n_tokens"])
    counts = np.zeros(t.num_rows, dtype=np.int32)
    got = read_slices(files, starts, stops, COUNT_ROWS)
    counts[got.column("row").to_numpy()] = got.column("count").to_numpy()
    write_ipc(Path(out_path), pa.table({
        "shard": np.full(t.num_rows, shard, np.int32), "row": np.arange(t.num_rows, dtype=np.int64),
        "source": source_index(t.column("source"), names), "n_tokens": t.column("n_tokens").to_numpy().astype(np.int32),
        "count": counts}))
    return {"rows": t.num_rows}


def plan_with_tasks(job: StageJob, files: list[Path], score_files: list[Path] | None, names: list[str],
                    params: MixParams) -> tuple[MixReport, dict[str, Any], dict[str, Any]]:
    """Steps 1-5 above as tasks of `job` over the tokenized shards (and, when a source selects long
    documents, the longdep stage's score files): `job.dir`/plan.arrow written; (report, stage counts, the
    split's figures) returned. Raises MixShortfallError before any cell is planned when the mix says
    on_shortfall: error."""
    n_bkt = len(params.edges) + 1
    cells = len(names) * n_bkt
    selections = {s: sm.long_select for s, sm in enumerate(params.sources) if sm.long_select}
    # 1. every shard's documents routed to their cells
    first = np.concatenate([[0], np.cumsum([read_ipc(f, ["n_tokens"]).num_rows for f in files])]).astype(int)
    cell_files = [job.dir / "cells" / f"{i:05d}.arrow" for i in range(len(files))]
    shard_stats = job.run_tasks([job.task(
        f"cells-{i:05d}", shard_task, cost=int(first[i + 1] - first[i]), tokenized=job.reads(f),
        scores=job.reads(score_files[i]) if score_files else None,
        score_by={str(s): by for s, (by, _) in selections.items()}, names=names, edges=list(params.edges),
        first_doc=int(first[i]), out_path=job.path("cells", f"{i:05d}.arrow")) for i, f in enumerate(files)],
        "documents by cell", counted=False)
    offsets = [s["offsets"] for s in shard_stats]
    corpus = np.sum([s["tokens"] for s in shard_stats], axis=0).reshape(len(names), n_bkt) if files else \
        np.zeros((len(names), n_bkt), dtype=np.int64)
    docs = np.sum([np.diff(o) for o in offsets], axis=0).reshape(len(names), n_bkt) if files else \
        np.zeros((len(names), n_bkt), dtype=np.int64)
    # 2. long documents selected per source, over that source's long cells only
    avail, avail_docs, eligible_files, selected = corpus.copy(), docs.copy(), {}, {}
    long_bucket = params.long_bucket()
    select = []
    for s, (by, top) in selections.items():
        slices = [(f, o[c], o[c + 1], c % n_bkt) for c in range(s * n_bkt + long_bucket, (s + 1) * n_bkt)
                  for f, o in zip(cell_files, offsets, strict=True) if o[c + 1] > o[c]]
        outs = {b: job.dir / "select" / f"{s:03d}-{b:03d}.arrow" for b in sorted({x[3] for x in slices})}
        eligible_files.update({(s, b): p for b, p in outs.items()})
        select.append(job.task(f"select-{s:03d}", select_task, cost=sum(x[2] - x[1] for x in slices),
                               files=[job.reads(x[0]) for x in slices], starts=[x[1] for x in slices],
                               stops=[x[2] for x in slices], buckets=[x[3] for x in slices],
                               long_bucket=long_bucket, source=s, by=by, top=top,
                               out_paths=[job.path("select", p.name) for p in outs.values()]))
    for task, st in zip(select, job.run_tasks(select, "long documents selected", counted=False), strict=True):
        s = task.kwargs["source"]
        selected[str(s)] = st["record"]
        for b, tokens, n in zip(st["buckets"], st["tokens"], st["docs"], strict=True):
            avail[s, b], avail_docs[s, b] = tokens, n
    # 3. targets from per-cell totals alone; a mix that must not fall short stops here
    totals = CellTotals(corpus_tokens=corpus, avail_tokens=avail, avail_docs=avail_docs)
    wants, shortfalls = cell_targets(totals, params)
    check_shortfalls(shortfalls if params.on_shortfall == "error" else [], params)
    # 4. every cell planned from its own lengths
    cell_tasks = []
    for c in range(cells):
        s, b = divmod(c, n_bkt)
        mine = [(i, o[c], o[c + 1]) for i, o in enumerate(offsets) if o[c + 1] > o[c]]
        cell_tasks.append(job.task(
            f"plan-cell-{c:04d}", cell_task, cost=sum(hi - lo for _, lo, hi in mine),
            files=[job.reads(cell_files[i]) for i, _, _ in mine], starts=[lo for _, lo, _ in mine],
            stops=[hi for _, _, hi in mine], shards=[i for i, _, _ in mine], n_shards=len(files),
            eligible_path=job.reads(eligible_files[s, b]) if (s, b) in eligible_files else None,
            want=int(wants.want[s, b]), seed=params.seed, source=s, bucket=b,
            out_path=job.path("counts", f"{c:04d}.arrow")))
    cell_stats = job.run_tasks(cell_tasks, "cells planned", counted=False)
    achieved = np.array([st["achieved"] for st in cell_stats], dtype=np.int64).reshape(len(names), n_bkt)
    used = np.array([st["used"] for st in cell_stats], dtype=np.int64).reshape(len(names), n_bkt)
    hist = np.zeros(max((len(st["hist"]) for st in cell_stats), default=1), dtype=np.int64)
    for st in cell_stats:
        hist[:len(st["hist"])] += np.asarray(st["hist"], dtype=np.int64)
    report = mix_report(params, totals, wants, achieved, used, hist, shortfalls, selected)
    # 5. every shard's rows of the plan, then the plan written one shard at a time
    count_files = [job.dir / "counts" / f"{c:04d}.arrow" for c in range(cells)]
    plan_tasks = []
    for i, f in enumerate(files):
        cf, cs, ce = slices_for(count_files, [st["offsets"] for st in cell_stats], i)
        plan_tasks.append(job.task(f"plan-shard-{i:05d}", plan_task, cost=int(first[i + 1] - first[i]),
                                   tokenized=job.reads(f), names=names, shard=i,
                                   files=[job.reads(x) for x in cf], starts=cs, stops=ce,
                                   out_path=job.path("plan-parts", f"{i:05d}.arrow")))
    job.run_tasks(plan_tasks, "plan rows", counted=False)
    with ipc_parts(job.dir / PLAN, PLAN_SCHEMA) as add:
        for i in range(len(files)):
            add(read_ipc(job.dir / "plan-parts" / f"{i:05d}.arrow"))
    return report, _counts(names, params, docs, cell_stats, n_bkt), {
        "docs": int(first[-1]), "shard_tasks": len(files), "select_tasks": len(select), "cell_tasks": cells,
        "largest_cell_docs": int(docs.max()) if docs.size else 0}


def _counts(names: list[str], params: MixParams, docs: np.ndarray, cell_stats: list[dict[str, Any]],
            n_bkt: int) -> dict[str, Any]:
    """Stage counts from the cells' figures: in, kept (used at least once), dropped by reason, per source."""
    removed = {(s, resolve_bucket(b, params.edges)) for s, sm in enumerate(params.sources) for b in sm.remove_buckets}
    dropped = {"bucket_removed": 0, "long_not_selected": 0, "not_sampled": 0}
    per_source = {n: {"in": 0, "kept": 0, "dropped": 0, "quarantined": 0} for n in names}
    for c, st in enumerate(cell_stats):
        s, b = divmod(c, n_bkt)
        unused = st["docs"] - st["used"]
        if (s, b) in removed:
            dropped["bucket_removed"] += unused
        else:
            dropped["long_not_selected"] += st["not_selected"]
            dropped["not_sampled"] += unused - st["not_selected"]
        row = per_source[names[s]]
        row["in"], row["kept"], row["dropped"] = row["in"] + st["docs"], row["kept"] + st["used"], \
            row["dropped"] + unused
    total = int(docs.sum())
    kept = sum(r["kept"] for r in per_source.values())
    return {"in": total, "kept": kept, "dropped": {k: v for k, v in dropped.items() if v}, "quarantined": {},
            "sources": per_source}
