"""Mixture identities of PredictiveMixture on posteriors with a closed-form predictive."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import exact_posterior
from scipy import stats
from scipy.special import logsumexp

import bayes_mdn as bm
from bayes_mdn.scaling import Standardizer

X = np.linspace(-1, 1, 7)[:, None]


def random_posterior(num_draws: int, num_components: int, *, num_outputs: int = 1,
                     hidden_sizes: tuple[int, ...] = (4,), seed: int = 0) -> bm.Posterior:
    """Random weights, so every draw and every input has its own mixture; y is standardised
    with a non-trivial shift and scale, so results are checked in original units."""
    rng = np.random.default_rng(seed)
    model = bm.MDN(num_components=num_components, hidden_sizes=hidden_sizes)
    draws = {site.name: (0.8 * rng.normal(size=(1, num_draws, *site.shape))).astype(np.float32)
             for site in model.sites(2, num_outputs)}
    standardizer = Standardizer(np.zeros(2), np.ones(2), np.full(num_outputs, 1.5),
                                np.full(num_outputs, 2.0))
    return bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)


def reference(logits, locs, scales):
    """Closed-form mixture over draws: flat log-weights, locs and scales."""
    logits, locs, scales = (np.atleast_2d(np.asarray(a, np.float64)) for a in
                            (logits, locs, scales))
    log_w = (logits - logsumexp(logits, axis=1, keepdims=True)).ravel() - np.log(len(logits))
    return log_w, locs.ravel(), scales.ravel()


@pytest.fixture(params=["one_draw", "two_draws"])
def case(request, bimodal_posterior, two_draw_posterior):
    if request.param == "one_draw":
        return bimodal_posterior, reference(np.log([[0.3, 0.7]]), [[-2.0, 3.0]], [[0.5, 1.0]])
    return two_draw_posterior, reference(np.log([[0.5, 0.5], [0.2, 0.8]]),
                                         [[-1.0, 1.0], [0.0, 4.0]], [[1.0, 0.5], [2.0, 0.3]])


def test_log_prob_matches_closed_form(case):
    posterior, (log_w, loc, scale) = case
    y = np.linspace(-4, 6, X.shape[0])[:, None]
    expected = logsumexp(log_w + stats.norm.logpdf(y, loc, scale), axis=1)
    np.testing.assert_allclose(posterior.predictive(X).log_prob(y), expected, atol=2e-5)


def test_density_integrates_to_one(case):
    posterior, _ = case
    grid = np.linspace(-15, 15, 6001)
    density = np.exp(posterior.predictive(X).log_prob_grid(grid))
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=1), 1.0, atol=1e-4)


def test_cdf_is_integral_of_density_and_monotone(case):
    posterior, (log_w, loc, scale) = case
    pred = posterior.predictive(X[:1])
    points = np.linspace(-6, 8, 15)
    cdf = np.array([pred.cdf(np.array([[p]]))[0, 0] for p in points])
    expected = np.sum(np.exp(log_w) * stats.norm.cdf(points[:, None], loc, scale), axis=1)
    np.testing.assert_allclose(cdf, expected, atol=1e-5)
    assert np.all(np.diff(cdf) >= 0)


def test_cdf_of_quantiles_is_identity(case):
    posterior, _ = case
    pred = posterior.predictive(X)
    levels = np.array([0.001, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999])
    quantiles = pred.quantiles(levels)  # (Q, M, D)
    assert quantiles.shape == (levels.size, X.shape[0], 1)
    assert np.all(np.diff(quantiles, axis=0) > 0), "quantiles must increase with q"
    for i, level in enumerate(levels):
        np.testing.assert_allclose(pred.cdf(quantiles[i])[:, 0], level, atol=2e-5)


def test_moments_match_closed_form_and_samples(case):
    posterior, (log_w, loc, scale) = case
    pred = posterior.predictive(X)
    weights = np.exp(log_w)
    mean = np.sum(weights * loc)
    variance = np.sum(weights * (scale**2 + loc**2)) - mean**2
    np.testing.assert_allclose(pred.mean(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.variance(), variance, rtol=1e-5)
    samples = pred.sample(jax.random.key(0), num_samples=40_000)
    assert samples.shape == (40_000, X.shape[0], 1)
    standard_error = np.sqrt(variance / samples.shape[0])
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=5 * standard_error)
    # Sample variance: relative standard error about sqrt(2 / n) for near-normal data; the
    # mixture's kurtosis makes it larger, so allow 5 %.
    np.testing.assert_allclose(samples.var(axis=0), variance, rtol=0.05)


def test_samples_follow_the_mixture_cdf(case):
    posterior, (log_w, loc, scale) = case
    samples = posterior.predictive(X[:1]).sample(jax.random.key(1), num_samples=5000)[:, 0, 0]
    def mixture_cdf(y):
        return np.sum(np.exp(log_w) * stats.norm.cdf(np.asarray(y)[..., None], loc, scale),
                      axis=-1)
    assert stats.kstest(samples, mixture_cdf).pvalue > 0.01


def test_sampling_is_deterministic_per_key(bimodal_posterior):
    pred = bimodal_posterior.predictive(X)
    first = pred.sample(jax.random.key(3), num_samples=10)
    np.testing.assert_array_equal(first, pred.sample(jax.random.key(3), num_samples=10))
    assert not np.array_equal(first, pred.sample(jax.random.key(4), num_samples=10))


def test_modes_of_a_bimodal_mixture(bimodal_posterior):
    modes = bimodal_posterior.predictive(X[:2]).modes()
    assert len(modes) == 2
    # Well-separated components: modes sit at the locations (shifted by the other component's
    # negligible slope), highest density first: 0.7 N(3, 1) peaks at 0.28, 0.3 N(-2, .5) at 0.24.
    np.testing.assert_allclose(modes[0][:, 0], [3.0, -2.0], atol=2e-3)
    assert modes[0].shape == (2, 1)


def test_modes_of_a_unimodal_mixture():
    posterior = exact_posterior(np.log([[0.5, 0.5]]), [[0.0, 0.5]], [[1.0, 1.0]])
    modes = posterior.predictive(X[:1]).modes()
    np.testing.assert_allclose(modes[0][:, 0], [0.25], atol=2e-3)


@pytest.mark.parametrize("max_elements", [1, 7, 64, 2**22])
def test_chunking_does_not_change_results(bimodal_posterior, max_elements):
    X_many = np.linspace(-3, 3, 37)[:, None]
    y = np.linspace(-4, 5, 37)[:, None]
    reference_pred = bimodal_posterior.predictive(X_many)
    pred = bimodal_posterior.predictive(X_many, max_elements=max_elements)
    np.testing.assert_allclose(pred.log_prob(y), reference_pred.log_prob(y), rtol=1e-6)
    np.testing.assert_allclose(pred.quantiles([0.2, 0.8]), reference_pred.quantiles([0.2, 0.8]),
                               rtol=1e-6)


def test_indexing_keeps_batch_axis(two_draw_posterior):
    pred = two_draw_posterior.predictive(X)
    assert pred[2].batch_shape == (1,)
    assert pred[1:4].num_inputs == 3
    log_w, params = pred[[0, 1]].mixture_parameters()
    assert log_w.shape == (2, 4) and params["loc"].shape == (2, 4, 1)
    np.testing.assert_allclose(logsumexp(log_w, axis=1), 0.0, atol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        pred[len(X)]


def test_predictive_shapes_and_repr(two_draw_posterior):
    pred = two_draw_posterior.predictive(X)
    assert pred.batch_shape == (7,) and pred.event_shape == (1,)
    assert pred.num_draws == 2 and pred.num_components == 2
    assert "draws=2" in repr(pred)
    assert pred.log_prob(np.zeros(7)).shape == (7,)
    assert pred.cdf(np.zeros((7, 1))).shape == (7, 1)
    assert pred.quantiles(0.5).shape == (1, 7, 1)


def test_bad_queries_are_rejected(bimodal_posterior):
    pred = bimodal_posterior.predictive(X)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        pred.quantiles([0.0, 0.5])
    with pytest.raises(ValueError, match="one row per input"):
        pred.log_prob(np.zeros(3))
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        pred.sample(0, num_samples=3)
    with pytest.raises(ValueError, match="at least 1"):
        pred.sample(jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="features"):
        bimodal_posterior.predictive(np.zeros((3, 2)))


def test_variance_decomposition(two_draw_posterior, bimodal_posterior):
    pred = two_draw_posterior.predictive(X)
    aleatoric, epistemic = pred.variance_decomposition()
    # Per draw: mean and variance of its own mixture; then the law of total variance.
    means, variances = [], []
    for logits, loc, scale in ((np.log([0.5, 0.5]), [-1.0, 1.0], [1.0, 0.5]),
                               (np.log([0.2, 0.8]), [0.0, 4.0], [2.0, 0.3])):
        w, loc, scale = np.exp(logits), np.array(loc), np.array(scale)
        mean = np.sum(w * loc)
        means.append(mean)
        variances.append(np.sum(w * (scale**2 + (loc - mean) ** 2)))
    np.testing.assert_allclose(aleatoric, np.mean(variances), rtol=1e-5)
    np.testing.assert_allclose(epistemic, np.var(means), rtol=1e-5)
    np.testing.assert_allclose(aleatoric + epistemic, pred.variance(), rtol=1e-5)
    # One draw (MAP): no epistemic part.
    aleatoric, epistemic = bimodal_posterior.predictive(X).variance_decomposition()
    np.testing.assert_allclose(epistemic, 0.0, atol=1e-6)
    np.testing.assert_allclose(aleatoric, bimodal_posterior.predictive(X).variance(), rtol=1e-6)


@pytest.mark.parametrize("max_elements", [2**22, 8])
def test_variance_decomposition_identity_with_many_draws(max_elements):
    # Random weights: every draw and input differ; D = 2; 8 terms splits the 9 draws.
    posterior = random_posterior(9, 3, num_outputs=2, hidden_sizes=(3,))
    pred = posterior.predictive(np.random.default_rng(2).normal(size=(6, 2)),
                                max_elements=max_elements)
    aleatoric, epistemic = pred.variance_decomposition()
    assert aleatoric.shape == epistemic.shape == (6, 2)
    assert np.all(aleatoric > 0) and np.all(epistemic >= 0)
    np.testing.assert_allclose(aleatoric + epistemic, pred.variance(), rtol=1e-5)
    # Closed form from the flattened mixture: per-draw means and variances, then the law of
    # total variance over draws.
    log_w, params = pred.mixture_parameters()  # (M, S*K), (M, S*K, D)
    w = np.exp(log_w).reshape(6, 9, 3, 1) * 9  # weights within each draw
    loc, scale = (params[name].reshape(6, 9, 3, 2).astype(np.float64) for name in
                  ("loc", "scale"))
    draw_mean = np.sum(w * loc, axis=2)
    draw_var = np.sum(w * (scale**2 + (loc - draw_mean[:, :, None]) ** 2), axis=2)
    np.testing.assert_allclose(aleatoric, draw_var.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(epistemic, draw_mean.var(axis=1), rtol=1e-4, atol=1e-6)


def test_every_query_follows_the_units_of_y_beyond_float32():
    # The same network under an identity Standardizer and under extreme ones (an offset
    # far beyond float32 resolution; scales whose squares overflow or underflow float32).
    # Kernels work in standardised units and the host converts in float64, so each query
    # maps exactly: locations by a y + b, variances by a**2, log-densities by -log a,
    # entropies by +log a, cdf unchanged.
    posterior = random_posterior(3, 2, hidden_sizes=(3,), seed=5)
    identity = Standardizer(np.zeros(2), np.ones(2), np.zeros(1), np.ones(1))
    inputs = np.random.default_rng(1).normal(size=(5, 2))
    base = dataclasses.replace(posterior.predictive(inputs), standardizer=identity)
    y = np.linspace(-2.0, 2.0, inputs.shape[0])[:, None]
    levels = [0.05, 0.5, 0.95]
    key = jax.random.key(0)
    reference = {
        "mean": base.mean(), "variance": base.variance(), "quantiles": base.quantiles(levels),
        "sample": base.sample(key, num_samples=5), "log_prob": base.log_prob(y),
        "cdf": base.cdf(y), "entropy": base.entropy_decomposition(),
        "modes": base.modes(), "hdr": base.hdr(0.9), "params": base.mixture_parameters()[1],
        "crps": bm.metrics.crps(base, y, pointwise=True),
    }
    for shift, scale in [(1e8, 2.0), (0.0, 1e20), (-3e-20, 1e-20)]:
        units = Standardizer(np.zeros(2), np.ones(2), np.array([shift]), np.array([scale]))
        pred = dataclasses.replace(base, standardizer=units)

        def back(value, shift=shift, scale=scale):  # original units -> standardised
            return (np.asarray(value, np.float64) - shift) / scale

        close = {"rtol": 1e-6, "atol": 1e-6}
        locations = {"mean": pred.mean(), "quantiles": pred.quantiles(levels),
                     "sample": pred.sample(key, num_samples=5)}
        for name, value in locations.items():
            assert value.dtype == np.float64, name
            np.testing.assert_allclose(back(value), reference[name], **close, err_msg=name)
        np.testing.assert_allclose(pred.variance() / scale**2, reference["variance"], **close)
        np.testing.assert_allclose(pred.log_prob(scale * y + shift) + np.log(scale),
                                   reference["log_prob"], **close)
        np.testing.assert_allclose(pred.cdf(scale * y + shift), reference["cdf"], **close)
        total, expected, information = pred.entropy_decomposition()
        np.testing.assert_allclose(total - np.log(scale), reference["entropy"][0], **close)
        np.testing.assert_allclose(expected - np.log(scale), reference["entropy"][1], **close)
        np.testing.assert_allclose(information, reference["entropy"][2], **close)
        for found, expected_modes in zip(pred.modes(), reference["modes"], strict=True):
            np.testing.assert_allclose(back(found), expected_modes, **close)
        for found, expected_region in zip(pred.hdr(0.9), reference["hdr"], strict=True):
            np.testing.assert_allclose(back(found), expected_region, **close)
        np.testing.assert_allclose(bm.metrics.crps(pred, scale * y + shift, pointwise=True)
                                   / scale, reference["crps"], **close)
        params = pred.mixture_parameters()[1]
        np.testing.assert_allclose(back(params["loc"]), reference["params"]["loc"], **close)
        np.testing.assert_allclose(params["scale"] / scale, reference["params"]["scale"],
                                   **close)
