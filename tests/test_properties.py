"""Property-based tests (hypothesis) of the predictive mixture maths.

Every example builds a Posterior whose predictive is a known mixture (``exact_posterior``:
mixing logits, locations and scales per draw, the same at every input) and checks identities
that must hold for *any* parameters, over wide ranges: extreme logits (weights down to
e^-60 of the largest), scales from 1e-4 to 1e3, locations up to 1e3 in size.

Shapes are drawn from small fixed sets (K in {1, 3}, S in {1, 2}) so that the compiled
kernels are reused across examples; the module runs in well under 20 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_posterior
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: Shared hypothesis settings: modest example counts, no deadline (first calls compile).
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MIN_SCALE = 1e-6
NUM_INPUTS = 8


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=32)


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats spread evenly in log space (tiny and huge scales are equally likely)."""
    exponents = st.floats(float(np.log10(low)), float(np.log10(high)))
    return exponents.map(lambda e: float(np.float32(10.0 ** e)))


@st.composite
def mixtures(draw, *, logit=(-60.0, 60.0), loc=(-1e3, 1e3), scale=(1e-4, 1e3)):
    """(logits, locs, scales), each (S, K) float32, with S in {1, 2} and K in {1, 3}."""
    num_draws = draw(st.sampled_from([1, 2]))
    num_components = draw(st.sampled_from([1, 3]))
    size = num_draws * num_components

    def block(strategy):
        values = draw(st.lists(strategy, min_size=size, max_size=size))
        return np.asarray(values, np.float32).reshape(num_draws, num_components)

    logits = block(_floats(*logit))
    locs = block(_floats(*loc))
    scales = block(_log_uniform(*scale))
    return logits, locs, scales


def _build(logits, locs, scales):
    posterior = exact_posterior(logits, locs, scales, min_scale=MIN_SCALE)
    return posterior.predictive(np.zeros((NUM_INPUTS, 1)))


def _effective(predictive):
    """The (log-weights, locs, scales) the model really holds after the float32 round trip
    through the scale head (softplus(inverse_softplus(s)) + floor is s only to rounding)."""
    log_weights, params = predictive.mixture_parameters()
    return (np.asarray(log_weights[0], np.float64), np.asarray(params["loc"][0, :, 0],
                                                               np.float64),
            np.asarray(params["scale"][0, :, 0], np.float64))


def _reference_log_prob(log_weights, locs, scales, y):
    return logsumexp(log_weights + stats.norm.logpdf(y[:, None], locs, scales), axis=1)


# --------------------------------------------------------------------------- log_prob
@SETTINGS
@given(mixture=mixtures(), targets=st.lists(_floats(-1e4, 1e4), min_size=NUM_INPUTS,
                                           max_size=NUM_INPUTS))
def test_log_prob_finite_and_exact_for_finite_inputs(mixture, targets):
    predictive = _build(*mixture)
    y = np.asarray(targets, np.float32)
    log_prob = predictive.log_prob(y)
    assert log_prob.shape == (NUM_INPUTS,)
    assert np.all(np.isfinite(log_prob)), log_prob
    expected = _reference_log_prob(*_effective(predictive), y.astype(np.float64))
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4, atol=1e-3)


@SETTINGS
@given(mixture=mixtures(), targets=st.lists(_floats(-1e4, 1e4), min_size=NUM_INPUTS,
                                           max_size=NUM_INPUTS))
def test_density_and_cdf_in_range(mixture, targets):
    predictive = _build(*mixture)
    y = np.asarray(targets, np.float32)
    assert np.all(np.exp(predictive.log_prob(y)) >= 0)
    cdf = predictive.cdf(y)
    assert cdf.shape == (NUM_INPUTS, 1)
    assert np.all((cdf >= 0) & (cdf <= 1)), cdf


# --------------------------------------------------------------------------- normalisation
@SETTINGS
@given(mixture=mixtures(loc=(-100.0, 100.0), scale=(1e-3, 1e2)))
def test_density_integrates_to_one(mixture):
    predictive = _build(*mixture)[:1]
    _, locs, scales = _effective(predictive)
    # A grid that resolves every component: 801 points over +-12 scales around each.
    pieces = [loc + scale * np.linspace(-12.0, 12.0, 801) for loc, scale in zip(locs, scales,
                                                                               strict=True)]
    grid = np.unique(np.concatenate(pieces))
    density = np.exp(predictive.log_prob_grid(grid)[0].astype(np.float64))
    assert np.all(density >= 0)
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=2e-3)


# --------------------------------------------------------------------------- cdf
@SETTINGS
@given(mixture=mixtures(), low=_floats(-2e3, 2e3), width=_log_uniform(1e-3, 4e3))
def test_cdf_is_monotone(mixture, low, width):
    predictive = _build(*mixture)
    y = np.sort(np.linspace(low, low + width, NUM_INPUTS).astype(np.float32))
    cdf = predictive.cdf(y)[:, 0]
    assert np.all((cdf >= 0) & (cdf <= 1))
    assert np.all(np.diff(cdf) >= 0), (y, cdf)


@SETTINGS
@given(mixture=mixtures())
def test_cdf_limits(mixture):
    predictive = _build(*mixture)
    _, locs, scales = _effective(predictive)
    far = float(np.max(np.abs(locs)) + 50.0 * np.max(scales))
    y = np.where(np.arange(NUM_INPUTS) % 2 == 0, -far, far).astype(np.float32)
    cdf = predictive.cdf(y)[:, 0]
    np.testing.assert_allclose(cdf, (np.arange(NUM_INPUTS) % 2).astype(np.float32), atol=1e-6)


# --------------------------------------------------------------------------- quantiles
LEVELS = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])


@SETTINGS
@given(mixture=mixtures(logit=(-30.0, 30.0), loc=(-100.0, 100.0), scale=(1e-2, 1e2)))
def test_quantiles_invert_the_cdf(mixture):
    predictive = _build(*mixture)[:1]
    quantiles = predictive.quantiles(LEVELS)  # (Q, 1, 1)
    assert np.all(np.isfinite(quantiles))
    assert np.all(np.diff(quantiles[:, 0, 0]) >= 0)
    _, _, scales = _effective(predictive)
    # Bisection stops at float32 resolution of y, where a narrow component's cdf is steep:
    # compare in q up to the cdf's change over a few ulps of y.
    ulp = np.spacing(np.abs(quantiles[:, 0, 0]).astype(np.float32)).astype(np.float64)
    slack = 2e-5 + 8 * ulp / (np.sqrt(2 * np.pi) * scales.min())
    cdf = np.array([predictive.cdf(quantiles[i])[0, 0] for i in range(LEVELS.size)])
    assert np.all(np.abs(cdf - LEVELS) <= slack), (cdf, LEVELS, slack)


@SETTINGS
@given(mixture=mixtures())
def test_quantiles_are_a_generalised_inverse_over_wide_ranges(mixture):
    """For any parameters: F(Q(q) + d) >= q >= F(Q(q) - d) for a small step d."""
    predictive = _build(*mixture)[:1]
    quantiles = predictive.quantiles(LEVELS)[:, 0, 0].astype(np.float64)
    assert np.all(np.isfinite(quantiles))
    assert np.all(np.diff(quantiles) >= 0)
    step = 4 * np.spacing(np.abs(quantiles).astype(np.float32)).astype(np.float64) + 1e-6
    above = np.array([predictive.cdf(np.array([q + d]))[0, 0]
                      for q, d in zip(quantiles, step, strict=True)])
    below = np.array([predictive.cdf(np.array([q - d]))[0, 0]
                      for q, d in zip(quantiles, step, strict=True)])
    assert np.all(above >= LEVELS - 1e-5), (above, LEVELS)
    assert np.all(below <= LEVELS + 1e-5), (below, LEVELS)
