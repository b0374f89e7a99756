"""RoPE, position interpolation (PI) and adjusted base frequency (ABF) without a model.

RoPE rotates the j-th pair of query/key dimensions by ``p * theta_j`` at position p, with
``theta_j = base ** (-2j / d)``, j = 0 .. d/2 - 1. PI with scale s divides every angle by s (positions
p/s); ABF keeps positions and raises the base. The score between a query and a key at distance n then
carries the factor ``cos(n * theta_j)`` on pair j, so:

- ``expected_score``: mean over pairs of cos(n theta_j): the expected q.k (normalized to 1 at n = 0) when
  query and key are the same random vector with equal energy in every pair;
- ``decay_bound``: the RoPE paper's relative upper bound (Su et al., Sec. 3.4.3), mean_j |sum_{k<=j}
  exp(i n theta_k)|, the curve the Llama 2 Long paper draws (its Fig. 4) to show that ABF decays slower;
- ``granularity``: the mean angle (radians) one position step rotates a pair, i.e. how far apart the
  embeddings of neighbouring positions are. PI divides it by s; ABF shrinks it much less (docs/evaluation.md
  derives the closed form and the ABF/PI ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RopeVariant:
    name: str
    base: float
    scale: float = 1.0  # PI factor: positions are divided by it

    def thetas(self, head_dim: int) -> np.ndarray:
        return rope_thetas(head_dim, self.base, self.scale)


def rope_thetas(head_dim: int, base: float, scale: float = 1.0) -> np.ndarray:
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even number >= 2, got {head_dim}")
    if base <= 1 or scale <= 0:
        raise ValueError(f"need base > 1 and scale > 0, got base={base}, scale={scale}")
    j = np.arange(head_dim // 2, dtype=np.float64)
    return base ** (-2.0 * j / head_dim) / scale


def _chunks(distances: np.ndarray, size: int = 4096):
    for i in range(0, len(distances), size):
        yield distances[i:i + size]


def expected_score(distances: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """mean_j cos(n * theta_j) for each distance n (1 at n = 0)."""
    d = np.asarray(distances, dtype=np.float64)
    return np.concatenate([np.cos(np.outer(part, thetas)).mean(axis=1) for part in _chunks(d)]) if len(d) else d


def decay_bound(distances: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """The RoPE paper's relative upper bound of the attention score: mean_j |S_j|, S_j = sum_{k<=j} e^{i n theta_k}."""
    d = np.asarray(distances, dtype=np.float64)
    out = [np.abs(np.cumsum(np.exp(1j * np.outer(part, thetas)), axis=1)).mean(axis=1) for part in _chunks(d)]
    return np.concatenate(out) if out else d


def granularity(head_dim: int, base: float, scale: float = 1.0) -> float:
    """Mean rotation per position step over the d/2 pairs; closed form of a geometric series:
    (2/d) * (1 - base^-1) / (1 - base^(-2/d)) / scale."""
    r = base ** (-2.0 / head_dim)
    return float((2.0 / head_dim) * (1.0 - base ** -1.0) / (1.0 - r) / scale)


def variants(bases: list[float], pi_scales: list[float]) -> list[RopeVariant]:
    """RoPE at each base (the first is the original; the others are ABF), and PI of the original base."""
    if not bases:
        raise ValueError("give at least one base")
    out = [RopeVariant(f"RoPE base {bases[0]:g}", bases[0])]
    out += [RopeVariant(f"ABF base {b:g}", b) for b in bases[1:]]
    out += [RopeVariant(f"PI x{s:g} (base {bases[0]:g})", bases[0], s) for s in pi_scales]
    return out


def analyse(bases: list[float], pi_scales: list[float], head_dim: int, max_distance: int,
            points: int = 400) -> dict:
    """Curves on a log-spaced distance grid plus each variant's granularity and its ratio to plain RoPE."""
    dist = np.unique(np.concatenate([[0], np.geomspace(1, max_distance, points).round()]))
    base_g = granularity(head_dim, bases[0])
    rows = []
    for v in variants(bases, pi_scales):
        th = v.thetas(head_dim)
        g = granularity(head_dim, v.base, v.scale)
        rows.append({"name": v.name, "base": v.base, "pi_scale": v.scale, "granularity": g,
                     "granularity_vs_rope": g / base_g,
                     # the longest wavelength: beyond it the slowest pair wraps around
                     "max_wavelength": float(2 * np.pi / th[-1]),
                     "expected_score": expected_score(dist, th).tolist(),
                     "decay_bound": decay_bound(dist, th).tolist()})
    return {"head_dim": head_dim, "distances": dist.tolist(), "variants": rows}
