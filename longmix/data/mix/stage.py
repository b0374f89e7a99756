"""Mix stage: per-document repetition counts from lengths only (source, n_tokens), never texts, planned as
tasks per shard and per (source, bucket) cell (tasks.py) so the driver holds per-cell figures only.

Writes `mix/plan.arrow` (shard, row, source, n_tokens, count per tokenized document) and a report with
the plan's target vs achieved tokens per source x bucket. Documents used zero times are counted as
dropped: `bucket_removed` when their bucket was removed for their source, `long_not_selected` when their
source's long_select left them out, else `not_sampled`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longmix.core.errors import UserError
from longmix.data.mix.buckets import default_edges
from longmix.data.mix.plan import MixParams, MixShortfallError, SourceMix
from longmix.data.mix.settings import MixConfig
from longmix.data.mix.tasks import PLAN, plan_with_tasks
from longmix.data.recipe import Recipe
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob


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
        selecting = any(sm.long_select for sm in params.sources)
        score_files = job.output_of("longdep").files() if selecting else None
        if score_files is not None and len(score_files) != len(files):
            raise UserError(f"longdep wrote {len(score_files)} score files for {len(files)} tokenized shards; "
                            "delete its folder to rescore")
        try:
            report, counts, split = plan_with_tasks(job, files, score_files, names, params)
        except MixShortfallError as exc:
            raise UserError(f"{exc} (stages.mix.on_shortfall: error)") from None
        # Its one output, the plan, is what pack reads (job.output_of("mix").files()).
        job.set_counts({**counts, "outputs": [{"path": PLAN, "rows": split["docs"]}]})
        return {"inputs": [_relative(f, job.ctx.output) for f in files], "mix": report.to_dict(), "split": split}

    def warnings(self, report: StageReport) -> list[str]:
        return [f"SHORTFALL {sf['message']}" for sf in report.extra("mix")["shortfalls"]]


def _relative(path: Path, root: Path) -> str:
    """A stage file as the report names it: relative to the output, so the report holds on any node."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
