"""Statistics for the interpretability studies: proportions, model comparisons, agreement, scoring.

The blinded human study reports, per model, the fraction of neurons rated interpretable
(``proportion``: a Wilson score interval) and compares two models' fractions
(``fisher_exact_2x2``). Agreement between raters is measured with ``cohens_kappa`` (two raters)
and ``fleiss_kappa`` (many raters), and how far two labellings of the same neurons stand apart
with ``paired_mean``. The automated scorer reuses these and adds ``auroc``,
``precision_recall`` and ``pearson`` over per-token activations and predictions.

Invalid input raises ``SolulabError`` (a ``ValueError``) with a message that says what is wrong.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from solulab.errors import SolulabError

ALTERNATIVES = ("two-sided", "less", "greater")


def _count(value: int, name: str) -> int:
    """``value`` as a non-negative ``int``; bools and non-integers are refused."""
    if isinstance(value, bool):
        raise SolulabError(f"{name} must be an integer count, got a bool")
    try:
        count = operator.index(value)
    except TypeError:
        raise SolulabError(f"{name} must be an integer count, got {value!r}") from None
    if count < 0:
        raise SolulabError(f"{name} must be >= 0, got {count}")
    return count


def _check_counts(successes: int, n: int, prefix: str = "") -> tuple[int, int]:
    """Validated ``(successes, n)`` with ``0 <= successes <= n``."""
    successes = _count(successes, f"{prefix}successes")
    n = _count(n, f"{prefix}n")
    if successes > n:
        raise SolulabError(f"{prefix}successes ({successes}) must not exceed {prefix}n ({n})")
    return successes, n


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for ``successes`` out of ``n`` trials.

    With no trials nothing is known and the interval is ``(0.0, 1.0)``.
    """
    successes, n = _check_counts(successes, n)
    if not 0.0 < confidence < 1.0:
        raise SolulabError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    p = successes / n
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (p + z2n / 2.0) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass(frozen=True)
class Proportion:
    """``successes`` out of ``n``, with a confidence interval ``[low, high]``."""

    successes: int
    n: int
    low: float
    high: float

    @property
    def fraction(self) -> float:
        """``successes / n``; nan when ``n == 0``."""
        return self.successes / self.n if self.n else math.nan


def proportion(successes: int, n: int, confidence: float = 0.95) -> Proportion:
    """The observed proportion with its Wilson score interval."""
    low, high = wilson_interval(successes, n, confidence)
    return Proportion(successes=int(successes), n=int(n), low=low, high=high)


def paired_mean(differences: Sequence[float]) -> tuple[float, float]:
    """The mean of paired ``differences`` and the half-width of its 95% interval, normal
    approximation (1.96 sample standard deviations over sqrt(n); 0 for a single pair)."""
    n = len(differences)
    if n == 0:
        raise SolulabError("paired_mean needs at least one difference")
    mean = sum(differences) / n
    spread = (sum((x - mean) ** 2 for x in differences) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, 1.96 * spread / n ** 0.5


@dataclass(frozen=True)
class FisherResult:
    """Sample odds ratio (may be 0, inf or nan) and p-value of Fisher's exact test."""

    odds_ratio: float
    p_value: float


def fisher_exact_2x2(
    a_succ: int, a_n: int, b_succ: int, b_n: int, alternative: str = "two-sided"
) -> FisherResult:
    """Fisher's exact test that group A's success rate differs from group B's.

    The table is ``[[a_succ, a_n - a_succ], [b_succ, b_n - b_succ]]``; ``"greater"`` tests
    whether A's odds of success exceed B's, ``"less"`` whether they fall short.
    """
    a_succ, a_n = _check_counts(a_succ, a_n, "a_")
    b_succ, b_n = _check_counts(b_succ, b_n, "b_")
    if alternative not in ALTERNATIVES:
        raise SolulabError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    table = [[a_succ, a_n - a_succ], [b_succ, b_n - b_succ]]
    odds_ratio, p_value = sps.fisher_exact(table, alternative=alternative)
    return FisherResult(odds_ratio=float(odds_ratio), p_value=float(p_value))


def _kappa(observed: Fraction, expected: Fraction) -> float:
    """Chance-corrected agreement ``(observed - expected) / (1 - expected)``.

    When chance agreement is 1 the ratio is undefined; the result is then 1.0 if observed
    agreement is also 1 and 0.0 otherwise.
    """
    if expected == 1:
        return 1.0 if observed == 1 else 0.0
    return float((observed - expected) / (1 - expected))


def cohens_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels of the same items, in item order.

    Labels may be any hashable values. If chance agreement is 1 (both raters gave every item
    one and the same label) kappa is 1.0 when observed agreement is 1, else 0.0.
    """
    labels_a, labels_b = list(labels_a), list(labels_b)
    n = len(labels_a)
    if n != len(labels_b):
        raise SolulabError(
            f"the raters labelled different numbers of items: {n} and {len(labels_b)}"
        )
    if n == 0:
        raise SolulabError("cohens_kappa needs at least one labelled item")
    agree = sum(1 for a, b in zip(labels_a, labels_b) if a == b)
    counts_a, counts_b = Counter(labels_a), Counter(labels_b)
    chance = sum(count * counts_b[label] for label, count in counts_a.items())
    return _kappa(Fraction(agree, n), Fraction(chance, n * n))


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float:
    """Fleiss' kappa for items each labelled by the same number ``m >= 2`` of raters.

    ``ratings[i]`` holds the ``m`` labels given to item ``i`` (rater order does not matter).
    If chance agreement is 1 (every label is the same) kappa is 1.0 when observed agreement is
    1, else 0.0.
    """
    items = [list(item) for item in ratings]
    if not items:
        raise SolulabError("fleiss_kappa needs at least one rated item")
    m = len(items[0])
    if m < 2:
        raise SolulabError(f"each item needs at least 2 ratings, item 0 has {m}")
    for i, item in enumerate(items):
        if len(item) != m:
            raise SolulabError(
                f"every item must have the same number of ratings: item 0 has {m}, "
                f"item {i} has {len(item)}"
            )
    n_items = len(items)
    totals: Counter[Hashable] = Counter()
    agreeing_pairs = 0  # ordered pairs of distinct raters that agree, summed over items
    for item in items:
        counts = Counter(item)
        totals.update(counts)
        agreeing_pairs += sum(c * (c - 1) for c in counts.values())
    n_ratings = n_items * m
    observed = Fraction(agreeing_pairs, n_items * m * (m - 1))
    expected = Fraction(sum(c * c for c in totals.values()), n_ratings * n_ratings)
    return _kappa(observed, expected)


def _as_bool(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D bool array; only bools or 0/1 are accepted."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise SolulabError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
        raise SolulabError(f"{name} must be boolean (or 0/1)")
    return arr.astype(bool)


def _as_float(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array without NaN."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise SolulabError(f"{name} must be 1-D, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise SolulabError(f"{name} contains NaN")
    return arr


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise SolulabError(f"{names} must have the same length, got {a.size} and {b.size}")


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels``.

    The probability that a random positive outscores a random negative, ties counting one half:
    the Mann-Whitney U of the positives (average ranks) over ``n_pos * n_neg``. O(n log n).
    Returns nan when either class is absent.
    """
    scores = _as_float(scores, "scores")
    labels = _as_bool(labels, "labels")
    _same_length(scores, labels, "scores and labels")
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = sps.rankdata(scores, method="average")
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (float(n_pos) * float(n_neg))


def precision_recall(predicted: ArrayLike, actual: ArrayLike) -> tuple[float, float]:
    """``(precision, recall)`` of boolean predictions against boolean truth.

    Precision is nan when nothing is predicted positive; recall is nan when nothing is
    actually positive.
    """
    predicted = _as_bool(predicted, "predicted")
    actual = _as_bool(actual, "actual")
    _same_length(predicted, actual, "predicted and actual")
    tp = int(np.count_nonzero(predicted & actual))
    n_predicted = int(np.count_nonzero(predicted))
    n_actual = int(np.count_nonzero(actual))
    precision = tp / n_predicted if n_predicted else math.nan
    recall = tp / n_actual if n_actual else math.nan
    return precision, recall


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of ``x`` and ``y``; nan when either is constant (or has < 2 values)."""
    x = _as_float(x, "x")
    y = _as_float(y, "y")
    _same_length(x, y, "x and y")
    if x.size < 2 or x.min() == x.max() or y.min() == y.max():
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return max(-1.0, min(1.0, r))
