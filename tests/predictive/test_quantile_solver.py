"""The fast quantile solve (issue 19): surrogate mixtures of a few draws give each level a
first estimate, the full mixture's cdf brackets the root near it and Chandrupatla's method
finishes (:func:`~bayes_mdn.predictive._quantiles._solve_from_surrogates`); the root-finder
pieces of :mod:`bayes_mdn.predictive._roots` on functions with known roots."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import random_posterior
from jax.scipy.special import ndtr

import bayes_mdn as bm
from bayes_mdn.predictive import _quantiles, _roots
from bayes_mdn.predictive._roots import X_TOLERANCE, solve_from_guess, solve_increasing
from bayes_mdn.scaling import Standardizer

LEVELS = np.array([0.01, 0.05, 0.3, 0.5, 0.77, 0.95, 0.995])


def _bracket_solve(pred, levels):
    """The same quantiles from the component-quantile brackets (no surrogates)."""
    previous = _quantiles.SURROGATE_MIN_DRAWS
    _quantiles.SURROGATE_MIN_DRAWS = 10**9
    try:
        jax.clear_caches()  # the kernel is traced again with the bracket path
        return pred.quantiles(levels)
    finally:
        _quantiles.SURROGATE_MIN_DRAWS = previous
        jax.clear_caches()


@pytest.mark.parametrize("num_draws", [_quantiles.SURROGATE_MIN_DRAWS, 250])
def test_surrogate_started_quantiles_solve_the_cdf(num_draws):
    # Random networks per draw (surrogates far from the full mixture: several probes); 250
    # draws: a stride of 7 that leaves 5 draws out of the subsets' pattern.
    pred = random_posterior(num_draws, 4, hidden_sizes=(5,), seed=3).predictive(
        np.random.default_rng(4).normal(size=(21, 2)))
    quantiles = pred.quantiles(LEVELS)
    assert np.all(np.diff(quantiles, axis=0) >= 0)
    for level, values in zip(LEVELS, quantiles, strict=True):
        np.testing.assert_allclose(pred.cdf(values)[:, 0], level, atol=2e-6)
    # Same answers as the bracket path within the tolerance (2 eps |x| + 5e-7 standardised,
    # y_scale = 2) plus the float32 cdf's rounding over the density; at q = 0.01 and 0.995
    # both are limited by the float32 cdf (checked above).
    np.testing.assert_allclose(quantiles[1:-1], _bracket_solve(pred, LEVELS)[1:-1], rtol=0,
                               atol=2e-5)


def test_surrogate_started_quantiles_of_a_student_t_mixture():
    model = bm.MDN(num_components=3, hidden_sizes=(4,), family=bm.families.StudentT(df="head"))
    rng = np.random.default_rng(6)
    num_draws = _quantiles.SURROGATE_MIN_DRAWS + 6
    draws = {site.name: (0.6 * rng.normal(size=(2, num_draws // 2 + 1, *site.shape))).astype(
        np.float32) for site in model.sites(2, 1)}  # two chains
    standardizer = Standardizer(np.zeros(2), np.ones(2), np.full(1, 0.5),
                                           np.full(1, 3.0))
    post = bm.Posterior(model=model, method="nuts", draws=draws, standardizer=standardizer)
    pred = post.predictive(rng.normal(size=(7, 2)))
    levels = np.array([0.02, 0.5, 0.9])
    quantiles = pred.quantiles(levels)
    for level, values in zip(levels, quantiles, strict=True):
        np.testing.assert_allclose(pred.cdf(values)[:, 0], level, atol=2e-6)


def test_whole_mixture_in_groups_of_draws_matches_one_draw_at_a_time():
    # 23 draws: two full groups of DRAWS_PER_STEP and a remainder of 3.
    post = random_posterior(23, 3, hidden_sizes=(5,))
    pred = post.predictive(np.random.default_rng(1).normal(size=(6, 2)))
    y_scale = pred._scalers()[1]
    draws = jax.tree.map(jnp.asarray, dict(pred.draws))
    weights, params = _quantiles._whole_mixture(pred.model, draws, y_scale,
                                                jnp.asarray(pred.X_std))
    log_weights, expected = jax.vmap(lambda d: pred.model.mixture(
        d, jnp.asarray(pred.X_std), y_scale))(draws)  # (S, m, K, ...)
    np.testing.assert_allclose(
        weights, np.exp(np.moveaxis(log_weights, 0, 1).reshape(6, -1)) / 23, rtol=1e-5)
    for name, value in expected.items():
        np.testing.assert_allclose(params[name],
                                   np.moveaxis(value, 0, 1).reshape(6, -1, value.shape[-1]),
                                   rtol=1e-5, atol=1e-6)


def _normal_root_problem(level):
    """f(x) = Phi(x) - level, increasing, root ndtri(level)."""
    from jax.scipy.special import ndtri

    q = jnp.float32(level)
    return (lambda x: ndtr(x) - q), float(ndtri(np.float64(level))), (-q, 1.0 - q)


@pytest.mark.parametrize("level", [0.03, 0.5, 0.9])
@pytest.mark.parametrize("offset, step", [(0.0, 1e-3), (0.3, 1e-4), (-2.0, 1e-2)])
def test_solve_from_guess_steps_out_to_the_root(level, offset, step):
    f, root, f_far = _normal_root_problem(level)

    def fallback():  # traced under lax.cond, never used here: NaN would show if it were
        return jnp.float32(jnp.nan), jnp.float32(jnp.nan)

    guess = jnp.float32(root + offset)
    x = solve_from_guess(f, guess, jnp.float32(step), f_far, fallback, max_expansions=12)
    assert abs(float(x) - root) <= 2 * np.finfo(np.float32).eps * abs(root) + X_TOLERANCE + 2e-7


def test_solve_from_guess_falls_back_to_the_bracket_when_the_probes_fall_short():
    f, root, f_far = _normal_root_problem(0.9)

    def fallback():
        return jnp.float32(-10.0), jnp.float32(10.0)

    # One probe 1e-6 above a guess 3 below the root: no upper end without the fallback's.
    x = solve_from_guess(f, jnp.float32(root - 3.0), jnp.float32(1e-6), f_far, fallback,
                         max_expansions=1)
    assert abs(float(x) - root) <= 2 * np.finfo(np.float32).eps * abs(root) + X_TOLERANCE + 2e-7


def test_solve_from_guess_returns_an_exact_root_at_once():
    f = lambda x: x - jnp.float32(0.25)  # noqa: E731
    x = solve_from_guess(f, jnp.float32(0.25), jnp.float32(1.0),
                         (jnp.float32(-1.0), jnp.float32(1.0)),
                         lambda: (jnp.float32(-1.0), jnp.float32(1.0)))
    assert float(x) == 0.25


@pytest.mark.parametrize("tolerance", [1e-3, X_TOLERANCE])
def test_chandrupatla_stops_with_a_bracket_narrower_than_the_tolerance(tolerance):
    # A cdf with a sharp step (two far-apart components) and ends not evaluated.
    def cdf(x):
        return 0.5 * ndtr((x + 3.0) / 0.01) + 0.5 * ndtr((x - 2.0) / 2.0)

    levels = jnp.array([0.1, 0.5, 0.6, 0.99], jnp.float32)
    x = solve_increasing(cdf, levels, jnp.full(4, -3.1, jnp.float32),
                         jnp.full(4, 8.0, jnp.float32), x_tolerance=tolerance)
    roots = []
    for level in np.asarray(levels, np.float64):  # float64 bisection
        lo, hi = -3.1, 8.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            value = 0.5 * ndtr((mid + 3.0) / 0.01) + 0.5 * ndtr((mid - 2.0) / 2.0)
            lo, hi = (mid, hi) if value < level else (lo, mid)
        roots.append(0.5 * (lo + hi))
    roots = np.asarray(roots)
    bound = 2 * np.finfo(np.float32).eps * np.abs(roots) + tolerance
    # The float32 cdf's rounding (~1e-7) moves a root by that over the density.
    density = (0.5 * np.exp(-0.5 * ((roots + 3.0) / 0.01) ** 2) / 0.01
               + 0.5 * np.exp(-0.5 * ((roots - 2.0) / 2.0) ** 2) / 2.0) / np.sqrt(2 * np.pi)
    assert np.all(np.abs(np.asarray(x) - roots) <= bound + 2e-7 / density)


def test_secant_fraction_is_the_chord_root_kept_off_the_ends():
    t = _roots._secant_fraction(jnp.float32(0.0), jnp.float32(1.0), jnp.float32(-0.25),
                                jnp.float32(0.75), 1e-3)
    assert float(t) == pytest.approx(0.75)  # x = 1 + 0.75 (0 - 1) = 0.25
    t = _roots._secant_fraction(jnp.float32(0.0), jnp.float32(1.0), jnp.float32(0.0),
                                jnp.float32(1.0), 1e-3)
    assert float(t) == pytest.approx(1 - 5e-4)  # half the tolerance from the lower end
