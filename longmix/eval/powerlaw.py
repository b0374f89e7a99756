"""The paper's fit of loss against context length: L(c) = (alpha / c) ** beta + gamma (Xiong et al., Fig. 1).

gamma is the loss an infinitely long context would reach, beta how fast extra context pays off, alpha the
context length at which the reducible part of the loss is 1 nat. The three are strongly correlated, so
the fit starts from a log-linear estimate (good p0 matters more than the optimizer here) and reports
confidence intervals from the covariance of the fit.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats


def power_law(c: np.ndarray, alpha: float, beta: float, gamma: float) -> np.ndarray:
    return (alpha / np.asarray(c, dtype=np.float64)) ** beta + gamma


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    beta: float
    gamma: float
    # (low, high) at ``level``: Student-t on the parameter standard errors of curve_fit (taken as absolute
    # when the points came with standard errors, else scaled by the residuals).
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    gamma_ci: tuple[float, float]
    level: float
    r2: float
    n_points: int

    def predict(self, c: np.ndarray) -> np.ndarray:
        return power_law(c, self.alpha, self.beta, self.gamma)

    def to_dict(self) -> dict:
        """JSON-ready: a non-finite bound (a parameter the data cannot pin down) becomes None."""
        return {k: (tuple(x if np.isfinite(x) else None for x in v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def _initial_guess(c: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Best of a few log-linear fits: for a guessed gamma, log(y - gamma) = beta*log(alpha) - beta*log(c)."""
    best: tuple[float, tuple[float, float, float]] | None = None
    lo = float(y.min())
    for frac in (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.995):
        gamma = lo * frac if lo > 0 else lo - 1.0 + frac
        excess = y - gamma
        if np.any(excess <= 0):
            continue
        slope, intercept = np.polyfit(np.log(c), np.log(excess), 1)
        beta = min(max(-slope, 1e-3), 19.0)  # inside curve_fit's bounds: a guess outside them is refused
        alpha = float(np.exp(intercept / beta))
        if not 1e-9 < alpha < 1e12:
            continue
        sse = float(np.sum((power_law(c, alpha, beta, gamma) - y) ** 2))
        if np.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, (alpha, beta, gamma))
    return best[1] if best else (1.0, 0.5, lo)


def fit_power_law(c: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None,
                  level: float = 0.95) -> PowerLawFit:
    """Fit L(c) to points (c, y); ``sigma`` (standard errors of y) weights the points when given."""
    c = np.asarray(c, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(y) & (c > 0)
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=np.float64)
        keep &= np.isfinite(sigma) & (sigma > 0)
        sigma = sigma[keep]
    c, y = c[keep], y[keep]
    if len(c) < 4:
        raise ValueError(f"a 3-parameter fit needs at least 4 points, got {len(c)}")
    with np.errstate(all="ignore"):  # a flat curve sends the log-linear guess's alpha to inf: skipped inside
        p0 = _initial_guess(c, y)
    bounds = ([1e-12, 1e-4, -np.inf], [np.inf, 20.0, np.inf])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # flat curves push beta to its bound, where trf divides by zero on the way; the result is still reported
        warnings.simplefilter("ignore")
        popt, pcov = optimize.curve_fit(power_law, c, y, p0=p0, sigma=sigma, bounds=bounds, method="trf",
                                        absolute_sigma=sigma is not None, max_nfev=20000, x_scale="jac")
    se = np.sqrt(np.clip(np.diag(pcov), 0, None))
    t = stats.t.ppf(0.5 + level / 2, max(len(c) - 3, 1))
    resid = y - power_law(c, *popt)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    cis = [(float(p - t * s), float(p + t * s)) for p, s in zip(popt, se, strict=True)]
    return PowerLawFit(alpha=float(popt[0]), beta=float(popt[1]), gamma=float(popt[2]), alpha_ci=cis[0],
                       beta_ci=cis[1], gamma_ci=cis[2], level=level, r2=r2, n_points=len(c))
