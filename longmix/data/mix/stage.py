"""Mix stage: per-document repetition counts from lengths only (source, n_tokens), never texts.

Writes `mix/plan.arrow` (shard, row, source, n_tokens, count per tokenized document) and a report with
the plan's target vs achieved tokens per source x bucket. Documents used zero times are counted as
dropped: `bucket_removed` when their bucket was removed for their source, else `not_sampled`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.core.errors import UserError
from longmix.data.mix.buckets import assign_buckets, default_edges, resolve_bucket
from longmix.data.mix.plan import MixParams, MixShortfallError, SourceMix, plan_mix
from longmix.data.mix.settings import MixConfig
from longmix.data.recipe import Recipe
from longmix.formats.ipc import read_ipc, write_ipc
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob

PLAN = "plan.arrow"  # per tokenized document: shard, row, source, n_tokens, count


def mix_params(recipe: Recipe) -> MixParams:
    """The recipe's `stages.mix` resolved against its sources and seq_len: what the seeded core needs. Every
    problem is the recipe's, said in one line."""
    cfg, names = recipe.stages.mix, [s.name for s in recipe.sources]
    unknown = sorted(set(cfg.sources) - set(names))
    if unknown:
        raise UserError(f"stages.mix.sources names unknown source(s) {', '.join(unknown)}; sources: {', '.join(names)}")
    if recipe.seq_len is None:
        raise UserError("the mix needs `seq_len:` in the recipe (the training sequence length)")
    edges = cfg.edges or [int(e) for e in default_edges(recipe.seq_len)]
    try:
        return _resolve(cfg, names, edges, recipe.seed)
    except ValueError as exc:
        raise UserError(f"stages.mix: {exc}") from None


def _resolve(cfg: MixConfig, names: list[str], edges: list[int], seed: int) -> MixParams:
    sources = []
    for name in names:
        s = cfg.sources.get(name)
        weights = {(int(k) if k.isdigit() else k): v for k, v in (s.bucket_weights or {}).items()} if s else None
        sources.append(SourceMix(name=name, share=s.share if s else None, bucket_weights=weights or None,
                                 long_share=s.long_share if s else None,
                                 remove_buckets=tuple(s.remove_buckets) if s else (),
                                 max_epochs=s.max_epochs if s else None,
                                 long_select=(s.long_select.by, s.long_select.top) if s and s.long_select else None))
    return MixParams(total_tokens=cfg.total_tokens, sources=tuple(sources), edges=tuple(edges),
                     long_min_tokens=cfg.long_min_tokens, max_epochs=cfg.max_epochs, seed=seed,
                     on_shortfall=cfg.on_shortfall)


def _lengths(files: list[Path], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(shard, row, source index, n_tokens) of every tokenized document, in shard order."""
    value_set = pa.array(names)
    shard, row, src, lens = [], [], [], []
    for i, f in enumerate(files):
        t = read_ipc(f, ["source", "n_tokens"])
        n = t.num_rows
        shard.append(np.full(n, i, np.int32))
        row.append(np.arange(n, dtype=np.int64))
        src.append(pc.index_in(t.column("source"), value_set=value_set).to_numpy().astype(np.int16))
        lens.append(t.column("n_tokens").to_numpy().astype(np.int32))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))  # noqa: E731
    return cat(shard, np.int32), cat(row, np.int64), cat(src, np.int16), cat(lens, np.int32)


def _scores(files: list[Path], tokenized: list[Path]) -> dict[str, np.ndarray]:
    """The longdep stage's per-document columns, in tokenized-shard order (row-aligned with _lengths); a
    scores file that does not hold the same documents as its tokenized shard is refused, never guessed."""
    if len(files) != len(tokenized):
        raise UserError(f"longdep wrote {len(files)} score files for {len(tokenized)} tokenized shards; "
                        "delete its folder to rescore")
    tables = []
    for f, t in zip(files, tokenized, strict=True):
        scores = pq.read_table(f, columns=["id", "longdep_score", "longdep_share"])
        if not scores.column("id").equals(read_ipc(t, ["id"]).column("id")):
            raise UserError(f"{f}: its rows are not the documents of {t}; delete the longdep folder to rescore")
        tables.append(scores)
    return {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in tables]) if tables
            else np.zeros(0) for c in ("longdep_score", "longdep_share")}


def _counts(names: list[str], src: np.ndarray, counts: np.ndarray, removed: np.ndarray,
            not_selected: np.ndarray) -> dict[str, Any]:
    """Stage counts from arrays: in, kept (used at least once), dropped by reason, per source."""
    used = counts > 0
    per_source = {}
    for i, n in enumerate(names):
        mine = src == i
        per_source[n] = {"in": int(mine.sum()), "kept": int((mine & used).sum()),
                         "dropped": int((mine & ~used).sum()), "quarantined": 0}
    dropped = {"bucket_removed": int((~used & removed).sum()),
               "long_not_selected": int((~used & ~removed & not_selected).sum()),
               "not_sampled": int((~used & ~removed & ~not_selected).sum())}
    return {"in": int(len(src)), "kept": int(used.sum()), "dropped": {k: v for k, v in dropped.items() if v},
            "quarantined": {}, "sources": per_source}


class Mix(Stage):
    """Per-document repetition counts from lengths only: the plan pack follows (plan.py)."""

    name = "mix"
    requires = ("tokenize", "longdep")  # lengths from the tokenized shards; scores where a source selects by them
    exports = ("mix",)  # the plan's report: the manifest's mix table

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.tokenizer is not None and recipe.stages.mix.enabled

    def prepare(self, recipe: Recipe) -> MixParams:
        return mix_params(recipe)  # a bad mix fails before anything is written

    def check(self, recipe: Recipe, params: MixParams) -> None:
        selecting = sorted(n for n, s in recipe.stages.mix.sources.items() if s.long_select)
        if selecting and not recipe.stages.longdep.enabled:
            raise UserError(f"stages.mix.sources.{selecting[0]}.long_select needs the longdep stage's scores: "
                            "set stages.longdep.enabled: true and its scorer")

    def settings(self, recipe: Recipe, params: MixParams) -> list[Any]:
        return [recipe.stages.mix, recipe.seq_len, recipe.seed]

    def run(self, job: StageJob) -> dict[str, Any]:
        recipe, params = job.recipe, job.plan
        names = recipe.source_names
        files = job.output_of("tokenize").files()
        shard, row, src, lens = _lengths(files, names)
        selecting = any(s.long_select for s in params.sources)
        scores = _scores(job.output_of("longdep").files(), files) if selecting else None
        try:
            plan = plan_mix(src, lens, params, scores)
        except MixShortfallError as exc:
            raise UserError(f"{exc} (stages.mix.on_shortfall: error)") from None
        bucket = assign_buckets(lens, np.asarray(params.edges))
        removed = np.zeros(len(src), dtype=bool)
        for i, sm in enumerate(params.sources):
            for b in sm.remove_buckets:
                removed |= (src == i) & (bucket == resolve_bucket(b, params.edges))
        write_ipc(job.dir / PLAN, pa.table({
            "shard": shard, "row": row, "source": src, "n_tokens": lens, "count": plan.counts}))
        # Its one output, the plan, is what pack reads (job.output_of("mix").files()).
        job.set_counts({**_counts(names, src, plan.counts, removed, ~plan.eligible),
                        "outputs": [{"path": PLAN, "rows": int(len(src))}]})
        return {"inputs": [_relative(f, job.ctx.output) for f in files], "mix": plan.report.to_dict()}

    def warnings(self, report: StageReport) -> list[str]:
        return [f"SHORTFALL {sf['message']}" for sf in report.extra("mix")["shortfalls"]]


def _relative(path: Path, root: Path) -> str:
    """A stage file as the report names it: relative to the output, so the report holds on any node."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
