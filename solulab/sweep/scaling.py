"""Scaling-law fit ``L(N) = E + A * N**-alpha`` and the size-equivalent multiplier.

The fit follows the Chinchilla recipe (Hoffmann et al., 2022, appendix D.2): the law is written
in log space as ``log L = logsumexp(a - alpha * log N, e)`` with ``A = exp(a)``, ``E = exp(e)``,
and the Huber loss (delta ``1e-3``) of ``log L_pred - log L_observed`` is minimised with L-BFGS
from a grid of starting points, keeping the best. ``N`` is the non-embedding parameter count.

The size equivalent of a loss is the ``N`` at which the fitted baseline reaches it; a model's
multiplier is ``N_eq / N`` (the paper's Figure 1 bottom: 0.95-1.05 means "no cost"). Uncertainty
comes from a bootstrap over runs: the law is refitted on runs resampled with replacement, and
intervals are percentiles of the refitted quantities. With only three sizes every resample
that still pins down the three parameters is the original ladder, so there is no interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from solulab.errors import SolulabError

HUBER_DELTA = 1e-3
MIN_SIZES = 3


class ScalingFitError(SolulabError):
    """Runs that cannot support a scaling-law fit; the message says why."""


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_l: np.ndarray
               ) -> tuple[float, np.ndarray]:
    """Huber loss of the log-space residuals and its gradient in ``(a, e, alpha)``."""
    a, e, alpha = theta
    terms = np.stack([a - alpha * log_n, np.full_like(log_n, e)])
    predicted = logsumexp(terms, axis=0)
    r = predicted - log_l
    dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # derivative of the Huber loss
    w = np.exp(terms[0] - predicted)  # share of the power-law term in the prediction
    grad = np.array([np.sum(dr * w), np.sum(dr * (1 - w)), -np.sum(dr * w * log_n)])
    return float(_huber(r, HUBER_DELTA).sum()), grad


def _grid(log_l: np.ndarray) -> list[tuple[float, float, float]]:
    e_max = float(log_l.min())
    return list(itertools.product((0.0, 5.0, 10.0, 20.0), (-5.0, e_max - 1.0, e_max - 0.1),
                                  (0.1, 0.5)))


def _fit_params(log_n: np.ndarray, log_l: np.ndarray,
                starts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """``(E, A, alpha)`` minimising the Huber objective, best over the starting points
    ``(log A, log E, alpha)``."""
    best, best_value = None, math.inf
    bounds = [(-30.0, 60.0), (-30.0, float(log_l.min())), (0.0, 3.0)]  # E <= the smallest loss
    for start in starts:
        start = np.clip(start, [b[0] for b in bounds], [b[1] for b in bounds])
        result = minimize(_objective, start, args=(log_n, log_l), jac=True,
                          method="L-BFGS-B", bounds=bounds)
        if result.fun < best_value:
            best, best_value = result.x, result.fun
    a, e, alpha = best
    return math.exp(e), math.exp(a), float(alpha)


def _check(n_params: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_params, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    if n.ndim != 1 or n.shape != loss.shape:
        raise ScalingFitError(f"n_params and losses must be equal-length lists, got {n.shape} "
                              f"and {loss.shape}")
    if not (np.all(np.isfinite(n)) and np.all(n > 0)):
        raise ScalingFitError(f"parameter counts must be positive and finite, got {n.tolist()}")
    if not (np.all(np.isfinite(loss)) and np.all(loss > 0)):
        raise ScalingFitError(f"losses must be positive and finite, got {loss.tolist()}")
    if len(np.unique(n)) < MIN_SIZES:
        raise ScalingFitError(f"a fit of E, A and alpha needs at least {MIN_SIZES} model sizes, "
                              f"got {len(np.unique(n))}: add sizes to the sweep")
    order = np.argsort(n, kind="stable")
    n, loss = n[order], loss[order]
    if np.any(np.diff(loss) >= 0):
        pairs = ", ".join(f"N={a:.3g}: {b:.4f}" for a, b in zip(n, loss))
        raise ScalingFitError(f"the loss does not fall with size ({pairs}): a non-monotone ladder "
                              "has no power-law fit; train longer or drop the outlying size")
    return n, loss


@dataclass
class ScalingFit:
    """A fitted law; ``bootstrap`` holds ``(E, A, alpha)`` of each bootstrap refit."""

    E: float
    A: float
    alpha: float
    n_points: int
    bootstrap: list[tuple[float, float, float]] = field(default_factory=list)

    def predict(self, n: float | np.ndarray) -> float | np.ndarray:
        """Fitted loss at non-embedding size ``n``."""
        return self.E + self.A * np.power(n, -self.alpha)

    def size_equivalent(self, loss: float) -> float:
        """The ``N`` at which the fitted law reaches ``loss``: ``inf`` at or below ``E``."""
        return _size_equivalent(self.E, self.A, self.alpha, loss)

    def multiplier(self, n: float, loss: float) -> float:
        """``N_eq / n``: how much bigger a baseline must be to match ``loss``."""
        return self.size_equivalent(loss) / n

    def multiplier_interval(self, n: float, loss: float,
                            confidence: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the multiplier over the bootstrap refits (nan without any)."""
        if not self.bootstrap:
            return math.nan, math.nan
        values = [_size_equivalent(E, A, alpha, loss) / n for E, A, alpha in self.bootstrap]
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)

    def parameter_intervals(self, confidence: float = 0.95) -> dict[str, tuple[float, float]]:
        """Percentile intervals of ``E``, ``A`` and ``alpha`` over the bootstrap refits."""
        if not self.bootstrap:
            return {}
        samples = np.asarray(self.bootstrap)
        tail = (1 - confidence) / 2 * 100
        return {name: tuple(float(v) for v in np.percentile(samples[:, i], [tail, 100 - tail]))
                for i, name in enumerate(("E", "A", "alpha"))}

    def to_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "n_points": self.n_points,
                "intervals": self.parameter_intervals(), "bootstrap": self.bootstrap}

    @classmethod
    def from_dict(cls, data: dict) -> ScalingFit:
        return cls(data["E"], data["A"], data["alpha"], data["n_points"],
                   [tuple(b) for b in data.get("bootstrap", [])])


def _size_equivalent(E: float, A: float, alpha: float, loss: float) -> float:
    if loss <= E:
        return math.inf
    if alpha == 0:
        return math.inf if loss < E + A else 0.0
    return float((A / (loss - E)) ** (1 / alpha))


def fit(n_params: Sequence[float], losses: Sequence[float], n_bootstrap: int = 200,
        seed: int = 0) -> ScalingFit:
    """Fit ``L(N) = E + A * N**-alpha`` to runs of at least three sizes whose loss falls with
    size; ``n_bootstrap`` refits on runs resampled with replacement give the intervals."""
    if n_bootstrap < 0:
        raise ScalingFitError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    n, loss = _check(n_params, losses)
    log_n, log_l = np.log(n), np.log(loss)
    E, A, alpha = _fit_params(log_n, log_l, _grid(log_l))
    near = [(math.log(A), math.log(E), alpha), *_grid(log_l)[::4]]  # refits start near the fit
    rng = np.random.default_rng(seed)
    samples = []
    if len(np.unique(n)) == MIN_SIZES:
        n_bootstrap = 0  # every usable resample of three sizes is the same three: no spread
    while len(samples) < n_bootstrap:
        idx = rng.integers(0, len(n), len(n))
        if len(np.unique(n[idx])) < MIN_SIZES:
            continue  # a resample must still pin down three parameters
        samples.append(_fit_params(log_n[idx], log_l[idx], near))
    return ScalingFit(E, A, alpha, len(n), samples)
