"""bayes_mdn.calibration: recalibration maps, the recalibrated predictive, save/load.

Known mixtures (tests/conftest.py ``exact_posterior``) stand in for fitted posteriors, so
the recalibrated distribution is checked against quadrature and samples, cheaply.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import exact_posterior
from scipy import stats

import bayes_mdn as bm
from bayes_mdn.calibration import (
    BetaMap,
    IdentityMap,
    IsotonicMap,
    RecalibratedPredictive,
    fit_map,
    map_from_dict,
)
from bayes_mdn.calibration.recalibrated import _default_fit_options
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.scaling import Standardizer

WEIGHTS, LOCS, SCALES = [0.3, 0.7], [-2.0, 3.0], [0.5, 1.0]


def _mixture_data(rng, n, widen=1.5):
    """Rows of the fixture's mixture with every component `widen` times wider."""
    first = rng.random(n) < WEIGHTS[0]
    y = np.where(first, rng.normal(LOCS[0], SCALES[0] * widen, n),
                 rng.normal(LOCS[1], SCALES[1] * widen, n))
    return np.zeros((n, 1)), y


@pytest.fixture(scope="module")
def posterior():
    return exact_posterior(np.log([WEIGHTS]), [LOCS], [SCALES])


@pytest.fixture(scope="module", params=["isotonic", "beta"])
def recalibrated(request, posterior):
    X, y = _mixture_data(np.random.default_rng(0), 1000)
    return posterior.recalibrate(X, y, method=request.param)


# --------------------------------------------------------------------------- maps
@pytest.mark.parametrize("method", ["isotonic", "beta"])
def test_fitted_maps_are_cdfs_on_the_unit_interval(method):
    u = stats.norm.cdf(np.random.default_rng(1).normal(0.2, 1.4, 500))
    fitted = fit_map(u, method)
    grid = np.linspace(0, 1, 200_001)
    values = fitted(grid)
    assert values[0] == 0 and values[-1] == 1
    assert np.all(np.diff(values) >= 0)
    assert np.all(fitted.density(grid) >= fitted.identity_weight * (1 - 1e-12))
    assert np.trapezoid(fitted.density(grid[1:-1]), grid[1:-1]) == pytest.approx(1, abs=2e-3)
    p = np.array([1e-6, 0.05, 0.5, 0.95, 1 - 1e-6])
    np.testing.assert_allclose(fitted(fitted.inverse(p)), p, atol=1e-12)


@pytest.mark.parametrize("kind", [IdentityMap(), BetaMap(a=0.7, b=1.3, c=0.2),
                                  IsotonicMap(knots_u=[0, 0.3, 1], knots_p=[0, 0.5, 1])])
def test_maps_round_trip_through_their_dict(kind):
    config, arrays = kind.to_dict()
    again = map_from_dict(config, arrays)
    u = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(again(u), kind(u))
    np.testing.assert_array_equal(again.density(u), kind.density(u))


def test_isotonic_map_rejects_knots_that_do_not_increase():
    with pytest.raises(ValueError, match="increase strictly"):
        IsotonicMap(knots_u=[0, 0.5, 0.5, 1], knots_p=[0, 0.2, 0.6, 1])


# --------------------------------------------------------------------------- the wrapper
def test_identity_map_gives_back_the_original_predictive_exactly(posterior):
    X = np.zeros((4, 1))
    base = posterior.predictive(X)
    same = dataclasses.replace(posterior, recalibration=IdentityMap()).predictive(X)
    assert isinstance(same, RecalibratedPredictive)
    y = np.array([-3.0, -2.0, 0.5, 4.0])
    np.testing.assert_array_equal(same.cdf(y), base.cdf(y))
    np.testing.assert_array_equal(same.log_prob(y), base.log_prob(y))
    q = np.array([0.05, 0.5, 0.95])
    np.testing.assert_array_equal(same.quantiles(q), base.quantiles(q))
    grid = np.linspace(-5, 7, 50)
    np.testing.assert_array_equal(same.log_prob_grid(grid), base.log_prob_grid(grid))
    # Grid queries agree up to their (different) grids.
    np.testing.assert_allclose(same[:1].mean(grid_size=1024), base[:1].mean(), atol=1e-3)
    np.testing.assert_allclose(same[:1].variance(grid_size=1024), base[:1].variance(),
                               rtol=1e-3)
    np.testing.assert_allclose(same[:1].hdr(0.9, grid_size=512)[0], base[:1].hdr(0.9)[0],
                               atol=0.03)


def test_recalibrated_cdf_is_monotone_and_density_integrates_to_one(recalibrated):
    pred = recalibrated.predictive(np.zeros((2, 1)))
    grid = np.linspace(-12, 16, 40_001)
    cdf = np.asarray([pred[:1].cdf([value])[0, 0] for value in grid[::2000]])
    assert np.all(np.diff(cdf) >= 0)
    density = np.exp(pred.log_prob_grid(grid))
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=1), 1.0, atol=2e-3)
    # The density is the derivative of the cdf: integral up to y equals cdf(y).
    cut = 20_000
    assert np.trapezoid(density[0, :cut + 1], grid[:cut + 1]) == pytest.approx(
        pred[:1].cdf([grid[cut]])[0, 0], abs=2e-3)


def test_recalibrated_quantiles_invert_the_cdf(recalibrated):
    pred = recalibrated.predictive(np.zeros((3, 1)))
    q = np.array([0.01, 0.05, 0.3, 0.5, 0.9, 0.99])
    quantiles = pred.quantiles(q)  # (Q, M, 1)
    assert quantiles.shape == (6, 3, 1)
    for row in range(q.size):
        np.testing.assert_allclose(pred.cdf(quantiles[row])[:, 0], q[row], atol=2e-5)


def test_recalibrated_samples_follow_the_cdf(recalibrated):
    pred = recalibrated.predictive(np.zeros((1, 1)))
    samples = pred.sample(jax.random.key(0), 3000)
    assert samples.shape == (3000, 1, 1)
    values = np.sort(samples[:, 0, 0])
    tiled = pred[np.zeros(values.size, int)]
    model_cdf = tiled.cdf(values)[:, 0]
    empirical = np.arange(1, values.size + 1) / values.size
    statistic = np.max(np.maximum(empirical - model_cdf, model_cdf - empirical + 1 / values.size))
    assert statistic < 1.63 / np.sqrt(values.size)  # KS band at the 1 % level
    mean, variance = pred.mean()[0, 0], pred.variance()[0, 0]
    assert abs(values.mean() - mean) < 4 * np.sqrt(variance / values.size)
    assert values.var() == pytest.approx(variance, rel=0.1)


def test_recalibrated_hdr_and_modes_come_from_the_recalibrated_density(recalibrated):
    pred = recalibrated.predictive(np.zeros((1, 1)))
    [region] = pred.hdr(0.8)
    grid = np.linspace(-12, 16, 56_001)
    density = np.exp(pred.log_prob_grid(grid))[0]
    inside = np.zeros_like(grid, bool)
    for lower, upper in region:
        inside |= (grid >= lower) & (grid <= upper)
    assert np.trapezoid(np.where(inside, density, 0), grid) == pytest.approx(0.8, abs=5e-3)
    # Every point inside is at least as dense as every point outside (up to the grid).
    assert density[inside].min() >= density[~inside].max() * 0.98
    modes = pred.modes()[0][:, 0]
    best = grid[np.argmax(density)]
    assert modes[0] == pytest.approx(best, abs=0.05)


def test_miscalibrated_known_mixture_is_fixed(posterior):
    rng = np.random.default_rng(2)
    X_cal, y_cal = _mixture_data(rng, 2000)
    X_test, y_test = _mixture_data(rng, 20_000)
    before = posterior.predictive(X_test)
    cover_before = bm.metrics.coverage(before, y_test, 0.9)[0.9]
    assert cover_before < 0.85
    # The isotonic map follows any PIT distribution; beta calibration's three parameters
    # cannot follow this bimodal mixture's exactly (its KS stays near the uncalibrated
    # 0.07): it has to fix the 90 % coverage and raise the log score only.
    for method, ks_bound in (("isotonic", 0.025), ("beta", None)):
        after = posterior.recalibrate(X_cal, y_cal, method=method).predictive(X_test)
        # 2000 calibration PIT values: the 5 % / 95 % quantiles are known to about 0.005
        # each, so the recovered coverage is 0.9 within about 0.01 (band 0.02).
        assert bm.metrics.coverage(after, y_test, 0.9)[0.9] == pytest.approx(0.9, abs=0.02)
        assert bm.metrics.log_score(after, y_test) > bm.metrics.log_score(before, y_test)
        if ks_bound is not None:
            statistic, _ = bm.metrics.ks_uniform(bm.metrics.pit(after, y_test))
            assert statistic[0] < ks_bound


def test_metrics_and_plots_accept_a_recalibrated_predictive(posterior):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = _mixture_data(np.random.default_rng(3), 12)
    recalibrated = posterior.recalibrate(*_mixture_data(np.random.default_rng(8), 300),
                                         method="beta")
    pred = recalibrated.predictive(X)
    report = bm.metrics.calibration_report(pred, y)
    for name in ("pit_cvm_statistic", "interval_width", "hdr_size", "hdr_coverage", "crps"):
        assert name in report
    assert report["interval_width"][0.9][0] > report["interval_width"][0.5][0] > 0
    # CRPS by quadrature agrees with the closed form when R is the identity.
    same = dataclasses.replace(posterior, recalibration=IdentityMap()).predictive(X)
    np.testing.assert_allclose(bm.metrics.crps(same, y),
                               bm.metrics.crps(posterior.predictive(X), y), rtol=2e-3)
    bm.plotting.plot_mixture(pred, 0, show_components=False)
    bm.plotting.plot_pit(pred, y)
    bm.plotting.plot_coverage(pred, y)
    bm.plotting.plot_conditional_density(recalibrated, x_range=(-1, 1), y_range=(-6, 8),
                                         resolution=(4, 40))
    plt.close("all")
    with pytest.raises(ValueError, match="no longer a mixture"):
        pred.mixture_parameters()


def test_every_public_query_is_overridden():
    """A query added to PredictiveMixture later must not silently skip the map."""
    structural = {"num_inputs", "num_outputs", "num_draws", "num_components", "batch_shape",
                  "event_shape", "max_elements"}
    public = {name for name in dir(PredictiveMixture) if not name.startswith("_")}
    missing = sorted(name for name in public - structural
                     if getattr(RecalibratedPredictive, name) is getattr(PredictiveMixture, name))
    assert missing == []


# --------------------------------------------------------------------------- fitting forms
def test_cross_fitted_recalibration_refits_on_folds(posterior):
    X, y = _mixture_data(np.random.default_rng(4), 200)
    calls = []

    def refit(X_fold, y_fold, *, key):
        calls.append(X_fold.shape[0])
        return posterior  # a known predictive: the cross-fit PIT values are the held-out ones

    cross = posterior.recalibrate(X, y, method="isotonic", cv=5, key=jax.random.key(0),
                                  refit=refit)
    held = posterior.recalibrate(X, y, method="isotonic")
    assert calls == [160] * 5
    np.testing.assert_allclose(cross.recalibration.knots_u, held.recalibration.knots_u)
    assert cross.info["recalibration"] == {"method": "isotonic", "num_points": 200, "cv": 5}


@pytest.mark.slow  # four real MAP fits
def test_cross_fit_recovers_the_recorded_options():
    X, y = _mixture_data(np.random.default_rng(5), 60)
    X = X + np.random.default_rng(6).normal(size=X.shape)
    model = bm.MDN(num_components=2, hidden_sizes=(3,))
    post = model.fit(X, y, key=jax.random.key(0), num_steps=20)
    assert _default_fit_options(post)["num_steps"] == 20
    recalibrated = post.recalibrate(X, y, method="beta", cv=3, key=jax.random.key(1))
    assert isinstance(recalibrated.recalibration, BetaMap)
    assert isinstance(recalibrated.predictive(X[:3]), RecalibratedPredictive)


@pytest.mark.parametrize(("method", "recorded", "expected"), [
    ("nuts", "ensemble", "auto"),  # started from a fit that is not stored: NUTS's own start
    ("nuts", "auto", "auto"),
    ("nuts", None, None),  # a start from the prior is kept, not replaced by the default
    ("svi", "map", None),  # SVI accepts a fit or None, never a method name
    ("sgmcmc", "ensemble", None),
])
def test_refit_options_replace_a_start_that_cannot_be_reproduced(posterior, method, recorded,
                                                                 expected):
    fitted = dataclasses.replace(posterior, method=method,
                                 info={**posterior.info, "init": recorded})
    assert _default_fit_options(fitted)["init"] == expected


def test_save_and_load_keep_the_map(recalibrated, tmp_path):
    path = tmp_path / "fit.bmdn"
    recalibrated.save(path)
    loaded = bm.load(path)
    assert type(loaded.recalibration) is type(recalibrated.recalibration)
    X = np.zeros((3, 1))
    y = np.array([-2.0, 0.0, 3.5])
    np.testing.assert_array_equal(loaded.predictive(X).cdf(y), recalibrated.predictive(X).cdf(y))
    np.testing.assert_array_equal(loaded.predictive(X).log_prob(y),
                                  recalibrated.predictive(X).log_prob(y))
    assert loaded.info["recalibration"] == recalibrated.info["recalibration"]


# --------------------------------------------------------------------------- counts
def _poisson_posterior(rate: float) -> bm.Posterior:
    model = bm.MDN(num_components=1, hidden_sizes=(), family="poisson")
    draws = {"logits.kernel": np.zeros((1, 1, 1, 1), np.float32),
             "logits.bias": np.zeros((1, 1, 1), np.float32),
             "rate.kernel": np.zeros((1, 1, 1, 1), np.float32),
             "rate.bias": np.full((1, 1, 1), np.log(rate), np.float32)}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)


def test_counts_use_the_randomised_pit_and_stay_a_pmf():
    rng = np.random.default_rng(7)
    post = _poisson_posterior(4.0)
    y = rng.poisson(6.0, 600).astype(float)
    X = np.zeros((600, 1))
    with pytest.raises(TypeError, match="randomises its PIT"):
        post.recalibrate(X, y)
    recalibrated = post.recalibrate(X, y, method="beta", key=jax.random.key(0))
    pred = recalibrated.predictive(np.zeros((1, 1)))
    integers = np.arange(0, 60.0)
    mass = np.exp(pred.log_prob_grid(integers))[0]
    assert mass.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.isneginf(pred.log_prob_grid([2.5])[0, 0])
    for q in (0.1, 0.5, 0.9):
        k = pred.quantiles(q)[0, 0, 0]
        assert k == np.floor(k)
        assert pred.cdf([k])[0, 0] >= q > pred.cdf([k - 1])[0, 0]
    samples = pred.sample(jax.random.key(1), 2000)[:, 0, 0]
    assert np.all(samples == np.floor(samples))
    # Recalibrated toward Poisson(6): the mean moves from 4 to about 6.
    assert pred.mean()[0, 0] == pytest.approx(6.0, abs=0.4)
    assert samples.mean() == pytest.approx(pred.mean()[0, 0], abs=0.25)


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def no_kernels(monkeypatch):
    """Fail on any predictive kernel run: errors must come before compilation."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran before the input was checked")

    monkeypatch.setattr(PredictiveMixture, "_run", refuse)


@pytest.mark.parametrize(("X", "y", "kwargs", "match"), [
    (np.zeros(30), np.zeros(30), {}, "2-D array"),
    (np.zeros((30, 1)), np.full(30, np.nan), {}, "NaN|finite"),
    (np.zeros((30, 1)), np.zeros(29), {}, "same number of rows"),
    (np.zeros((10, 1)), np.zeros(10), {}, "at least 20 calibration rows"),
    (np.zeros((5, 1)), np.zeros(5), {"method": "beta"}, "at least 10 calibration rows"),
    (np.zeros((12, 1)), np.zeros(12), {"method": "beta", "cv": 10, "key": jax.random.key(0)},
     "at least 20 calibration rows"),
    (np.zeros((30, 1)), np.zeros(30), {"cv": 1, "key": jax.random.key(0)}, "`cv` must be"),
    (np.zeros((30, 1)), np.zeros(30), {"identity_weight": 1.5}, "identity_weight"),
    (np.zeros((30, 1)), np.zeros(30), {"method": "platt"}, "method"),
    (np.zeros((30, 2)), np.zeros(30), {}, "features|columns"),
    (np.r_[np.zeros((29, 1)), [[np.nan]]], np.zeros(30), {}, "NaN|finite"),
    (np.zeros((30, 1)), np.zeros((30, 2)), {}, "output|columns"),
    (np.zeros((30, 1)), np.zeros(30), {"cv": "five", "key": jax.random.key(0)},
     "`cv` must be"),
])
def test_bad_input_is_refused_before_compilation(posterior, no_kernels, X, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        posterior.recalibrate(X, y, **kwargs)


def test_cross_fit_needs_a_key(posterior, no_kernels):
    with pytest.raises(TypeError, match="needs `key`"):
        posterior.recalibrate(np.zeros((30, 1)), np.zeros(30), cv=5)


def test_two_outputs_get_a_clear_error(no_kernels):
    model = bm.MDN(num_components=1, hidden_sizes=())
    draws = {f"{head}.{part}": np.zeros((1, 1, *shape), np.float32)
             for head in ("logits", "loc", "scale")
             for part, shape in (("kernel", (1, 2 if head != "logits" else 1)),
                                 ("bias", (2 if head != "logits" else 1,)))}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(2), np.ones(2))
    post = bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)
    with pytest.raises(ValueError, match=r"one output \(D = 1\); this model has D = 2\. "
                                         r"Maps of each output's marginal cdf would not "
                                         r"define the joint density"):
        post.recalibrate(np.zeros((30, 1)), np.zeros((30, 2)))
