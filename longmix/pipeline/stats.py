"""Per-task counts and their merge into a stage report that must reconcile:
in = kept + dropped + quarantined, overall and per source."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


class Counts:
    def __init__(self) -> None:
        self.n_in = 0
        self.kept = 0
        self.dropped: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.sources: dict[str, Counter[str]] = defaultdict(Counter)

    def saw(self, source: str, nbytes: int = 0) -> None:
        self.n_in += 1
        self.bytes_in += nbytes
        self.sources[source]["in"] += 1

    def keep(self, source: str, nbytes: int = 0) -> None:
        self.kept += 1
        self.bytes_out += nbytes
        self.sources[source]["kept"] += 1

    def drop(self, source: str, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n
        self.sources[source]["dropped"] += n

    def quarantine(self, source: str, reason: str, n: int = 1) -> None:
        self.quarantined[reason] += n
        self.sources[source]["quarantined"] += n

    def add(self, sources: Sequence[str] | np.ndarray, nbytes: Sequence[int] | np.ndarray,
            reasons: Sequence[str | None] | np.ndarray | None = None,
            quarantined: Sequence[bool] | np.ndarray | None = None) -> None:
        """Count a batch of documents at once: each is seen with its bytes, then kept (its reason None, or no
        reasons at all) or dropped with its reason, or quarantined with it where `quarantined` is true. A count
        or reason appears only where it is non-zero, as with the per-document calls."""
        src = np.asarray(sources, dtype=object)
        nb = np.asarray(nbytes, dtype=np.int64)
        why = np.full(len(src), None, dtype=object) if reasons is None else np.asarray(reasons, dtype=object)
        kept = np.equal(why, None)
        quar = np.zeros(len(src), bool) if quarantined is None else np.asarray(quarantined, dtype=bool) & ~kept
        self.n_in += len(src)
        self.bytes_in += int(nb.sum())
        self.kept += int(kept.sum())
        self.bytes_out += int(nb[kept].sum())
        names, inverse = np.unique(src.astype(str), return_inverse=True) if len(src) else (np.zeros(0, str), None)
        for i, name in enumerate(names.tolist()):
            mine = inverse == i
            c = self.sources[name]
            for key, n in (("in", int(mine.sum())), ("kept", int((mine & kept).sum())),
                           ("dropped", int((mine & ~kept & ~quar).sum())), ("quarantined", int((mine & quar).sum()))):
                if n:
                    c[key] += n
        for mask, into in ((~kept & ~quar, self.dropped), (quar, self.quarantined)):
            if mask.any():
                reason_names, n = np.unique(why[mask].astype(str), return_counts=True)
                for r, k in zip(reason_names.tolist(), n.tolist(), strict=True):
                    into[r] += k

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {
            "in": self.n_in, "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "sources": {s: dict(c) for s, c in sorted(self.sources.items())},
            **extra,
        }


def merge(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum task stats in task order; `outputs` and `quarantine_files` lists are concatenated."""
    out: dict[str, Any] = {"in": 0, "kept": 0, "dropped": Counter(), "quarantined": Counter(),
                           "bytes_in": 0, "bytes_out": 0, "sources": defaultdict(Counter),
                           "outputs": [], "quarantine_files": []}
    for s in stats:
        for key in ("in", "kept", "bytes_in", "bytes_out"):
            out[key] += s.get(key, 0)
        out["dropped"].update(s.get("dropped", {}))
        out["quarantined"].update(s.get("quarantined", {}))
        for src, c in s.get("sources", {}).items():
            out["sources"][src].update(c)
        out["outputs"].extend(s.get("outputs", []))
        out["quarantine_files"].extend(s.get("quarantine_files", []))
    out["dropped"] = dict(sorted(out["dropped"].items()))
    out["quarantined"] = dict(sorted(out["quarantined"].items()))
    out["sources"] = {src: {k: c.get(k, 0) for k in ("in", "kept", "dropped", "quarantined")}
                      for src, c in sorted(out["sources"].items())}
    return out


def check_reconciles(stage: str, report: dict[str, Any]) -> None:
    """Raise if any document is unaccounted for: a bug, never a user error."""
    rows = [("all", report)] + list(report["sources"].items())
    for name, r in rows:
        dropped = sum(report["dropped"].values()) if name == "all" else r["dropped"]
        quarantined = sum(report["quarantined"].values()) if name == "all" else r["quarantined"]
        if r["in"] != r["kept"] + dropped + quarantined:
            raise AssertionError(f"stage {stage}: counts do not reconcile for {name}: in={r['in']} "
                                 f"kept={r['kept']} dropped={dropped} quarantined={quarantined}")
