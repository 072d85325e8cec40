"""Confidence models: Platt and isotonic fits against scipy, reliability bins, Brier score."""

import math

import numpy as np
import pytest
import scipy.optimize
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tripletface import confidence
from tripletface.confidence import ConfidenceModel
from tripletface.errors import InputError


def logistic_pairs(n: int, a: float, b: float, seed: int = 0):
    """Distances in [0, 1.2] and labels drawn from P(same | d) = 1 / (1 + exp(a d + b))."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 1.2, n)
    same = rng.random(n) < 1 / (1 + np.exp(a * d + b))
    return d, same


def weighted_log_loss(theta, d, same):
    """The loss Platt scaling minimises, with both classes weighing 1/2 and smoothed targets."""
    pos, neg = same.sum(), (~same).sum()
    w = np.where(same, 0.5 / pos, 0.5 / neg)
    t = np.where(same, (pos + 1) / (pos + 2), 1 / (neg + 2))
    z = theta[0] * d + theta[1]
    return float((w * (t * np.logaddexp(0, z) + (1 - t) * np.logaddexp(0, -z))).sum())


def test_platt_is_the_weighted_logistic_fit():
    d, same = logistic_pairs(4000, 12.0, -5.0)
    model = confidence.fit_platt(d, same)
    reference = scipy.optimize.minimize(
        weighted_log_loss,
        x0=[1.0, 0.0],
        args=(d, same),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000},
    ).x
    assert model.params == pytest.approx(tuple(reference), rel=1e-4, abs=1e-4)
    # At even odds: the drawing curve's log-odds shifted by the pairs' own log-odds.
    shift = math.log(same.sum() / (~same).sum())
    assert model.params[0] == pytest.approx(12.0, rel=0.15)
    assert model.params[1] == pytest.approx(-5.0 + shift, abs=0.4)


def test_confidence_does_not_depend_on_the_proportion_of_pairs():
    d, same = logistic_pairs(6000, 10.0, -4.0, seed=1)
    keep = same | (np.arange(len(d)) % 3 == 0)  # a third of the different-person pairs
    full, fewer = confidence.fit_platt(d, same), confidence.fit_platt(d[keep], same[keep])
    grid = np.linspace(0, 1.2, 13)
    assert np.abs(full(grid) - fewer(grid)).max() < 0.08


def pav_reference(y, w):
    """Non-increasing weighted least squares through scipy's isotonic regression."""
    return scipy.optimize.isotonic_regression(y, weights=w, increasing=False).x


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 4), st.booleans()), min_size=2, max_size=40))
def test_isotonic_is_the_monotone_least_squares_fit(rows):
    d = np.array([r[0] for r in rows])
    same = np.array([r[1] for r in rows])
    assume(same.any() and not same.all() and len(np.unique(d)) == len(d))
    model = confidence.fit_isotonic(d, same)
    order = np.argsort(d)
    w = np.where(same, 0.5 / same.sum(), 0.5 / (~same).sum())[order]
    expected = pav_reference(same[order].astype(float), w)
    assert model(d[order]) == pytest.approx(expected, abs=1e-9)
    assert np.all(np.diff(model(np.linspace(0, 4, 50))) <= 1e-12)


def test_models_round_trip_through_dicts_and_reject_bad_ones():
    d, same = logistic_pairs(500, 8.0, -3.0)
    for method in confidence.METHODS:
        model = confidence.fit(d, same, method, source="test pairs")
        again = ConfidenceModel.from_dict(model.to_dict())
        assert again == model and again.source == "test pairs"
        assert np.array_equal(again(d), model(d))
    with pytest.raises(InputError, match="malformed"):
        ConfidenceModel.from_dict({"params": [1, 2]})
    with pytest.raises(InputError, match="a > 0"):
        ConfidenceModel.from_dict({"method": "platt", "params": [-1, 2]})
    with pytest.raises(InputError, match="unknown confidence method"):
        confidence.fit(d, same, "magic")
    with pytest.raises(InputError, match="needs both"):
        confidence.fit_platt(d, np.ones(len(d), bool))
    # Same-person pairs farther apart than the others: the distance tells nothing, 0.5.
    flat = confidence.fit_platt([0.1, 0.2, 0.9, 1.0], [False, False, True, True])
    assert flat(np.array([0.0, 1.0, 4.0])) == pytest.approx([0.5] * 3)


def test_platt_probabilities_fall_with_distance_and_never_overflow():
    model = ConfidenceModel("platt", (20.0, -3.0))
    p = model(np.array([-1e6, 0.0, 0.15, 0.3, 4.0, 1e6]))
    assert np.all(np.diff(p) <= 0) and p[0] == 1.0 and p[-1] == 0.0
    assert p[2] == pytest.approx(0.5)


def test_brier_score_and_reliability_against_direct_counts():
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    same = rng.random(1000) < p
    pos, neg = same.sum(), (~same).sum()
    w = np.where(same, 0.5 / pos, 0.5 / neg)
    assert confidence.brier_score(p, same) == pytest.approx((w * (p - same) ** 2).sum())
    assert confidence.brier_score(p, same, balanced=False) == pytest.approx(
        np.mean((p - same) ** 2)
    )
    bins = confidence.reliability(p, same, bins=5)
    assert sum(b.same + b.different for b in bins) == 1000
    for b in bins:
        inside = (p >= b.low) & ((p < b.high) if b.high < 1 else (p <= 1))
        assert b.same == int(same[inside].sum()) and b.different == int((~same[inside]).sum())
        assert b.low <= b.predicted <= b.high
        assert b.observed == pytest.approx((w * same)[inside].sum() / w[inside].sum())
    assert 0 <= confidence.expected_calibration_error(bins) < 0.5


def test_a_well_fitted_model_is_reliable_on_new_pairs():
    d, same = logistic_pairs(20000, 15.0, -6.0, seed=4)
    model = confidence.fit_platt(d[:10000], same[:10000])
    bins = confidence.reliability(model(d[10000:]), same[10000:])
    assert confidence.expected_calibration_error(bins) < 0.05
    assert confidence.brier_score(model(d[10000:]), same[10000:]) < confidence.brier_score(
        np.full(10000, 0.5), same[10000:]
    )
