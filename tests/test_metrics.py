"""bayes_mdn.metrics: scores against closed forms and SciPy, calibration on known densities."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import numpy as np
import pytest
from _posteriors import exact_posterior
from _posteriors import random_posterior as _random_posterior
from scipy import integrate, optimize, stats

import bayes_mdn as bm
from bayes_mdn import metrics

#: 0.3 N(-2, 0.5) + 0.7 N(3, 1): the bimodal_posterior fixture's mixture.
BIMODAL = (np.array([0.3, 0.7]), np.array([-2.0, 3.0]), np.array([0.5, 1.0]))
#: The two_draw_posterior fixture's predictive as one flat mixture of 2 x 2 components.
TWO_DRAWS = (np.array([0.25, 0.25, 0.1, 0.4]), np.array([-1.0, 1.0, 0.0, 4.0]),
             np.array([1.0, 0.5, 2.0, 0.3]))


def mixture_cdf(z, weights, locs, scales):
    return np.sum(weights * stats.norm.cdf((np.asarray(z)[..., None] - locs) / scales), -1)


def crps_by_integral(y, weights, locs, scales):
    """CRPS from its definition, integral (F(z) - 1{y <= z})**2 dz, by adaptive quadrature."""
    low = np.min(locs - 12 * scales)
    high = np.max(locs + 12 * scales)
    below = integrate.quad(lambda z: mixture_cdf(z, weights, locs, scales) ** 2, min(low, y), y,
                           limit=200, epsabs=1e-12)[0]
    above = integrate.quad(lambda z: (1 - mixture_cdf(z, weights, locs, scales)) ** 2, y,
                           max(high, y), limit=200, epsabs=1e-12)[0]
    return below + above


def sample_mixture(rng, num, weights, locs, scales):
    component = rng.choice(len(weights), size=num, p=weights)
    return rng.normal(locs[component], scales[component])


#: Random posteriors here have scales about 2 softplus(1 + 0.25 noise) unless said otherwise.
random_posterior = functools.partial(_random_posterior, scale_spread=0.25)


#: Inputs of the shared bimodal predictive: one size, so the kernels compile once for it.
NUM_BIMODAL = 512


@pytest.fixture(scope="module")
def bimodal():
    """(predictive, y): BIMODAL at NUM_BIMODAL inputs and targets drawn from it."""
    weights, locs, scales = BIMODAL
    post = exact_posterior(np.log([weights]), [locs], [scales])
    y = sample_mixture(np.random.default_rng(3), NUM_BIMODAL, *BIMODAL)
    return post.predictive(np.zeros((NUM_BIMODAL, 1))), y


@dataclasses.dataclass(frozen=True)
class DiscreteNormal(bm.families.Normal):
    """A stand-in discrete family: Normal components flagged ``discrete``."""

    name: ClassVar[str] = "discrete_normal"
    discrete: ClassVar[bool] = True


def with_family(pred: bm.PredictiveMixture, family) -> bm.PredictiveMixture:
    return dataclasses.replace(pred, model=dataclasses.replace(pred.model, family=family))


# --------------------------------------------------------------------------- CRPS
@pytest.mark.parametrize("method", ["closed_form", "quadrature"])
def test_crps_of_a_normal_matches_the_gaussian_formula(method):
    # CRPS(N(mu, s^2), y) = s [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (y - mu) / s.
    mu, s = 1.5, 0.7
    post = exact_posterior([[0.0]], [[mu]], [[s]])
    y = np.array([-3.0, 0.0, 1.5, 2.0, 6.0])
    z = (y - mu) / s
    expected = s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    got = metrics.crps(post.predictive(np.zeros((5, 1))), y, method=method, pointwise=True)
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got[:, 0], expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.crps(post.predictive(np.zeros((5, 1))), y,
                                            method=method), [expected.mean()], rtol=2e-5)


@pytest.mark.parametrize("method", ["closed_form", "quadrature"])
def test_crps_of_mixtures_matches_the_numerical_integral(method, bimodal_posterior,
                                                         two_draw_posterior):
    y = np.array([-6.0, -2.0, 0.3, 1.0, 3.0, 4.2, 9.0])
    for post, mixture in ((bimodal_posterior, BIMODAL), (two_draw_posterior, TWO_DRAWS)):
        got = metrics.crps(post.predictive(np.zeros((y.size, 1))), y, method=method,
                           pointwise=True)[:, 0]
        expected = [crps_by_integral(value, *mixture) for value in y]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_quadrature_matches_closed_form_with_many_draws_and_outputs():
    # Narrow components at some inputs: the automatic grids here are 256 to 1024 points.
    post = random_posterior(60, 3, num_outputs=2, scale_spread=1.0)
    X = np.random.default_rng(1).normal(size=(9, 2))
    pred = post.predictive(X)
    y = pred.sample(jax.random.key(0), 1)[0] + 0.5
    exact = metrics.crps(pred, y, method="closed_form", pointwise=True)
    quadrature = metrics.crps(pred, y, method="quadrature", pointwise=True)
    assert exact.shape == (9, 2)
    np.testing.assert_allclose(quadrature, exact, rtol=1e-4, atol=1e-5)
    # auto takes, per input, the closed form where the grid would cost more (grid >= 2 S K
    # = 360 points) and the quadrature elsewhere: both occur here.
    auto = metrics.crps(pred, y, pointwise=True)
    as_quadrature = np.all(auto == quadrature, axis=1)  # same grids: bit-identical rows
    assert as_quadrature.any() and not as_quadrature.all()
    np.testing.assert_allclose(auto, exact, rtol=1e-4, atol=1e-5)
    # ... and chunking the pairs over inputs and draws changes nothing beyond rounding.
    small = post.predictive(X, max_elements=64)
    np.testing.assert_allclose(metrics.crps(small, y, method="closed_form", pointwise=True),
                               exact, rtol=5e-5, atol=1e-6)


def test_auto_switches_to_quadrature_for_many_terms():
    post = random_posterior(100, 3)  # S K = 300 > 64, and 128-point grids suffice
    pred = post.predictive(np.random.default_rng(2).normal(size=(3, 2)))
    y = np.array([0.0, 1.5, 4.0])
    auto = metrics.crps(pred, y, pointwise=True)
    np.testing.assert_array_equal(auto, metrics.crps(pred, y, method="quadrature",
                                                     pointwise=True))
    np.testing.assert_allclose(auto, metrics.crps(pred, y, method="closed_form",
                                                  pointwise=True), rtol=1e-4)


def test_sampled_crps_agrees_with_closed_form_within_monte_carlo_error(bimodal):
    pred, y = bimodal
    exact = metrics.crps(pred, y, pointwise=True)[:, 0]
    sampled = metrics.crps(pred, y, method="sample", key=jax.random.key(0), num_samples=500,
                           pointwise=True)[:, 0]
    difference = sampled.astype(np.float64) - exact
    # Each input has its own independent samples: the mean difference has standard error
    # std / sqrt(N) (about 0.004 here); the estimator is unbiased.
    standard_error = difference.std() / np.sqrt(y.size)
    assert abs(difference.mean()) < 4 * standard_error
    assert np.all(np.abs(difference) < 0.5) and np.all(sampled >= 0)
    # Same key, same result; a smaller memory budget (other chunks) too.
    small = dataclasses.replace(pred, max_elements=2048)
    again = metrics.crps(small, y, method="sample", key=jax.random.key(0), num_samples=500,
                         pointwise=True)[:, 0]
    np.testing.assert_allclose(again, sampled, rtol=1e-5, atol=1e-6)


def test_crps_is_proper_the_true_distribution_scores_best(bimodal):
    pred, y = bimodal
    X = np.zeros((y.size, 1))
    weights, locs, scales = BIMODAL
    true = metrics.crps(pred, y)[0]
    log_true = metrics.log_score(pred, y)
    for other_locs, other_scales in ((locs + 0.5, scales), (locs, 1.5 * scales),
                                     (locs, 0.6 * scales)):
        other = exact_posterior(np.log([weights]), [other_locs], [other_scales]).predictive(X)
        assert metrics.crps(other, y)[0] > true + 0.01
        assert metrics.log_score(other, y) < log_true


# --------------------------------------------------------------------------- PIT
def test_pit_is_uniform_for_the_true_distribution_and_not_for_wrong_ones(two_draw_posterior):
    rng = np.random.default_rng(5)
    weights, locs, scales = TWO_DRAWS
    pred = two_draw_posterior.predictive(np.zeros((2000, 1)))
    y = sample_mixture(rng, 2000, weights, locs, scales)
    values = metrics.pit(pred, y)
    assert values.shape == (2000, 1) and np.all((values >= 0) & (values <= 1))
    np.testing.assert_allclose(values[:, 0], mixture_cdf(y, weights, locs, scales), atol=2e-6)
    statistic, pvalue = metrics.ks_uniform(values)
    assert pvalue[0] > 0.01, (statistic, pvalue)
    for wrong in (y + 0.4, 1.3 * y, 0.8 * y):  # shifted, too wide, too narrow
        statistic, pvalue = metrics.ks_uniform(metrics.pit(pred, wrong))
        assert pvalue[0] < 1e-6, (statistic, pvalue)


@pytest.mark.slow
def test_pit_of_a_fitted_map_model_is_uniform_on_fresh_data():
    # A MAP fit on 4000 points of the seed problem; PIT on 1000 held-out points. A MAP fit
    # this size keeps a small misfit that the KS test can see at 1000 points: over data and
    # fit keys 0-5 this setup gave p = 0.028, 0.65, 0.080, 0.41, 0.41, 0.23 (the exact
    # density gives p = 0.18 on key 0's test points). K = 5, one layer of 16 and 1500
    # steps gave p = 0.004 on key 2. Key 1 is used here.
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(1), 5000, 0.8)
    post = bm.MDN(num_components=10, hidden_sizes=(32,)).fit(
        X, y, key=jax.random.key(1), method="map", num_steps=3000, lr_schedule="cosine",
        ema_decay=0.995)
    pred = post.predictive(X_test)
    _, pvalue = metrics.ks_uniform(metrics.pit(pred, y_test))
    assert pvalue[0] > 0.01
    _, pvalue = metrics.ks_uniform(metrics.pit(pred, y_test + 1.0))
    assert pvalue[0] < 1e-6
    assert abs(metrics.coverage(pred, y_test)[0.9] - 0.9) < 4 * np.sqrt(0.09 / 1000)


def test_randomised_pit_for_a_discrete_family(bimodal):
    pred = with_family(bimodal[0], DiscreteNormal(min_scale=1e-3))
    y = np.round(bimodal[1])
    with pytest.raises(TypeError, match=r"discrete family 'discrete_normal' and needs `key`"):
        metrics.pit(pred, y)
    values = metrics.pit(pred, y, key=jax.random.key(0))
    lower, upper = pred.cdf(y - 1)[:, 0], pred.cdf(y)[:, 0]
    assert np.all((values[:, 0] >= lower - 1e-7) & (values[:, 0] <= upper + 1e-7))
    assert np.mean(values[:, 0] < upper - 1e-4) > 0.9  # randomised inside, not F(y)
    np.testing.assert_array_equal(values, metrics.pit(pred, y, key=jax.random.key(0)))
    assert not np.array_equal(values, metrics.pit(pred, y, key=jax.random.key(1)))
    # Non-Normal families are scored by sampling, which needs a key as well.
    with pytest.raises(TypeError, match=r"estimates by sampling .* needs `key`"):
        metrics.crps(pred, y)
    assert metrics.crps(pred, y, key=jax.random.key(0), num_samples=50).shape == (1,)
    with pytest.raises(ValueError, match="needs Normal components"):
        metrics.crps(pred, y, method="closed_form")


# --------------------------------------------------------------------------- KS test
@pytest.mark.parametrize("num", [1, 3, 20, 137, 1000, 6000])
def test_ks_uniform_matches_scipy(num):
    rng = np.random.default_rng(num)
    columns = [rng.uniform(size=num), rng.uniform(size=num) ** 1.15,
               rng.uniform(size=num) ** 2.5, np.clip(rng.uniform(size=num) + 0.02, 0, 1)]
    statistic, pvalue = metrics.ks_uniform(np.stack(columns, axis=1))
    assert statistic.shape == pvalue.shape == (4,)
    for column, d, p in zip(columns, statistic, pvalue, strict=True):
        reference = stats.kstest(column, "uniform")
        assert d == pytest.approx(reference.statistic, rel=1e-12, abs=1e-15)
        assert p == pytest.approx(reference.pvalue, rel=1e-4, abs=1e-300)


# --------------------------------------------------------------------------- coverage
@pytest.mark.parametrize(("kind", "num", "levels"), [("central", 2000, (0.5, 0.8, 0.9, 0.95)),
                                                     ("hdr", 400, (0.5, 0.9))])
def test_coverage_on_the_exact_posterior(two_draw_posterior, kind, num, levels):
    weights, locs, scales = TWO_DRAWS
    y = sample_mixture(np.random.default_rng(7), num, weights, locs, scales)
    pred = two_draw_posterior.predictive(np.zeros((num, 1)))
    result = metrics.coverage(pred, y, levels, kind=kind)
    assert result.kind == kind and result.num_points == num
    assert result.per_output.shape == (len(levels), 1)
    tolerance = 4 * np.sqrt(np.array(levels) * (1 - np.array(levels)) / num)
    assert np.all(np.abs(result.empirical - levels) < tolerance), result
    np.testing.assert_allclose(result.standard_error, tolerance / 4)
    # The same fractions from the known mixture: central via its cdf, HDR via the density
    # threshold that holds each level's mass (on a fine grid).
    if kind == "central":
        u = mixture_cdf(y, weights, locs, scales)
        reference = [np.mean(np.abs(u - 0.5) <= level / 2) for level in levels]
    else:
        grid = np.linspace(-12, 12, 200_001)
        density = np.sum(weights * stats.norm.pdf((grid[:, None] - locs) / scales) / scales, 1)
        at_y = np.sum(weights * stats.norm.pdf((y[:, None] - locs) / scales) / scales, 1)
        ordered = np.sort(density)[::-1]
        mass = np.cumsum(ordered) * (grid[1] - grid[0])
        reference = [np.mean(at_y >= ordered[np.searchsorted(mass, level)])
                     for level in levels]
    np.testing.assert_allclose(result.empirical, reference, atol=2.5 / num)


def test_coverage_result_is_a_mapping(bimodal):
    pred, y = bimodal
    result = metrics.coverage(pred, y, [0.9, 0.5])
    assert list(result) == [0.9, 0.5] and len(result) == 2
    assert result[0.9] == pytest.approx(result.per_output[0, 0]) and 0.5 in result
    assert result.as_dict() == {0.9: result[0.9], 0.5: result[0.5]} == dict(result)
    assert "Coverage(kind='central', num_points=512, {0.9: " in repr(result)
    with pytest.raises(KeyError):
        result[0.8]
    single = metrics.coverage(pred, y, 0.9)
    assert single.levels.tolist() == [0.9] and single[0.9] == result[0.9]


def test_coverage_and_crps_per_output_for_two_outputs():
    post = random_posterior(5, 3, num_outputs=2)
    pred = post.predictive(np.random.default_rng(9).normal(size=(400, 2)))
    y = pred.sample(jax.random.key(1), 1)[0]
    result = metrics.coverage(pred, y, (0.5, 0.9))
    assert result.per_output.shape == (2, 2)
    np.testing.assert_allclose(result.empirical, result.per_output.mean(axis=1))
    assert np.all(np.abs(result.per_output - [[0.5], [0.9]]) < 4 * np.sqrt(0.25 / 400))
    assert metrics.crps(pred, y).shape == (2,)
    assert metrics.pit(pred, y).shape == (400, 2)
    assert metrics.rmse(pred, y).shape == metrics.mae(pred, y).shape == (2,)
    with pytest.raises(ValueError, match=r"kind='hdr' needs one output \(D = 1\)"):
        metrics.coverage(pred, y, kind="hdr")


# --------------------------------------------------------------------------- point errors
def test_rmse_and_mae_match_numpy(bimodal):
    pred, y = bimodal
    weights, locs, scales = BIMODAL
    mean = float(np.sum(weights * locs))
    median = optimize.brentq(lambda z: mixture_cdf(z, *BIMODAL) - 0.5, -10, 10, xtol=1e-12)
    assert metrics.rmse(pred, y) == pytest.approx([np.sqrt(np.mean((y - mean) ** 2))], rel=1e-5)
    assert metrics.rmse(pred, y, point="median") == pytest.approx(
        [np.sqrt(np.mean((y - median) ** 2))], rel=1e-5)
    assert metrics.mae(pred, y) == pytest.approx([np.mean(np.abs(y - median))], rel=1e-5)
    assert metrics.mae(pred, y, point="mean") == pytest.approx([np.mean(np.abs(y - mean))],
                                                               rel=1e-5)
    assert metrics.log_score(pred, y) == pytest.approx(np.mean(np.log(np.sum(
        weights * stats.norm.pdf((y[:, None] - locs) / scales) / scales, axis=1))), rel=1e-5)
    assert metrics.log_score(pred, y, pointwise=True).shape == (NUM_BIMODAL,)


def test_calibration_report_collects_every_metric(bimodal):
    pred, y = bimodal
    report = metrics.calibration_report(pred, y, levels=(0.5, 0.9))
    assert report["num_points"] == NUM_BIMODAL and report["num_outputs"] == 1
    assert report["log_score"] == metrics.log_score(pred, y)
    assert report["crps"] == metrics.crps(pred, y).tolist()
    assert report["rmse"] == metrics.rmse(pred, y).tolist()
    assert report["mae"] == metrics.mae(pred, y).tolist()
    assert report["coverage"] == metrics.coverage(pred, y, (0.5, 0.9)).as_dict()
    assert report["coverage_per_output"] == {0.5: [report["coverage"][0.5]],
                                             0.9: [report["coverage"][0.9]]}
    statistic, pvalue = metrics.ks_uniform(metrics.pit(pred, y))
    assert report["pit_ks_statistic"] == statistic.tolist()
    assert report["pit_ks_pvalue"] == pvalue.tolist()
    assert bm.metrics is metrics and "metrics" in bm.__all__


# --------------------------------------------------------------------------- errors
def test_bad_inputs_are_rejected(bimodal_posterior):
    pred = bimodal_posterior.predictive(np.zeros((4, 1)))
    y = np.zeros(4)
    with pytest.raises(TypeError, match=r"needs a PredictiveMixture .* Call "
                                         r"posterior.predictive\(X_test\) first"):
        metrics.crps(bimodal_posterior, y)
    with pytest.raises(TypeError, match="log_score\\(\\) needs a PredictiveMixture"):
        metrics.log_score(np.zeros(4), y)
    with pytest.raises(ValueError, match=r"one row per input of the predictive \(4\); got 3"):
        metrics.pit(pred, np.zeros(3))
    with pytest.raises(ValueError, match="has 2 output columns but the model has 1"):
        metrics.rmse(pred, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="contains 1 NaN"):
        metrics.mae(pred, [0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"strictly between 0 and 1, e.g. 0.9"):
        metrics.coverage(pred, y, (0.5, 1.0))
    with pytest.raises(ValueError, match="non-empty 1-D sequence"):
        metrics.coverage(pred, y, [])
    with pytest.raises(ValueError, match="must not repeat a level"):
        metrics.coverage(pred, y, (0.9, 0.9))
    with pytest.raises(TypeError, match="`levels` must be a number or a sequence"):
        metrics.coverage(pred, y, ("a", 0.5))
    with pytest.raises(ValueError, match="Unknown kind 'interval'"):
        metrics.coverage(pred, y, kind="interval")
    with pytest.raises(ValueError, match="Unknown point 'mode'"):
        metrics.rmse(pred, y, point="mode")
    with pytest.raises(ValueError, match="Unknown method 'exact'"):
        metrics.crps(pred, y, method="exact")
    with pytest.raises(TypeError, match=r"pass jax.random.key\(0\)"):
        metrics.crps(pred, y, method="sample", key=0)
    with pytest.raises(TypeError, match=r"needs `key`, e.g. key=jax.random.key\(0\)"):
        metrics.crps(pred, y, method="sample")
    with pytest.raises(ValueError, match="`num_samples` must be at least 2"):
        metrics.crps(pred, y, method="sample", key=jax.random.key(0), num_samples=1)
    with pytest.raises(ValueError, match="`grid_size` must be at least 16"):
        metrics.crps(pred, y, method="quadrature", grid_size=8)
    with pytest.raises(ValueError, match=r"`values` must lie in \[0, 1\]"):
        metrics.ks_uniform([0.2, 1.5])
    with pytest.raises(TypeError, match=r"pass jax.random.key\(3\)"):
        metrics.pit(pred, y, key=3)


def test_coarse_quadrature_grid_warns():
    # A wide and a very narrow component 100 apart: resolving the narrow one needs about
    # 100 / (1.35 * 0.01) * 1.5 = 11 000 points, more than the automatic grids' 8192.
    post = exact_posterior(np.log([[0.5, 0.5]]), [[-50.0, 50.0]], [[1.0, 0.01]])
    pred = post.predictive(np.zeros((3, 1)))
    with pytest.warns(UserWarning, match=r"crps\(\): the quadrature grid is too coarse .* at 3 "
                                         r"of 3 inputs \(it needs up to 1\d{4} points\); .* "
                                         r"Pass grid_size=1\d{4} or more"):
        metrics.crps(pred, np.zeros(3), method="quadrature", grid_size=16)
    with pytest.warns(UserWarning, match="Grids stop at 8192 points, or use "
                                         "method='closed_form'"):
        scores = metrics.crps(pred, np.zeros(3), method="quadrature")
    # Even so the error is small: the unresolved component is smooth at the grid's scale.
    np.testing.assert_allclose(scores, metrics.crps(pred, np.zeros(3)), rtol=1e-3)
