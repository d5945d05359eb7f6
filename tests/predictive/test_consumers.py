"""Every consumer of draws x inputs goes through the one evaluator: the public CRPS and
per-draw queries of PredictiveMixture, and the memory bound of the ArviZ adapter, the
function-space diagnostics, the fit-time scores and reduce() with a wide Flax network."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import (
    WIDE_FEATURES,
    exact_posterior,
    head_bias_posterior,
    random_posterior,
    wide_feature_posterior,
)
from scipy import stats
from scipy.special import logsumexp

import bayes_mdn as bm
from bayes_mdn import _arviz, diagnostics, predictive
from bayes_mdn.calibration import IdentityMap
from bayes_mdn.inference import _data
from bayes_mdn.predictive import PredictiveMixture, _compress, _kernels
from bayes_mdn.predictive.per_draw import log_prob_per_draw, sample_per_draw

BUDGET = predictive.DEFAULT_MAX_ELEMENTS
WIDE = WIDE_FEATURES


def _temp_bytes(lowered) -> int:
    stats_ = lowered.compile().memory_analysis()
    if stats_ is None:
        pytest.skip("this backend reports no memory analysis")
    return stats_.temp_size_in_bytes


def _device_draws(pred: PredictiveMixture) -> dict[str, jax.Array]:
    return {name: jnp.asarray(value) for name, value in pred.draws.items()}


# --------------------------------------------------------------------------- CRPS
@pytest.fixture(scope="module")
def normal_pred():
    """N(0.5, 2**2) at three inputs."""
    return exact_posterior(np.zeros((1, 1)), [[0.5]], [[2.0]]).predictive(np.zeros((3, 1)))


def test_crps_of_a_normal_is_the_gaussian_formula_per_input(normal_pred):
    y = np.array([-1.0, 0.5, 4.0])
    z = (y - 0.5) / 2.0
    exact = 2.0 * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    for method in ("closed_form", "quadrature"):
        scores = normal_pred.crps(y, method=method)
        assert scores.shape == (3, 1) and scores.dtype == np.float64
        np.testing.assert_allclose(scores[:, 0], exact, rtol=1e-4)
    sampled = normal_pred.crps(y, method="sample", key=jax.random.key(0), num_samples=4000)
    assert np.all(np.abs(sampled[:, 0] - exact) < 0.1)  # ~5 standard errors


def test_metrics_crps_is_the_mean_of_the_public_query(normal_pred):
    y = np.array([-1.0, 0.5, 4.0])
    scores = normal_pred.crps(y)
    np.testing.assert_array_equal(bm.metrics.crps(normal_pred, y), scores.mean(axis=0))
    np.testing.assert_array_equal(bm.metrics.crps(normal_pred, y, pointwise=True),
                                  scores.astype(np.float32))


def test_crps_of_a_recalibrated_and_a_stacked_predictive_through_metrics():
    post = exact_posterior(np.log([[0.3, 0.7]]), [[-2.0, 3.0]], [[0.5, 1.0]])
    X, y = np.zeros((6, 1)), np.linspace(-3.0, 4.0, 6)
    base = post.predictive(X).crps(y)
    # R = identity: the recalibrated cdf is the base cdf, scored by its own quadrature.
    same = dataclasses.replace(post, recalibration=IdentityMap()).predictive(X)
    np.testing.assert_allclose(bm.metrics.crps(same, y, pointwise=True), base, rtol=2e-3)
    # One member with weight 1: the stacked predictive is the member's.
    stacked = bm.stacking.stack([post], weights=[1.0]).predictive(X)
    np.testing.assert_allclose(bm.metrics.crps(stacked, y, pointwise=True), base, rtol=2e-3)


@pytest.fixture
def no_kernels(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran before the input was checked")

    monkeypatch.setattr(PredictiveMixture, "_run", refuse)


def test_crps_checks_its_input_before_any_kernel(normal_pred, no_kernels):
    y = np.zeros(3)
    with pytest.raises(ValueError, match="Unknown method 'exact'"):
        normal_pred.crps(y, method="exact")
    with pytest.raises(ValueError, match="`num_samples` must be at least 2"):
        normal_pred.crps(y, method="sample", key=jax.random.key(0), num_samples=1)
    with pytest.raises(ValueError, match="`grid_size` must be at least 16"):
        normal_pred.crps(y, method="quadrature", grid_size=8)
    with pytest.raises(TypeError, match=r"pass jax.random.key\(0\)"):
        normal_pred.crps(y, method="sample", key=0)
    with pytest.raises(TypeError, match=r"needs `key`, e.g. key=jax.random.key\(0\)"):
        normal_pred.crps(y, method="sample")
    with pytest.raises(ValueError, match=r"one row per input \(3\)"):
        normal_pred.crps(np.zeros(4))
    poisson = head_bias_posterior("poisson", {"logits": [[0.0]], "rate": [[1.0]]},
                                  num_components=1).predictive(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="needs Normal components"):
        poisson.crps(y, method="closed_form")
    with pytest.raises(TypeError, match=r"estimates by sampling .* needs `key`"):
        poisson.crps(y)


# --------------------------------------------------------------------------- per draw
@pytest.fixture(scope="module")
def random_pred():
    X = np.random.default_rng(2).normal(size=(40, 2))
    return random_posterior(13, 3, hidden_sizes=(5,)).predictive(X)


def test_per_draw_log_prob_averages_to_the_predictive_and_ignores_chunking(random_pred):
    y = np.random.default_rng(1).normal(1.5, 2.0, size=40)
    per_draw = log_prob_per_draw(random_pred, y)
    assert per_draw.shape == (13, 40) and per_draw.dtype == np.float64
    np.testing.assert_allclose(logsumexp(per_draw, axis=0) - np.log(13), random_pred.log_prob(y),
                               rtol=1e-5, atol=1e-5)
    small = dataclasses.replace(random_pred, max_elements=64)  # one input, 7 draws per call
    assert small._chunk_plan() == (1, 7)
    np.testing.assert_allclose(log_prob_per_draw(small, y), per_draw, rtol=1e-5, atol=1e-5)


def test_per_draw_samples_are_reproducible_and_chunking_free(random_pred):
    samples = sample_per_draw(random_pred, key=jax.random.key(0))
    assert samples.shape == (13, 40, 1) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, sample_per_draw(random_pred, key=jax.random.key(0)))
    assert not np.array_equal(samples, sample_per_draw(random_pred, key=jax.random.key(1)))
    small = dataclasses.replace(random_pred, max_elements=64)
    np.testing.assert_allclose(sample_per_draw(small, key=jax.random.key(0)), samples, atol=1e-5)


def test_per_draw_samples_follow_each_draws_mixture():
    # Draw 0 is N(-3, 0.5), draw 1 is N(4, 1): each sample comes from its own draw.
    post = exact_posterior(np.zeros((2, 1)), [[-3.0], [4.0]], [[0.5], [1.0]])
    samples = sample_per_draw(post.predictive(np.zeros((4000, 1))), key=jax.random.key(3))[..., 0]
    for draw, (loc, scale) in enumerate([(-3.0, 0.5), (4.0, 1.0)]):
        assert stats.kstest(samples[draw], stats.norm(loc, scale).cdf).pvalue > 1e-3


def test_per_draw_queries_refuse_a_transformed_predictive_or_a_posterior():
    post = exact_posterior(np.zeros((1, 1)), [[0.0]], [[1.0]])
    recalibrated = dataclasses.replace(post, recalibration=IdentityMap()).predictive(
        np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"log_prob_per_draw\(\) gives each posterior draw"):
        log_prob_per_draw(recalibrated, np.zeros(2))
    with pytest.raises(ValueError, match=r"sample_per_draw\(\) .* \(e.g. `.base`"):
        sample_per_draw(recalibrated, key=jax.random.key(0))
    with pytest.raises(TypeError, match="needs a PredictiveMixture as `pred`"):
        log_prob_per_draw(post, np.zeros(2))


# --------------------------------------------------------------------------- memory bound
# Each consumer's plan with the wide Flax network, compiled (not run) at its chunk shapes:
# XLA's own accounting of the scratch memory stays within a few budgets. Before the consumers
# used the evaluator, each counted K x D = 2 values per (input, draw) (or the built-in hidden
# layers only) and so planned 256 times too many pairs for the 512-wide layer.
def test_arviz_per_draw_queries_stay_within_a_few_budgets_with_a_wide_flax_network():
    posterior = wide_feature_posterior(200)
    pred = _arviz._predictive(posterior, np.zeros((20_000, 1)), BUDGET)
    input_chunk, draw_chunk = pred._chunk_plan()
    assert input_chunk * draw_chunk * WIDE <= BUDGET
    rows = jax.ShapeDtypeStruct((input_chunk, 1), jnp.float32)
    args = (pred.model, draw_chunk, _device_draws(pred), *pred._scalers(), rows)
    assert _temp_bytes(_kernels._draw_log_prob_kernel.lower(*args, rows)) <= 6 * 4 * BUDGET
    assert _temp_bytes(_kernels._draw_sample_kernel.lower(*args, jax.random.key(0), 0)
                       ) <= 6 * 4 * BUDGET
    # ... and the adapter's results are the predictive's per-draw queries.
    X, y = np.linspace(-1, 1, 7)[:, None], np.linspace(-2, 2, 7)
    small = wide_feature_posterior(3)
    np.testing.assert_allclose(_arviz.log_likelihood(small, X, y)[0],
                               log_prob_per_draw(small.predictive(X), y), rtol=1e-6)


def test_function_space_draws_stay_within_a_few_budgets_with_a_wide_flax_network():
    posterior = wide_feature_posterior(2000)
    draws = posterior.prediction_draws()
    num_inputs = diagnostics.REFERENCE_POINTS
    levels = diagnostics.QUANTILE_LEVELS
    batch = diagnostics._draw_batch(posterior, draws, num_inputs, len(levels), BUDGET)
    assert num_inputs * batch * WIDE <= BUDGET  # counting K x D x Q = 6 allowed all 2000
    rows = jax.ShapeDtypeStruct((num_inputs, 1), jnp.float32)
    scale = jnp.ones(1, jnp.float32)
    lowered = diagnostics._function_space_kernel.lower(
        posterior.model, batch, True, levels, diagnostics._scale_floor(posterior.model),
        {name: jnp.asarray(value) for name, value in draws.items()}, rows, rows, scale * 0,
        scale)
    assert _temp_bytes(lowered) <= 6 * 4 * BUDGET


def test_fit_time_scores_run_in_the_evaluator_within_the_budget(monkeypatch):
    posterior = wide_feature_posterior(256)
    X = np.linspace(-2, 2, 3000)[:, None].astype(np.float32)
    y = np.sin(X).astype(np.float32)
    plans = []
    run = PredictiveMixture._run

    def spy(self, kernel, *args, **kwargs):
        plans.append((self._plan(), self._chunk_plan()))
        return run(self, kernel, *args, **kwargs)

    monkeypatch.setattr(PredictiveMixture, "_run", spy)
    data = _data.FitData(standardizer=posterior.standardizer, X=jnp.asarray(X),
                         y=jnp.asarray(y), y_scale=jnp.ones(1, jnp.float32),
                         X_test=None, y_test=None)
    scores = _data.final_scores(posterior.model, data, posterior.draws)
    assert plans, "final_scores evaluates through PredictiveMixture"
    for (_, block, step), (input_chunk, draw_chunk) in plans:
        assert block * step * WIDE <= BUDGET and input_chunk * draw_chunk * WIDE <= BUDGET
    # 256 draws x 3000 rows x 512 units at once would have been 1.6 GB in float32.
    expected = posterior.predictive(X).log_prob(y).mean()
    np.testing.assert_allclose(scores["train_log_likelihood"], [expected], rtol=1e-6)
    # The Pareto-k batches count the feature network too.
    batch = _data.pareto_batch_size(posterior.model, (3000, 1, 1))
    assert 3000 * batch * WIDE <= _data.PARETO_BATCH_ELEMENTS


def test_reduce_counts_its_merge_arrays_against_the_budget():
    # S x K x K' = 200 x 20 x 30 values per input in the merge's assignment arrays.
    rng = np.random.default_rng(0)
    shape = (200, 20)
    posterior = exact_posterior(rng.normal(size=shape), rng.normal(size=shape),
                                rng.uniform(0.5, 2.0, size=shape))
    pred = posterior.predictive(np.zeros((4096, 1)))
    input_chunk = pred._reduce_chunk(30)
    assert input_chunk * 200 * 20 * 30 <= BUDGET
    rows = jax.ShapeDtypeStruct((input_chunk, 1), jnp.float32)
    lowered = _compress.compress_kernel.lower(pred.model, 30, 20, _device_draws(pred),
                                              *pred._scalers(), rows)
    assert _temp_bytes(lowered) <= 6 * 4 * BUDGET


def test_function_space_quantiles_of_a_discrete_family_are_exact_integers():
    # Two draws, Poisson rates e and e**2: each draw's quantile is the smallest integer k
    # with cdf(k) >= q (the root-finder's integer case; a continuous bisection is not).
    post = head_bias_posterior("poisson", {"logits": [[0.0], [0.0]], "rate": [[1.0], [2.0]]},
                               num_components=1)
    draws = diagnostics.function_space_draws(post, np.zeros((4, 1)), np.arange(4.0),
                                             num_points=4)
    quantiles = draws["quantiles"][0, :, :, :, 0]  # (S, Q, M)
    for draw, rate in enumerate(np.exp([1.0, 2.0])):
        exact = stats.poisson(rate).ppf(diagnostics.QUANTILE_LEVELS)
        np.testing.assert_array_equal(quantiles[draw], np.repeat(exact[:, None], 4, axis=1))
