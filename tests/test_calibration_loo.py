"""recalibrate(cv="loo"): PSIS leave-one-out PIT values of the fit itself (no refits).

The check against an exact answer: a conjugate Normal-mean model (known unit noise, prior
N(0, tau^2)) whose posterior draws are exact, so each row's leave-one-out predictive is the
closed form N(m_-i, v_-i + 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _posteriors import exact_posterior
from scipy import stats

from bayes_mdn.calibration.loo import loo_pit_values
from bayes_mdn.predictive import PredictiveMixture

TAU = 2.0
NUM_ROWS = 6
NUM_DRAWS = 4000


def _conjugate(seed: int = 0, num_draws: int = NUM_DRAWS):
    """(posterior with exact draws of mu, X, y, exact LOO-PIT, in-sample PIT)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.7, 1.0, NUM_ROWS)
    y[0] = 3.5  # an outlying row: leaving it out moves the posterior most

    def posterior_of(values):
        variance = 1.0 / (1.0 / TAU**2 + values.size)
        return variance * values.sum(), variance

    mean, variance = posterior_of(y)
    mu = rng.normal(mean, np.sqrt(variance), num_draws)
    post = exact_posterior(np.zeros((num_draws, 1)), mu[:, None], np.ones((num_draws, 1)))
    post = dataclasses.replace(post, kind="independent")
    exact = np.empty(NUM_ROWS)
    for i in range(NUM_ROWS):
        m, v = posterior_of(np.delete(y, i))
        exact[i] = stats.norm.cdf(y[i], m, np.sqrt(v + 1.0))
    in_sample = stats.norm.cdf(y, mean, np.sqrt(variance + 1.0))
    return post, np.zeros((NUM_ROWS, 1)), y, exact, in_sample


def test_loo_pit_matches_the_exact_leave_one_out_predictive():
    post, X, y, exact, in_sample = _conjugate()
    u, k_hat = loo_pit_values(post, X, y[:, None], key=None)
    # Monte Carlo error of 4000 importance-weighted draws with k-hat < 0.5: about 0.005.
    np.testing.assert_allclose(u, exact, atol=0.01)
    assert np.all(k_hat < 0.5)
    # Not the in-sample PIT: where leaving the row out matters most, by more than that.
    row = int(np.argmax(np.abs(in_sample - exact)))
    assert abs(in_sample[row] - exact[row]) > 0.03
    assert abs(u[row] - in_sample[row]) > 0.02


def test_recalibrate_loo_records_the_method_and_pareto_k():
    post, X, y, _, _ = _conjugate()
    recal = post.recalibrate(np.tile(X, (2, 1)), np.tile(y, 2), method="beta", cv="loo")
    record = recal.info["recalibration"]
    assert record["cv"] == "loo" and record["num_points"] == 2 * NUM_ROWS
    assert record["max_pareto_k"] < 0.7 and record["fraction_high_pareto_k"] == 0.0


def test_high_pareto_k_warns_with_advice():
    rng = np.random.default_rng(3)
    mu = rng.normal(0.0, 0.05, 200)  # a posterior far too sure for the rows below
    post = dataclasses.replace(
        exact_posterior(np.zeros((200, 1)), mu[:, None], np.full((200, 1), 0.3)),
        kind="independent")
    y = np.r_[rng.normal(0, 0.3, 18), 4.0, -4.0]
    with pytest.warns(UserWarning, match=r"Pareto k-hat above 0\.7 .* Use cv=5"):
        recal = post.recalibrate(np.zeros((20, 1)), y, method="beta", cv="loo")
    assert recal.info["recalibration"]["fraction_high_pareto_k"] > 0


@pytest.fixture
def no_kernels(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran before the input was checked")

    monkeypatch.setattr(PredictiveMixture, "_run", refuse)


def test_loo_needs_posterior_draws(no_kernels):
    point = exact_posterior([[0.0]], [[0.0]], [[1.0]])
    with pytest.raises(ValueError, match=r"cv='loo'\) reweights posterior draws and needs at "
                                         r"least 50; this map fit has 1\. Use cv=5"):
        point.recalibrate(np.zeros((30, 1)), np.zeros(30), cv="loo")


def test_loo_bad_options(no_kernels):
    post, *_ = _conjugate(num_draws=100)
    with pytest.raises(ValueError, match=r"needs num_draws >= 50; got 10"):
        post.recalibrate(np.zeros((30, 1)), np.zeros(30), cv="loo", num_draws=10)
    with pytest.raises(ValueError, match=r"`cv` must be an integer >= 2 .*\"loo\" or None; "
                                         r"got 'five'"):
        post.recalibrate(np.zeros((30, 1)), np.zeros(30), cv="five")
    with pytest.raises(ValueError, match=r"NaN|finite"):
        post.recalibrate(np.zeros((30, 1)), np.r_[np.zeros(29), np.nan], cv="loo")
    with pytest.raises(ValueError, match=r"at least 20 calibration rows"):
        post.recalibrate(np.zeros((10, 1)), np.zeros(10), cv="loo")
