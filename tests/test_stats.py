import math
from itertools import product

import numpy as np
import pytest
from scipy import stats as sps

from solulab.errors import SolulabError
from solulab.stats import (
    FisherResult,
    Proportion,
    auroc,
    cohens_kappa,
    fisher_exact_2x2,
    fleiss_kappa,
    paired_mean,
    pearson,
    precision_recall,
    proportion,
    wilson_interval,
)

Z95 = 1.959963984540054  # standard normal 97.5% quantile


def wilson_textbook(s: int, n: int, z: float) -> tuple[float, float]:
    """Wilson (1927) in the form (s + z^2/2 +- z sqrt(s f / n + z^2/4)) / (n + z^2), f = n - s."""
    f = n - s
    centre = s + z * z / 2
    half = z * math.sqrt(s * f / n + z * z / 4)
    return (centre - half) / (n + z * z), (centre + half) / (n + z * z)


# ---------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize("s,n", [(21, 60), (36, 60), (1, 7), (50, 51), (0, 10), (10, 10)])
def test_wilson_matches_textbook_form(s, n):
    low, high = wilson_interval(s, n)
    ref_low, ref_high = wilson_textbook(s, n, Z95)
    assert low == pytest.approx(max(0.0, ref_low), abs=1e-12)
    assert high == pytest.approx(min(1.0, ref_high), abs=1e-12)


def test_wilson_known_values():
    assert wilson_interval(21, 60) == pytest.approx((0.2416777, 0.4763738), abs=1e-7)
    assert wilson_interval(36, 60) == pytest.approx((0.4736605, 0.7143051), abs=1e-7)
    # 0/10: upper bound z^2 / (n + z^2)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775328, abs=1e-7))
    assert wilson_interval(10, 10) == (pytest.approx(0.7224672, abs=1e-7), 1.0)
    # 99% interval is wider than 95%
    assert wilson_interval(21, 60, 0.99) == pytest.approx((0.2136893, 0.5161820), abs=1e-7)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy_binomtest(confidence):
    for s, n in [(0, 1), (3, 17), (21, 60), (99, 100), (500, 1000)]:
        ref = sps.binomtest(s, n).proportion_ci(confidence_level=confidence, method="wilson")
        assert wilson_interval(s, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_interval_sanity():
    for n in range(1, 40):
        previous_low = -1.0
        for s in range(n + 1):
            low, high = wilson_interval(s, n)
            assert 0.0 <= low <= s / n <= high <= 1.0
            assert low > previous_low  # lower bound increases with successes
            previous_low = low
            narrow, wide = wilson_interval(s, n, 0.5), wilson_interval(s, n, 0.999)
            assert wide[0] <= low <= narrow[0] and narrow[1] <= high <= wide[1]
            # symmetry: s/n and (n-s)/n mirror each other
            mirror = wilson_interval(n - s, n)
            assert low == pytest.approx(1 - mirror[1], abs=1e-12)


def test_wilson_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="exceed"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match=">= 0"):
        wilson_interval(-1, 4)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 4, confidence=1.0)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 4, confidence=0.0)
    with pytest.raises(ValueError, match="integer"):
        wilson_interval(1.5, 4)
    with pytest.raises(SolulabError):
        wilson_interval(True, 4)


def test_proportion():
    p = proportion(21, 60)
    assert isinstance(p, Proportion)
    assert (p.successes, p.n) == (21, 60)
    assert p.fraction == pytest.approx(0.35)
    assert (p.low, p.high) == wilson_interval(21, 60)
    assert proportion(np.int64(3), np.int64(4)).fraction == 0.75
    empty = proportion(0, 0)
    assert math.isnan(empty.fraction) and (empty.low, empty.high) == (0.0, 1.0)
    with pytest.raises(AttributeError):
        p.n = 3  # frozen


# ---------------------------------------------------------------------------- Fisher


def test_fisher_against_hand_computed_hypergeometric():
    # [[3, 2], [1, 5]]: margins rows 5, 6; cols 4, 7; N = 11. X = a_succ ~ hypergeometric.
    probs = {k: math.comb(4, k) * math.comb(7, 5 - k) / math.comb(11, 5) for k in range(5)}
    assert sum(probs.values()) == pytest.approx(1.0)
    observed = probs[3]
    two_sided = sum(p for p in probs.values() if p <= observed * (1 + 1e-9))
    assert two_sided == pytest.approx(112 / 462)

    res = fisher_exact_2x2(3, 5, 1, 6)
    assert isinstance(res, FisherResult)
    assert res.p_value == pytest.approx(two_sided, rel=1e-12)
    assert res.odds_ratio == pytest.approx((3 * 5) / (2 * 1))
    greater = fisher_exact_2x2(3, 5, 1, 6, alternative="greater")
    assert greater.p_value == pytest.approx(probs[3] + probs[4], rel=1e-12)
    less = fisher_exact_2x2(3, 5, 1, 6, alternative="less")
    assert less.p_value == pytest.approx(sum(probs[k] for k in range(4)), rel=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_fisher_matches_scipy(alternative):
    rng = np.random.default_rng(0)
    for _ in range(30):
        a_n, b_n = (int(v) for v in rng.integers(1, 80, size=2))
        a_s, b_s = int(rng.integers(0, a_n + 1)), int(rng.integers(0, b_n + 1))
        ref = sps.fisher_exact([[a_s, a_n - a_s], [b_s, b_n - b_s]], alternative=alternative)
        res = fisher_exact_2x2(a_s, a_n, b_s, b_n, alternative=alternative)
        assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-12)
        assert res.odds_ratio == pytest.approx(float(ref.statistic), rel=1e-12, nan_ok=True)


def test_fisher_study_sized_difference():
    # 36/60 vs 21/60 interpretable
    res = fisher_exact_2x2(36, 60, 21, 60)
    assert res.odds_ratio == pytest.approx((36 * 39) / (24 * 21))
    assert res.p_value < 0.02


def test_fisher_invalid():
    with pytest.raises(ValueError, match="b_successes"):
        fisher_exact_2x2(1, 2, 5, 4)
    with pytest.raises(ValueError, match="alternative"):
        fisher_exact_2x2(1, 2, 1, 2, alternative="bigger")


# ---------------------------------------------------------------------------- Cohen's kappa


def test_cohens_kappa_textbook_example():
    # A yes/B yes 20, A yes/B no 5, A no/B yes 10, A no/B no 15: po = 0.7, pe = 0.5
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    a, b = zip(*pairs)
    assert cohens_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    assert cohens_kappa(b, a) == pytest.approx(0.4, abs=1e-12)


def test_cohens_kappa_against_confusion_matrix():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 4, size=300))
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (a, b), 1)
    confusion /= confusion.sum()
    po = np.trace(confusion)
    pe = confusion.sum(1) @ confusion.sum(0)
    assert cohens_kappa(a, b) == pytest.approx((po - pe) / (1 - pe), abs=1e-12)
    assert cohens_kappa(a.tolist(), b.tolist()) == pytest.approx((po - pe) / (1 - pe), abs=1e-12)


def test_cohens_kappa_perfect_independent_and_degenerate():
    labels = ["INTERPRETABLE", "POLYSEMANTIC", "UNINTERPRETABLE"] * 7
    assert cohens_kappa(labels, labels) == 1.0
    # every (a, b) combination equally often: observed agreement equals chance exactly
    a, b = zip(*product(range(2), range(3)))
    assert cohens_kappa(list(a) * 5, list(b) * 5) == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(2)
    assert abs(cohens_kappa(rng.integers(0, 3, 20000), rng.integers(0, 3, 20000))) < 0.02
    # complete disagreement on two balanced labels
    assert cohens_kappa([0, 1] * 10, [1, 0] * 10) == pytest.approx(-1.0)
    # chance agreement 1 (one shared label throughout): defined as 1.0
    assert cohens_kappa(["x"] * 5, ["x"] * 5) == 1.0


def test_cohens_kappa_invalid():
    with pytest.raises(ValueError, match="different numbers"):
        cohens_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="at least one"):
        cohens_kappa([], [])


# ---------------------------------------------------------------------------- Fleiss' kappa

# Fleiss (1971) worked example as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories;
# each row gives how many raters put the subject in each category.
FLEISS_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def counts_to_labels(counts):
    return [[category for category, c in enumerate(row) for _ in range(c)] for row in counts]


def test_fleiss_kappa_wikipedia_example():
    ratings = counts_to_labels(FLEISS_COUNTS)
    assert all(len(item) == 14 for item in ratings)
    kappa = fleiss_kappa(ratings)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    # the same from the published intermediate formulas, computed with numpy
    n = np.array(FLEISS_COUNTS, dtype=float)
    m = n.sum(1)[0]
    p_j = n.sum(0) / n.sum()
    p_i = ((n * n).sum(1) - m) / (m * (m - 1))
    p_bar, p_e = p_i.mean(), (p_j**2).sum()
    assert p_bar == pytest.approx(0.378, abs=5e-4) and p_e == pytest.approx(0.213, abs=5e-4)
    assert kappa == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    # raters' order within an item and label type do not matter
    shuffled = [list(reversed(["cat%d" % c for c in item])) for item in ratings]
    assert fleiss_kappa(shuffled) == pytest.approx(kappa, abs=1e-12)


def test_fleiss_kappa_two_raters_is_scotts_pi():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, 200)
    b = np.where(rng.random(200) < 0.5, a, rng.integers(0, 3, 200))
    po = np.mean(a == b)
    pooled = np.bincount(np.concatenate([a, b]), minlength=3) / 400
    pe = (pooled**2).sum()
    assert fleiss_kappa(list(zip(a, b))) == pytest.approx((po - pe) / (1 - pe), abs=1e-12)


def test_fleiss_kappa_perfect_and_degenerate():
    assert fleiss_kappa([["a"] * 3, ["b"] * 3, ["c"] * 3]) == 1.0
    assert fleiss_kappa([["a"] * 4] * 6) == 1.0  # chance agreement 1: defined as 1.0


def test_fleiss_kappa_invalid():
    with pytest.raises(ValueError, match="at least one"):
        fleiss_kappa([])
    with pytest.raises(ValueError, match="at least 2"):
        fleiss_kappa([["a"], ["b"]])
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "b"], ["a", "b", "c"]])


# ---------------------------------------------------------------------------- AUROC


def auroc_brute_force(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.random(n) < 0.3
    scores = rng.integers(0, 6, n) + labels * rng.integers(0, 2, n)  # few distinct values
    expected = auroc_brute_force(scores.tolist(), labels.tolist())
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert auroc(scores.astype(float), labels.astype(int)) == pytest.approx(expected, abs=1e-12)


def test_auroc_matches_mann_whitney():
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(size=5000), 1)
    labels = rng.random(5000) < 0.1
    u = sps.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert auroc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()), rel=1e-12)


def test_auroc_extremes():
    labels = np.array([0, 0, 0, 1, 1])
    assert auroc([0.1, 0.2, 0.3, 0.8, 0.9], labels) == 1.0
    assert auroc([0.9, 0.8, 0.7, 0.2, 0.1], labels) == 0.0
    assert auroc([1.0] * 5, labels) == 0.5
    assert auroc([-np.inf, 0.0, 3.0, np.inf, 2.0], labels) == pytest.approx(5 / 6)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    assert math.isnan(auroc([0.1, 0.2], [False, False]))
    assert math.isnan(auroc([], []))


def test_auroc_large_input():
    rng = np.random.default_rng(0)
    n = 2_000_000
    labels = rng.random(n) < 0.01
    scores = rng.normal(size=n) + labels  # shift 1: AUROC = Phi(1 / sqrt(2))
    assert auroc(scores, labels) == pytest.approx(sps.norm.cdf(1 / math.sqrt(2)), abs=0.005)


def test_auroc_invalid():
    with pytest.raises(ValueError, match="same length"):
        auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="boolean"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        auroc([[0.1, 0.2]], [[0, 1]])


# ---------------------------------------------------------------------------- precision/recall


def test_precision_recall_against_numpy():
    rng = np.random.default_rng(4)
    actual = rng.random(1000) < 0.2
    predicted = rng.random(1000) < 0.3
    tp = np.sum(predicted & actual)
    p, r = precision_recall(predicted, actual)
    assert p == pytest.approx(tp / np.sum(predicted))
    assert r == pytest.approx(tp / np.sum(actual))
    assert precision_recall([1, 1, 0, 0], [1, 0, 1, 0]) == (0.5, 0.5)
    assert precision_recall([True, True, True], [True, False, False]) == (pytest.approx(1 / 3), 1.0)


def test_precision_recall_undefined():
    p, r = precision_recall([False, False], [True, False])
    assert math.isnan(p) and r == 0.0
    p, r = precision_recall([True, False], [False, False])
    assert p == 0.0 and math.isnan(r)
    with pytest.raises(ValueError, match="same length"):
        precision_recall([True], [True, False])
    with pytest.raises(ValueError, match="boolean"):
        precision_recall([0.5, 1.0], [True, False])


# ---------------------------------------------------------------------------- Pearson


def test_pearson_against_numpy_and_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=500)
    y = 0.3 * x + rng.normal(size=500)
    r = pearson(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert r == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson(x, 1e6 + 1e-3 * y) == pytest.approx(r, abs=1e-9)


def test_pearson_undefined_and_invalid():
    assert math.isnan(pearson([0.1] * 7, [1, 2, 3, 4, 5, 6, 7]))
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))
    assert math.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError, match="same length"):
        pearson([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        pearson([1, np.nan, 3], [1, 2, 3])


def test_paired_mean_against_a_hand_computation():
    # differences 1, 0, 0, -1, 1: mean 0.2, sample variance (0.64+0.04*2+1.44+0.64)/4 = 0.7
    mean, half = paired_mean([1, 0, 0, -1, 1])
    assert mean == pytest.approx(0.2)
    assert half == pytest.approx(1.96 * math.sqrt(0.7) / math.sqrt(5))
    assert paired_mean([0.5]) == (0.5, 0.0)
    with pytest.raises(SolulabError):
        paired_mean([])
