"""The fast paths of the predictive queries (issue 19): mean and variance from the softmax
of the logits, quantiles on a whole mixture with its terms along the minor axis, the erf
form of the Normal cdf. Each is checked against the general path it replaces."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import random_posterior
from jax.scipy.special import ndtr

import bayes_mdn as bm
from bayes_mdn.predictive import _kernels
from bayes_mdn.predictive._evaluator import DRAW_MAJOR_MIN_INPUTS, plan_chunks
from bayes_mdn.predictive._quantiles import component_cdf
from bayes_mdn.scaling import Standardizer


def _student_posterior(df: str, num_draws: int = 6) -> bm.Posterior:
    model = bm.MDN(num_components=3, hidden_sizes=(4,), family=bm.families.StudentT(df=df))
    rng = np.random.default_rng(2)
    draws = {name: (0.6 * rng.normal(size=(1, num_draws, *shape))).astype(np.float32)
             for name, shape in model.latent_shapes(2, 1).items()}
    if "family.df" in draws:  # a positive global df per draw
        draws["family.df"] = 3.0 + np.abs(draws["family.df"])
    standardizer = Standardizer(np.zeros(2), np.ones(2), np.full(1, 0.5), np.full(1, 3.0))
    return bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)


@pytest.mark.parametrize("df", ["global", "head"])
def test_draw_major_mean_and_variance_match_the_input_major_kernel(df):
    # The draw-major mean/variance take the softmax of the logits and the family's own
    # latent sites (a global df) directly; the input-major kernel goes through mixture().
    pred = _student_posterior(df).predictive(
        np.random.default_rng(3).normal(size=(DRAW_MAJOR_MIN_INPUTS + 9, 2)))
    assert pred._plan()[0] == "draw"
    _, input_chunk, draw_chunk = plan_chunks(pred.num_inputs, pred.num_draws,
                                             pred._per_draw(), pred.max_elements,
                                             layout="input")
    mean, variance = pred._run(_kernels._moments_kernel, plan=(input_chunk, draw_chunk))
    np.testing.assert_allclose(pred.mean(), pred._to_original(mean), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.variance(), variance * 9.0, rtol=1e-4, atol=1e-5)


def test_erf_normal_cdf_matches_ndtr_to_float32_round_off():
    z = jnp.linspace(-9.0, 9.0, 4001, dtype=jnp.float32)
    params = {"loc": jnp.zeros_like(z), "scale": jnp.ones_like(z)}
    got = component_cdf(bm.families.Normal(), params, z)
    np.testing.assert_allclose(got, ndtr(z), rtol=0, atol=3e-7)
    # Increasing up to the float32 spacing at 1 (the approximation's tail jitter).
    assert np.all(np.diff(np.asarray(got)) >= -np.finfo(np.float32).eps)


def test_quantiles_of_a_non_normal_family_solve_its_cdf():
    # D = 1 and one number per parameter: the minor-axis layout with the family's own cdf.
    pred = _student_posterior("head", num_draws=40).predictive(
        np.random.default_rng(5).normal(size=(9, 2)))
    levels = np.array([0.02, 0.5, 0.9])
    quantiles = pred.quantiles(levels)
    for level, values in zip(levels, quantiles, strict=True):
        np.testing.assert_allclose(pred.cdf(values)[:, 0], level, atol=2e-6)


def test_quantiles_of_two_outputs_solve_each_marginal_cdf():
    # D = 2: the general (m, T, D) layout.
    pred = random_posterior(12, 3, num_outputs=2).predictive(
        np.random.default_rng(6).normal(size=(7, 2)))
    levels = np.array([0.1, 0.5, 0.95])
    quantiles = pred.quantiles(levels)  # (Q, M, 2)
    assert quantiles.shape == (3, 7, 2)
    for level, values in zip(levels, quantiles, strict=True):
        np.testing.assert_allclose(pred.cdf(values), level, atol=2e-6)
