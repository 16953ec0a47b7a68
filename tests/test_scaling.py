"""The scaling-law fit recovers a known law, and the multiplier is the size ratio it encodes."""

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from solulab.errors import SolulabError
from solulab.sweep import scaling

E, A, ALPHA = 1.7, 400.0, 0.35
SIZES = np.array([1e5, 4e5, 1.6e6, 6.4e6, 2.56e7, 1e8])


def law(n):
    return E + A * np.power(n, -ALPHA)


@pytest.fixture(scope="module")
def noisy_fit():
    rng = np.random.default_rng(1)
    losses = law(SIZES) * np.exp(rng.normal(0, 0.002, len(SIZES)))
    return scaling.fit(SIZES, losses, n_bootstrap=60, seed=0)


def test_exact_losses_give_back_the_law():
    fitted = scaling.fit(SIZES, law(SIZES), n_bootstrap=0)
    assert fitted.E == pytest.approx(E, rel=1e-4)
    assert fitted.A == pytest.approx(A, rel=1e-3)
    assert fitted.alpha == pytest.approx(ALPHA, rel=1e-4)
    assert fitted.predict(3e6) == pytest.approx(law(3e6), rel=1e-6)
    assert fitted.size_equivalent(law(5e6)) == pytest.approx(5e6, rel=1e-4)


def test_noisy_losses_recover_the_parameters_within_the_bootstrap(noisy_fit):
    intervals = noisy_fit.parameter_intervals()
    for name, true in (("E", E), ("A", A), ("alpha", ALPHA)):
        low, high = intervals[name]
        assert low <= true <= high, (name, low, high)
    assert noisy_fit.alpha == pytest.approx(ALPHA, abs=0.03)


@pytest.mark.parametrize("n", [3e5, 2e6, 1e7])
def test_a_loss_equal_to_the_baseline_at_twice_the_size_is_a_multiplier_of_two(noisy_fit, n):
    loss = law(2 * n)
    assert noisy_fit.multiplier(n, loss) == pytest.approx(2.0, rel=0.05)
    low, high = noisy_fit.multiplier_interval(n, loss)
    assert low <= 2.0 <= high and high - low < 0.5


def test_losses_at_or_below_the_irreducible_loss_have_infinite_size():
    fitted = scaling.fit(SIZES, law(SIZES), n_bootstrap=0)
    assert math.isinf(fitted.size_equivalent(fitted.E))
    assert math.isnan(fitted.multiplier_interval(1e6, 2.0)[0])  # no bootstrap, no interval


def test_three_sizes_fit_exactly_and_claim_no_interval():
    fitted = scaling.fit(SIZES[:3], law(SIZES[:3]), n_bootstrap=50)
    assert fitted.bootstrap == [] and fitted.parameter_intervals() == {}
    assert all(math.isnan(v) for v in fitted.multiplier_interval(2e5, law(4e5)))
    assert fitted.multiplier(2e5, law(4e5)) == pytest.approx(2.0, rel=1e-3)


def test_objective_gradient_matches_finite_differences():
    log_n, log_l = np.log(SIZES), np.log(law(SIZES) * 1.01)
    theta = np.array([5.0, 0.4, 0.3])
    _, grad = scaling._objective(theta, log_n, log_l)
    numeric = approx_fprime(theta, lambda t: scaling._objective(t, log_n, log_l)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-9)


def test_round_trip_through_a_dict(noisy_fit):
    again = scaling.ScalingFit.from_dict(noisy_fit.to_dict())
    assert again.multiplier(1e6, 2.0) == noisy_fit.multiplier(1e6, 2.0)
    assert again.multiplier_interval(1e6, 2.0) == noisy_fit.multiplier_interval(1e6, 2.0)


@pytest.mark.parametrize("sizes, losses, message", [
    ([1e5, 1e6], [3.0, 2.5], "at least 3 model sizes"),
    ([1e5, 1e5, 1e6], [3.0, 2.9, 2.5], "at least 3 model sizes"),
    ([1e5, 1e6, 1e7], [3.0, 3.1, 2.5], "non-monotone"),
    ([1e5, 1e6, 1e7], [3.0, float("nan"), 2.5], "finite"),
    ([1e5, -1e6, 1e7], [3.0, 2.8, 2.5], "positive"),
    ([1e5, 1e6, 1e7], [3.0, 2.8], "equal-length"),
])
def test_unusable_ladders_are_refused_with_a_reason(sizes, losses, message):
    with pytest.raises(SolulabError, match=message):
        scaling.fit(sizes, losses)
