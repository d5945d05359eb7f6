"""bayes_mdn.calibration.conformal: finite-sample coverage, set shapes, Mondrian bins, errors.

A fixed known mixture (tests/conftest.py ``exact_posterior``) is the predictor, so the
conformal machinery is checked without fitting; the data are drawn from a different mixture
(the predictor is wrong) because the guarantee must hold whatever the model.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_posterior
from scipy import stats

import bayes_mdn as bm
from bayes_mdn.predictive import PredictiveMixture

ALPHA = 0.1


@pytest.fixture(scope="module")
def posterior():
    """0.5 N(-3, 0.7) + 0.5 N(3, 0.7) at every input: clearly bimodal."""
    return exact_posterior(np.log([[0.5, 0.5]]), [[-3.0, 3.0]], [[0.7, 0.7]])


def _data(rng, n):
    """The truth: 0.4 N(-3, 1) + 0.6 N(3.5, 0.8), so the predictor is miscalibrated."""
    first = rng.random(n) < 0.4
    y = np.where(first, rng.normal(-3.0, 1.0, n), rng.normal(3.5, 0.8, n))
    return np.zeros((n, 1)), y


@pytest.mark.parametrize("score", ["density", "pit"])
def test_coverage_over_random_splits_is_within_the_finite_sample_band(posterior, score):
    """Split conformal: E[coverage] is in [1 - alpha, 1 - alpha + 1/(n + 1)] exactly.

    300 random splits of a pool of 3000 rows into n = 99 calibration and 2901 test rows; the
    mean coverage over splits has Monte Carlo error sd / sqrt(300) (about 0.0017 here), and
    the test allows 4 of those beyond the band.
    """
    X, y = _data(np.random.default_rng(0), 3000)
    rng = np.random.default_rng(1)
    n = 99
    coverages = []
    for _ in range(300):
        order = rng.permutation(X.shape[0])
        cal, test = order[:n], order[n:]
        predictor = bm.calibration.conformal(posterior, X[cal], y[cal], alpha=ALPHA,
                                             score=score)
        coverages.append(predictor.contains(X[test], y[test]).mean())
    coverages = np.array(coverages)
    error = 4 * coverages.std() / np.sqrt(coverages.size)
    lower, upper = predictor.coverage_band
    assert (lower, upper) == (pytest.approx(0.9), pytest.approx(0.9 + 1 / 100))
    assert lower - error <= coverages.mean() <= upper + error


def test_density_sets_are_unions_of_intervals_and_shorter_than_pit_intervals(posterior):
    rng = np.random.default_rng(2)
    X_cal, y_cal = _data(rng, 500)
    X_test, y_test = _data(rng, 400)
    density = bm.calibration.conformal(posterior, X_cal, y_cal, alpha=ALPHA)
    interval = bm.calibration.conformal(posterior, X_cal, y_cal, alpha=ALPHA, score="pit")
    [sets] = density.predict_sets(X_test[:1])[:1]
    assert sets.shape == (2, 2)  # one interval around each mode
    assert sets[0, 1] < 0 < sets[1, 0]
    [single] = interval.predict_sets(X_test[:1])
    assert single.shape == (1, 2)
    # The gap between the modes (about 1.6 of 8.8) is left out of the density set.
    assert density.set_length(X_test[:1])[0] < 0.8 * interval.set_length(X_test[:1])[0]
    # The grid-based sets agree with the exact membership test.
    inside = density.contains(X_test, y_test)
    in_sets = np.array([np.any((s[:, 0] <= value) & (value <= s[:, 1]))
                        for s, value in zip(density.predict_sets(X_test), y_test, strict=True)])
    assert np.mean(inside == in_sets) > 0.99
    # The PIT interval is the predictive's central interval at the corrected levels.
    q = interval.thresholds[0]
    expected = posterior.predictive(X_test[:1]).quantiles([0.5 - q, 0.5 + q])[:, 0, 0]
    np.testing.assert_allclose(single[0], expected)


def test_mondrian_bins_get_their_own_thresholds(posterior):
    rng = np.random.default_rng(3)
    X, y = _data(rng, 400)
    X = np.concatenate([X, X + 1.0])  # two groups of inputs, the second much noisier
    y = np.concatenate([y, y * 3.0])
    predictor = bm.calibration.conformal(posterior, X, y, alpha=ALPHA,
                                         bins=lambda X_: (X_[:, 0] > 0.5).astype(int))
    assert predictor.thresholds.shape == (2,)
    assert predictor.thresholds[1] > predictor.thresholds[0]
    X_new, y_new = _data(rng, 2000)
    for shift, scale in ((0.0, 1.0), (1.0, 3.0)):
        covered = predictor.contains(X_new + shift, y_new * scale).mean()
        assert covered == pytest.approx(0.9, abs=0.04)  # per-bin (conditional) guarantee
    # Bins of the predictive's spread: this predictive is the same at every input, so one
    # bin gets every row and the other none, which is refused.
    with pytest.raises(ValueError, match=r"Bin 0 has 0 calibration rows.*Use fewer bins"):
        bm.calibration.conformal(posterior, X, y, alpha=ALPHA, bins=2)


def test_discrete_family_sets_are_runs_of_integers():
    from bayes_mdn.scaling import Standardizer

    model = bm.MDN(num_components=1, hidden_sizes=(), family="poisson")
    draws = {"logits.kernel": np.zeros((1, 1, 1, 1), np.float32),
             "logits.bias": np.zeros((1, 1, 1), np.float32),
             "rate.kernel": np.zeros((1, 1, 1, 1), np.float32),
             "rate.bias": np.full((1, 1, 1), np.log(5.0), np.float32)}
    post = bm.Posterior(model=model, method="map", draws=draws,
                        standardizer=Standardizer(np.zeros(1), np.ones(1), np.zeros(1),
                                                  np.ones(1)))
    y = np.random.default_rng(4).poisson(5.0, 300).astype(float)
    predictor = bm.calibration.conformal(post, np.zeros((300, 1)), y, alpha=ALPHA)
    [region] = predictor.predict_sets(np.zeros((1, 1)))
    assert np.all(region == np.floor(region))
    mass = stats.poisson(5.0).pmf(np.arange(region[0, 0], region[-1, 1] + 1)).sum()
    assert mass >= 0.9 - 0.03
    assert predictor.set_length(np.zeros((1, 1)))[0] == np.sum(region[:, 1] - region[:, 0] + 1)


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def no_kernels(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran before the input was checked")

    monkeypatch.setattr(PredictiveMixture, "_run", refuse)


@pytest.mark.parametrize(("X", "y", "kwargs", "error", "match"), [
    (np.zeros(50), np.zeros(50), {}, ValueError, "2-D array"),
    (np.zeros((50, 2)), np.zeros(50), {}, ValueError, "features|columns"),
    (np.zeros((50, 1)), np.r_[np.zeros(49), np.nan], {}, ValueError, "NaN|finite"),
    (np.r_[np.zeros((49, 1)), [[np.inf]]], np.zeros(50), {}, ValueError, "NaN|finite"),
    (np.zeros((50, 1)), np.zeros(50), {"alpha": -0.1}, ValueError,
     "strictly between 0 and 1"),
    (np.zeros((50, 1)), np.zeros(49), {}, ValueError, "same number of rows"),
    (np.zeros((50, 1)), np.zeros(50), {"alpha": 1.0}, ValueError, "strictly between 0 and 1"),
    (np.zeros((50, 1)), np.zeros(50), {"alpha": 0.0}, ValueError, "strictly between 0 and 1"),
    (np.zeros((50, 1)), np.zeros(50), {"alpha": "0.1"}, TypeError, "must be a number"),
    (np.zeros((8, 1)), np.zeros(8), {"alpha": 0.1}, ValueError, "at least 9 calibration rows"),
    (np.zeros((30, 1)), np.zeros(30), {"alpha": 0.1, "bins": 4}, ValueError, "per bin"),
    (np.zeros((50, 1)), np.zeros(50), {"score": "rank"}, ValueError, "score"),
    (np.zeros((50, 1)), np.zeros((50, 2)), {}, ValueError, r"one output \(D = 1\)"),
])
def test_bad_input_is_refused_before_compilation(posterior, no_kernels, X, y, kwargs, error,
                                                 match):
    with pytest.raises(error, match=match):
        bm.calibration.conformal(posterior, X, y, **kwargs)


def test_predictor_must_be_a_posterior_or_callable(no_kernels):
    with pytest.raises(TypeError, match="Posterior or a callable"):
        bm.calibration.conformal(3, np.zeros((50, 1)), np.zeros(50))


def test_a_recalibrated_posterior_is_a_valid_predictor(posterior):
    rng = np.random.default_rng(5)
    X_fit, y_fit = _data(rng, 300)
    recalibrated = posterior.recalibrate(X_fit, y_fit, method="beta")
    X_cal, y_cal = _data(rng, 200)
    predictor = bm.calibration.conformal(recalibrated, X_cal, y_cal, alpha=0.2, score="pit")
    X_new, y_new = _data(rng, 2000)
    assert predictor.contains(X_new, y_new).mean() == pytest.approx(0.8, abs=0.05)
