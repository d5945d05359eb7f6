"""Highest-density regions and the entropy decomposition of PredictiveMixture."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import exact_posterior
from scipy import integrate, stats

import bayes_mdn as bm
from bayes_mdn.families import inverse_softplus
from bayes_mdn.scaling import Standardizer

X = np.linspace(-1, 1, 3)[:, None]


def mixture_pdf(y, weights, locs, scales):
    return np.sum(np.asarray(weights) * stats.norm.pdf(np.asarray(y)[..., None], locs, scales),
                  axis=-1)


def quad_entropy(weights, locs, scales) -> float:
    """-int p log p of a 1-D Normal mixture by adaptive quadrature (the reference)."""
    def integrand(y):
        p = mixture_pdf(y, weights, locs, scales)
        return -p * np.log(p) if p > 0 else 0.0

    locs, scales = np.asarray(locs), np.asarray(scales)
    lower, upper = np.min(locs - 12 * scales), np.max(locs + 12 * scales)
    value, _ = integrate.quad(integrand, lower, upper, points=sorted(locs), limit=500,
                              epsabs=1e-10)
    return value


def two_output_posterior(locs, scales) -> bm.Posterior:
    """One draw of one diagonal Normal with D = 2: loc `locs` (2,), scale `scales` (2,)."""
    model = bm.MDN(num_components=1, hidden_sizes=(), family=bm.families.Normal(min_scale=0.0))
    biases = {"logits": np.zeros(1), "loc": np.asarray(locs),
              "scale": inverse_softplus(np.asarray(scales))}
    draws = {}
    for site in model.sites(1, 2):
        head, kind = site.name.split(".")
        value = biases[head] if kind == "bias" else np.zeros(site.shape)
        draws[site.name] = value.astype(np.float32)[None, None]
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(2), np.ones(2))
    return bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)


# --------------------------------------------------------------------------- hdr
@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_hdr_of_a_bimodal_mixture_is_two_intervals(bimodal_posterior, level):
    weights, locs, scales = [0.3, 0.7], [-2.0, 3.0], [0.5, 1.0]
    regions = bimodal_posterior.predictive(X).hdr(level)
    assert len(regions) == X.shape[0]
    for region in regions:
        assert region.shape == (2, 2)
        assert np.all(np.diff(region.ravel()) > 0), "disjoint intervals in increasing order"
        mass = np.sum(weights * (stats.norm.cdf(region[:, 1:], locs, scales)
                                 - stats.norm.cdf(region[:, :1], locs, scales)))
        assert abs(mass - level) < 2e-3
        # Every end of the region lies on the same density contour.
        density = mixture_pdf(region.ravel(), weights, locs, scales)
        np.testing.assert_allclose(density, density.mean(), rtol=1e-3)


def test_hdr_of_a_normal_is_the_central_interval():
    posterior = exact_posterior([[0.0]], [[1.5]], [[0.7]])
    for level in (0.5, 0.9, 0.999):
        [region] = posterior.predictive(X[:1]).hdr(level)
        half_width = stats.norm.ppf(0.5 + level / 2) * 0.7
        np.testing.assert_allclose(region, [[1.5 - half_width, 1.5 + half_width]], rtol=1e-3)


def test_hdr_regions_are_nested_and_grow_with_level(two_draw_posterior):
    pred = two_draw_posterior.predictive(X[:1])
    inner, outer = pred.hdr(0.5)[0], pred.hdr(0.95)[0]
    assert outer[0, 0] < inner[0, 0] and inner[-1, 1] < outer[-1, 1]
    for lower, upper in inner:  # each inner interval lies inside one outer interval
        assert np.any((outer[:, 0] <= lower) & (upper <= outer[:, 1]))


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_hdr_rejects_levels_outside_the_unit_interval(bimodal_posterior, level):
    with pytest.raises(ValueError, match=r"`level` must lie strictly between 0 and 1"):
        bimodal_posterior.predictive(X).hdr(level)


def test_hdr_rejects_bad_arguments(bimodal_posterior):
    pred = bimodal_posterior.predictive(X)
    with pytest.raises(TypeError, match=r"`level` must be a number strictly between 0 and 1"):
        pred.hdr("0.9")
    with pytest.raises(TypeError, match=r"`level` must be a number"):
        pred.hdr([0.5, 0.9])
    with pytest.raises(ValueError, match=r"`grid_size` must be at least 16; got 8\."):
        pred.hdr(0.9, grid_size=8)
    with pytest.raises(ValueError, match=r"hdr\(\) is defined for one output \(D = 1\); this "
                                         r"model has D = 2\. Use quantiles\(\)"):
        two_output_posterior([0.0, 1.0], [1.0, 2.0]).predictive(X).hdr(0.9)


# --------------------------------------------------------------------------- entropy
def test_entropy_of_one_normal_is_closed_form():
    sigma = 0.7
    total, expected, information = exact_posterior([[0.0]], [[1.5]], [[sigma]]).predictive(
        X).entropy_decomposition()
    closed_form = 0.5 * np.log(2 * np.pi * np.e * sigma**2)
    np.testing.assert_allclose(total, closed_form, rtol=1e-3)
    np.testing.assert_allclose(expected, closed_form, rtol=1e-3)
    np.testing.assert_allclose(information, 0.0, atol=1e-6)


def test_one_draw_has_no_mutual_information(bimodal_posterior):
    total, expected, information = bimodal_posterior.predictive(X).entropy_decomposition()
    reference = quad_entropy([0.3, 0.7], [-2.0, 3.0], [0.5, 1.0])
    np.testing.assert_allclose(total, reference, atol=1e-3)
    np.testing.assert_allclose(expected, reference, atol=1e-3)
    np.testing.assert_allclose(information, 0.0, atol=1e-5)


DRAW_1 = ([0.5, 0.5], [-1.0, 1.0], [1.0, 0.5])
DRAW_2 = ([0.2, 0.8], [0.0, 4.0], [2.0, 0.3])


def test_entropy_decomposition_of_two_draws_matches_quadrature(two_draw_posterior):
    total, expected, information = two_draw_posterior.predictive(X).entropy_decomposition()
    pooled = ([w / 2 for w in DRAW_1[0] + DRAW_2[0]], DRAW_1[1] + DRAW_2[1],
              DRAW_1[2] + DRAW_2[2])
    reference_total = quad_entropy(*pooled)
    reference_expected = 0.5 * (quad_entropy(*DRAW_1) + quad_entropy(*DRAW_2))
    assert np.all(np.isfinite(total)) and np.all(np.isfinite(expected))
    np.testing.assert_allclose(total, reference_total, atol=1e-3)
    np.testing.assert_allclose(expected, reference_expected, atol=1e-3)
    np.testing.assert_allclose(information, reference_total - reference_expected, atol=1e-3)
    np.testing.assert_allclose(total, expected + information, atol=1e-6)
    assert np.all(information > 0.1)


def test_monte_carlo_entropy_agrees_with_quadrature(two_draw_posterior):
    pred = two_draw_posterior.predictive(X[:1])
    quadrature = pred.entropy_decomposition()
    key = jax.random.key(0)
    estimate = pred.entropy_decomposition(key=key, method="monte_carlo", num_samples=20_000)
    # Standard errors: about 1.3 / sqrt(n) for the entropies, 0.6 / sqrt(n) for the
    # information (the same samples are used for both terms); 4 standard errors here.
    for value, reference, tolerance in zip(estimate, quadrature, (0.04, 0.04, 0.02),
                                           strict=True):
        np.testing.assert_allclose(value, reference, atol=tolerance)
    np.testing.assert_allclose(estimate[0], estimate[1] + estimate[2], atol=1e-6)
    again = pred.entropy_decomposition(key=key, method="monte_carlo", num_samples=20_000)
    for first, second in zip(estimate, again, strict=True):
        np.testing.assert_array_equal(first, second)


def test_monte_carlo_entropy_of_two_outputs():
    scales = np.array([0.5, 2.0])
    pred = two_output_posterior([0.0, 1.0], scales).predictive(X)
    total, expected, information = pred.entropy_decomposition(key=jax.random.key(1),
                                                              num_samples=20_000)
    closed_form = np.sum(0.5 * np.log(2 * np.pi * np.e * scales**2))
    # -log p(y) of a D-dim Normal has variance D / 2: standard error 0.007 here.
    np.testing.assert_allclose(total, closed_form, atol=0.035)
    np.testing.assert_array_equal(total, expected)  # one draw: the same estimate
    np.testing.assert_array_equal(information, 0.0)


def test_entropy_decomposition_rejects_bad_arguments(bimodal_posterior):
    two_outputs = two_output_posterior([0.0, 1.0], [1.0, 2.0]).predictive(X)
    with pytest.raises(TypeError, match=r"estimates by Monte Carlo here \(D = 2\) and needs "
                                        r"`key`, e\.g\. key=jax\.random\.key\(0\)\."):
        two_outputs.entropy_decomposition()
    with pytest.raises(TypeError, match=r"jax\.random\.key\(3\)"):
        two_outputs.entropy_decomposition(key=3)
    with pytest.raises(ValueError, match=r"method='quadrature' is defined for one output"):
        two_outputs.entropy_decomposition(method="quadrature")
    pred = bimodal_posterior.predictive(X)
    with pytest.raises(ValueError, match=r"Unknown method 'simpson'"):
        pred.entropy_decomposition(method="simpson")
    with pytest.raises(ValueError, match=r"`grid_size` must be at least 16; got 4\."):
        pred.entropy_decomposition(grid_size=4)
    with pytest.raises(ValueError, match=r"`num_samples` must be at least 2; got 1\."):
        pred.entropy_decomposition(key=jax.random.key(0), method="monte_carlo", num_samples=1)


def test_coarse_grids_are_reported():
    # A needle next to a very wide component: 1024 points over the wide one's range cannot
    # resolve the needle, and both grid queries say so.
    pred = exact_posterior(np.log([[0.5, 0.5]]), [[0.0, 0.0]], [[0.01, 50.0]]).predictive(X[:1])
    with pytest.warns(UserWarning, match=r"entropy_decomposition\(\): a 1024-point grid is too "
                                         r"coarse .* at 1 of 1 inputs.*Pass grid_size="):
        total, _, _ = pred.entropy_decomposition()
    assert np.all(np.isfinite(total))
    with pytest.warns(UserWarning, match=r"hdr\(\): a 2048-point grid is too coarse"):
        pred.hdr(0.5)
