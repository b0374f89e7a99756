"""The mixture plan: how many times each document is used, computed from per-document lengths only.

Targets are set per source x length bucket from the source shares and the within-source shape (bucket
weights or a long-token share), then each cell is filled on its own: every document gets the same whole
number of passes and a seeded random subset one more, choosing the subset whose token sum is closest to
the remainder. So a cell lands within half its longest document of its target, unless the target needs
more than ``max_epochs`` passes over the cell, in which case the cell gets exactly ``max_epochs`` passes
and a shortfall is reported (logged as a warning, or raised with ``on_shortfall="error"``). Targets are
never moved between cells: the mix you asked for is the mix you get, or you are told how far off it is.
The steps split the way a cluster needs them: `cell_totals` of any split of the documents add up, the
targets come from those totals alone (`cell_targets`), and each cell is planned from its own documents'
lengths alone (`plan_cell`); plan_mix runs them in one process. See docs/mixing.md for the semantics of
every parameter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from longmix.data.mix.buckets import (
    assign_buckets,
    bucket_names,
    doc_counts,
    resolve_bucket,
    token_counts,
    validate_edges,
)
from longmix.data.mix.report import MixReport, Shortfall
from longmix.data.mix.select import select_long

log = logging.getLogger(__name__)
SHARE_ATOL = 1e-6


class MixShortfallError(ValueError):
    """Raised by plan_mix with on_shortfall='error' when some target cannot be met."""


@dataclass(frozen=True)
class SourceMix:
    """How one source enters the mix (resolved from the recipe's `stages.mix.sources.<name>`)."""

    name: str
    share: float | None = None
    bucket_weights: dict[int | str, float] | None = None
    long_share: float | None = None
    remove_buckets: tuple[int | str, ...] = ()
    max_epochs: int | None = None
    long_select: tuple[str, float] | None = None  # (score column, top share) of its long documents

    def __post_init__(self) -> None:
        object.__setattr__(self, "remove_buckets", tuple(self.remove_buckets))
        for key, w in (self.bucket_weights or {}).items():
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"source {self.name!r}: bucket weight for {key!r} must be >= 0, got {w}")


@dataclass(frozen=True)
class MixParams:
    """The whole mix in plain values: budget, sources in index order, bucket edges, caps and seed. The recipe's
    `stages.mix` (settings.py, MixConfig) is the one settings model; this is what the seeded core needs of it
    once resolved against the sources and seq_len, checked as a whole (a ValueError, said in one line)."""

    sources: tuple[SourceMix, ...]
    edges: tuple[int, ...]
    total_tokens: int | None = None
    long_min_tokens: int | None = None
    max_epochs: int = 4
    seed: int = 0
    on_shortfall: Literal["warn", "error"] = "warn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "edges", tuple(int(e) for e in self.edges))
        validate_edges(self.edges)
        names = [s.name for s in self.sources]
        if not names:
            raise ValueError("the mix lists no sources")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source listed twice in the mix: {', '.join(dupes)}")
        given = [s.share is not None for s in self.sources]
        if any(given) and not all(given):
            missing = [s.name for s in self.sources if s.share is None]
            raise ValueError(f"set a share for every source or for none (natural shares); missing: {missing}")
        if all(given):
            total = sum(s.share for s in self.sources)  # type: ignore[misc]
            if abs(total - 1.0) > SHARE_ATOL:
                raise ValueError(f"source shares must sum to 1, got {total:.6g}")
        if self.long_min_tokens is not None and self.long_min_tokens not in self.edges:
            raise ValueError(f"long_min_tokens={self.long_min_tokens} must be one of the edges {self.edges}")
        for s in self.sources:
            for b in (*s.remove_buckets, *(s.bucket_weights or {})):
                resolve_bucket(b, self.edges)

    def long_bucket(self) -> int:
        """First bucket counted as long: the one starting at long_min_tokens (default: the first edge)."""
        threshold = self.long_min_tokens if self.long_min_tokens is not None else self.edges[0]
        return self.edges.index(threshold) + 1


@dataclass
class MixPlan:
    counts: np.ndarray  # int32 repetitions per document, aligned with the input arrays
    report: MixReport
    eligible: np.ndarray  # False: a long document left out by its source's long_select


def plan_mix(source_idx: np.ndarray, n_tokens: np.ndarray, params: MixParams,
             scores: dict[str, np.ndarray] | None = None) -> MixPlan:
    """Repetition count per document so the mix meets ``params`` (see the module docstring). ``scores``
    (per-document columns of the longdep stage) serve sources with ``long_select``: only their selected long
    documents are available to the plan (select.py); natural shares still come from the whole corpus."""
    src = np.asarray(source_idx, dtype=np.int64)
    lens = np.asarray(n_tokens, dtype=np.int64)
    if src.shape != lens.shape or src.ndim != 1:
        raise ValueError("source_idx and n_tokens must be 1-D arrays of the same length")
    if lens.size and lens.min() < 0:
        raise ValueError("n_tokens must be non-negative")
    edges = np.asarray(params.edges, dtype=np.int64)
    n_src, n_bkt = len(params.sources), len(edges) + 1
    bkt = assign_buckets(lens, edges)
    long_bucket = params.long_bucket()
    selections = {s: sm.long_select for s, sm in enumerate(params.sources) if sm.long_select}
    eligible, selected = select_long(src, bkt, lens, long_bucket, selections, scores)
    totals = cell_totals(src, bkt, lens, eligible, n_src, n_bkt)
    avail = totals.avail_tokens
    wants, shortfalls = cell_targets(totals, params)
    counts = np.zeros(lens.size, dtype=np.int32)
    achieved = np.zeros_like(avail)
    used = np.zeros_like(avail)
    # One stable sort groups documents by cell, each in document order; each cell is then planned from its
    # own lengths alone (plan_cell), so cells can be planned anywhere, in any order.
    cell = src * n_bkt + bkt
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_src * n_bkt + 1))
    for s in range(n_src):
        for b in range(n_bkt):
            idx = order[bounds[s * n_bkt + b] : bounds[s * n_bkt + b + 1]]
            idx = idx[eligible[idx]]
            counts[idx], achieved[s, b] = plan_cell(lens[idx], int(wants.want[s, b]), params.seed, s, b)
            used[s, b] = int(np.count_nonzero(counts[idx]))
    hist = np.bincount(counts) if counts.size else np.zeros(1, dtype=np.int64)
    report = mix_report(params, totals, wants, achieved, used, hist, shortfalls, selected)
    return MixPlan(counts=counts, report=report, eligible=eligible)


def mix_report(params: MixParams, totals: CellTotals, wants: CellWants, achieved: np.ndarray, used: np.ndarray,
               hist: np.ndarray, shortfalls: list[Shortfall], selected: dict[str, Any]) -> MixReport:
    """The report of a planned mix, from per-cell figures alone (`hist`: documents per repetition count, 0
    included); logs the shortfalls and raises MixShortfallError when the mix says on_shortfall: error."""
    report = MixReport(
        sources=[s.name for s in params.sources],
        buckets=bucket_names(np.asarray(params.edges, dtype=np.int64)),
        available_tokens=totals.avail_tokens,
        available_docs=totals.avail_docs,
        target_tokens=wants.target,
        achieved_tokens=achieved,
        used_docs=used,
        long_bucket=params.long_bucket(),
        long_share_target=[s.long_share for s in params.sources],
        repetition_hist={int(k): int(v) for k, v in enumerate(hist) if v},
        shortfalls=shortfalls,
        long_select={params.sources[int(k)].name: v for k, v in selected.items()},
    )
    check_shortfalls(shortfalls, params)
    return report


def check_shortfalls(shortfalls: list[Shortfall], params: MixParams) -> None:
    """Log each shortfall; raise MixShortfallError when the mix says on_shortfall: error."""
    for sf in shortfalls:
        log.warning(sf.message)
    if shortfalls and params.on_shortfall == "error":
        raise MixShortfallError(f"{len(shortfalls)} mix target(s) unmet; first: {shortfalls[0].message}")


@dataclass(frozen=True)
class CellTotals:
    """Per source x bucket sums, all the cross-cell steps need: partial sums over any split of the documents
    (a shard each) add up to the corpus's (`+`)."""

    corpus_tokens: np.ndarray  # (S, B) int64, every document (natural shares come from the corpus as it is)
    avail_tokens: np.ndarray  # (S, B) int64, the documents the plan may use (long_select's eligible ones)
    avail_docs: np.ndarray  # (S, B) int64

    def __add__(self, other: CellTotals) -> CellTotals:
        return CellTotals(self.corpus_tokens + other.corpus_tokens, self.avail_tokens + other.avail_tokens,
                          self.avail_docs + other.avail_docs)


def cell_totals(src: np.ndarray, bkt: np.ndarray, lens: np.ndarray, eligible: np.ndarray, n_src: int,
                n_bkt: int) -> CellTotals:
    """The sums of some documents (all of them, or one shard's)."""
    return CellTotals(corpus_tokens=token_counts(src, bkt, lens, n_src, n_bkt),
                      avail_tokens=token_counts(src, bkt, lens * eligible, n_src, n_bkt),
                      avail_docs=doc_counts(src[eligible], bkt[eligible], n_src, n_bkt))


@dataclass(frozen=True)
class CellWants:
    target: np.ndarray  # (S, B) int64 tokens the mix asks of each cell
    want: np.ndarray  # (S, B) int64 tokens each cell is filled to: its target, capped at max_epochs passes


def cell_targets(totals: CellTotals, params: MixParams) -> tuple[CellWants, list[Shortfall]]:
    """Every cell's target and fill from the per-cell totals alone, with the shortfalls in report order (the
    shapes with nowhere to go, then the capped cells source by source)."""
    avail = totals.avail_tokens
    names = bucket_names(np.asarray(params.edges, dtype=np.int64))
    targets, shortfalls = _targets(avail, params, params.long_bucket(), names, totals.corpus_tokens.sum(axis=1))
    want = np.zeros_like(targets)
    for s, sm in enumerate(params.sources):
        cap = sm.max_epochs if sm.max_epochs is not None else params.max_epochs
        for b in range(avail.shape[1]):
            tgt = int(targets[s, b])
            if tgt > cap * avail[s, b]:
                shortfalls.append(_cell_shortfall(sm.name, names[b], tgt, int(avail[s, b]), cap))
            want[s, b] = min(tgt, cap * int(avail[s, b]))
    return CellWants(target=targets, want=want), shortfalls


def plan_cell(lens: np.ndarray, want: int, seed: int, source: int, bucket: int) -> tuple[np.ndarray, int]:
    """(repetitions, tokens achieved) of one cell's documents, given in document order, from their lengths
    alone: every one the same whole number of passes and a subset, seeded by (seed, source, bucket), one
    more (module docstring)."""
    counts = np.zeros(len(lens), dtype=np.int32)
    rng = np.random.default_rng([seed, source, bucket])
    achieved = _fill_cell(np.arange(len(lens)), np.asarray(lens, dtype=np.int64), want, rng, counts)
    return counts, achieved


def _targets(
    avail: np.ndarray, params: MixParams, long_bucket: int, names: list[str], per_source: np.ndarray
) -> tuple[np.ndarray, list[Shortfall]]:
    """Integer token targets per source x bucket, plus shortfalls for shapes that have nowhere to go;
    `per_source`: each source's tokens in the whole corpus (natural shares and the default total)."""
    total = params.total_tokens if params.total_tokens is not None else int(per_source.sum())
    if params.sources[0].share is None:
        # Natural shares come from the corpus as it is, before any bucket is removed.
        shares = per_source / per_source.sum() if per_source.sum() else np.zeros(len(per_source))
    else:
        shares = np.array([s.share for s in params.sources], dtype=np.float64)
    n_bkt = avail.shape[1]
    targets = np.zeros(avail.shape, dtype=np.float64)
    shortfalls: list[Shortfall] = []
    for s, sm in enumerate(params.sources):
        t_src = shares[s] * total
        weights = np.ones(n_bkt)
        for key, w in (sm.bucket_weights or {}).items():
            weights[resolve_bucket(key, params.edges)] = w
        for key in sm.remove_buckets:
            weights[resolve_bucket(key, params.edges)] = 0.0
        base = weights * avail[s]
        if sm.long_share is None:
            groups = [(np.arange(n_bkt), t_src, "all buckets")]
        else:
            threshold = params.edges[long_bucket - 1]
            groups = [
                (np.arange(long_bucket), (1.0 - sm.long_share) * t_src, f"short (<{threshold})"),
                (np.arange(long_bucket, n_bkt), sm.long_share * t_src, f"long (>={threshold})"),
            ]
        for cells, want, label in groups:
            mass = base[cells].sum()
            if mass > 0:
                targets[s, cells] = want * base[cells] / mass
            elif want >= 0.5:
                shortfalls.append(_empty_group_shortfall(sm.name, label, int(round(want))))
    return np.rint(targets).astype(np.int64), shortfalls


def _empty_group_shortfall(source: str, label: str, target: int) -> Shortfall:
    return Shortfall(
        source=source,
        bucket=label,
        target_tokens=target,
        achievable_tokens=0,
        message=(
            f"mix shortfall: source {source!r} {label}: target {target:,} tokens but no tokens there "
            f"(after removed buckets and zero weights); short by {target:,} (100%)"
        ),
    )


def _cell_shortfall(source: str, bucket: str, target: int, avail: int, cap: int) -> Shortfall:
    achievable = cap * avail
    missing = target - achievable
    return Shortfall(
        source=source,
        bucket=bucket,
        target_tokens=target,
        achievable_tokens=achievable,
        message=(
            f"mix shortfall: source {source!r} bucket {bucket!r}: target {target:,} tokens but only "
            f"{achievable:,} available ({avail:,} tokens x max_epochs {cap}); "
            f"short by {missing:,} ({100.0 * missing / target:.1f}%)"
        ),
    )


def _fill_cell(idx: np.ndarray, lens: np.ndarray, want: int, rng: np.random.Generator, counts: np.ndarray) -> int:
    """Set counts[idx] to hit ``want`` tokens (want <= cap * cell tokens); return tokens achieved."""
    if want <= 0 or idx.size == 0:
        return 0
    cell_lens = lens[idx]
    cell_tokens = int(cell_lens.sum())
    if cell_tokens == 0:
        return 0
    full, rest = divmod(want, cell_tokens)
    counts[idx] = full
    if rest == 0:
        return full * cell_tokens
    perm = rng.permutation(idx.size)
    csum = np.cumsum(cell_lens[perm])
    k = int(np.searchsorted(csum, rest))  # csum[k-1] < rest <= csum[k]
    below = int(csum[k - 1]) if k > 0 else 0
    take = k + 1 if int(csum[k]) - rest < rest - below else k
    counts[idx[perm[:take]]] += 1
    return full * cell_tokens + (int(csum[take - 1]) if take else 0)


def sample_order(counts: np.ndarray, seed: int) -> np.ndarray:
    """Document indices, each repeated counts[i] times, in a seeded random order (int64).

    Shuffling the repeats apart keeps copies of a short document out of the same packed sequence.
    """
    order = np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))
    np.random.default_rng([seed, 0x5A4D]).shuffle(order)
    return order
