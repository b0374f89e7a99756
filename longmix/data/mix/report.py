"""The mix plan's report: target vs achieved tokens per source x bucket, repetitions, the long-document
selection and the shortfalls (stored as the manifest's `mix`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shortfall:
    source: str
    bucket: str
    target_tokens: int
    achievable_tokens: int
    message: str

    @property
    def missing_tokens(self) -> int:
        return self.target_tokens - self.achievable_tokens


@dataclass
class MixReport:
    """Target vs achieved tokens per source x bucket, plus repetition statistics."""

    sources: list[str]
    buckets: list[str]
    available_tokens: np.ndarray  # (S, B) int64, before sampling
    available_docs: np.ndarray  # (S, B) int64
    target_tokens: np.ndarray  # (S, B) int64
    achieved_tokens: np.ndarray  # (S, B) int64
    used_docs: np.ndarray  # (S, B) int64, distinct documents used at least once
    long_bucket: int
    long_share_target: list[float | None]
    repetition_hist: dict[int, int]  # repetitions -> number of documents
    shortfalls: list[Shortfall] = field(default_factory=list)
    long_select: dict[str, Any] = field(default_factory=dict)  # source -> what was selected and why

    @property
    def total_target(self) -> int:
        return int(self.target_tokens.sum())

    @property
    def total_achieved(self) -> int:
        return int(self.achieved_tokens.sum())

    def long_share_achieved(self) -> list[float]:
        """Share of each source's achieved tokens that come from long buckets."""
        tot = self.achieved_tokens.sum(axis=1)
        long = self.achieved_tokens[:, self.long_bucket :].sum(axis=1)
        return [float(lg / t) if t else 0.0 for lg, t in zip(long, tot, strict=True)]

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per source x bucket, for tables and JSON."""
        out = []
        for s, src in enumerate(self.sources):
            for b, bucket in enumerate(self.buckets):
                avail = int(self.available_tokens[s, b])
                achieved = int(self.achieved_tokens[s, b])
                out.append(
                    {
                        "source": src,
                        "bucket": bucket,
                        "available_tokens": avail,
                        "available_docs": int(self.available_docs[s, b]),
                        "target_tokens": int(self.target_tokens[s, b]),
                        "achieved_tokens": achieved,
                        "used_docs": int(self.used_docs[s, b]),
                        "epochs": achieved / avail if avail else 0.0,
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest's mix section."""
        return {
            "sources": self.sources,
            "buckets": self.buckets,
            "long_from_bucket": self.buckets[self.long_bucket],
            "target_tokens": int(self.total_target),
            "achieved_tokens": int(self.total_achieved),
            "cells": self.rows(),
            "long_share": [
                {"source": src, "target": tgt, "achieved": ach}
                for src, tgt, ach in zip(self.sources, self.long_share_target, self.long_share_achieved(), strict=True)
            ],
            "repetitions": {str(k): v for k, v in sorted(self.repetition_hist.items())},
            "long_select": self.long_select,
            "shortfalls": [
                {
                    "source": sf.source,
                    "bucket": sf.bucket,
                    "target_tokens": sf.target_tokens,
                    "achievable_tokens": sf.achievable_tokens,
                    "missing_tokens": sf.missing_tokens,
                    "message": sf.message,
                }
                for sf in self.shortfalls
            ],
        }
