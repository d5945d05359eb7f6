"""The one evaluator of draws x inputs: memory model, layouts, draw-major reductions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import WIDE_FEATURES, random_posterior, wide_feature_posterior

import bayes_mdn as bm
from bayes_mdn import predictive
from bayes_mdn.predictive import _kernels, _reductions
from bayes_mdn.predictive._evaluator import DRAW_MAJOR_MIN_INPUTS, network_width, plan_chunks
from bayes_mdn.scaling import Standardizer

BUDGET = predictive.DEFAULT_MAX_ELEMENTS
WIDE = WIDE_FEATURES


def test_memory_model_counts_a_flax_feature_networks_widths():
    pred = wide_feature_posterior(100).predictive(np.zeros((10**5, 1)))
    assert network_width(pred.model, pred.draws, 1, 1) == WIDE
    # Every layout's plan keeps (inputs x draws) x the widest layer within the budget.
    input_chunk, draw_chunk = pred._chunk_plan()
    assert input_chunk * draw_chunk * WIDE <= BUDGET
    layout, input_chunk, draw_chunk = pred._plan()
    assert layout == "draw" and input_chunk * draw_chunk * WIDE <= BUDGET


@pytest.mark.parametrize("layout", ["input", "draw"])
def test_compiled_kernel_with_a_wide_flax_network_stays_within_a_few_budgets(layout):
    # XLA's own accounting of the scratch memory of one log_prob call at the planned chunk
    # shapes (compiled, not run). Counting only K x D = 2 terms per pair, as before the memory
    # model read the feature network, planned 4096 inputs x 100 draws: 512 x that = 800 MB.
    pred = wide_feature_posterior(100).predictive(np.zeros((10**5, 1)))
    _, input_chunk, draw_chunk = plan_chunks(pred.num_inputs, pred.num_draws, pred._per_draw(),
                                             pred.max_elements, layout=layout)
    kernel = _reductions.log_prob_kernel if layout == "draw" else _kernels._log_prob_kernel
    rows = jax.ShapeDtypeStruct((input_chunk, 1), jnp.float32)
    draws = {name: jnp.asarray(value) for name, value in pred.draws.items()}
    lowered = kernel.lower(pred.model, draw_chunk, draws, *pred._scalers(), rows, rows)
    stats = lowered.compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    assert stats.temp_size_in_bytes <= 6 * 4 * BUDGET


def test_layout_follows_the_shapes():
    assert plan_chunks(10, 1000, 20, BUDGET)[0] == "input"
    assert plan_chunks(10**6, 1000, 20, BUDGET)[0] == "draw"
    assert plan_chunks(10**6, 1, 20, BUDGET)[0] == "input"  # one draw: nothing to scan
    layout, block, step = plan_chunks(10**6, 1000, 60, BUDGET)
    assert (layout, step) == ("draw", 1) and block * 60 <= BUDGET and block & (block - 1) == 0


@pytest.fixture(scope="module")
def many_inputs():
    """13 draws of K = 3 at DRAW_MAJOR_MIN_INPUTS + 37 inputs (draw-major), D = 1."""
    posterior = random_posterior(13, 3, hidden_sizes=(5,))
    X = np.random.default_rng(2).normal(size=(DRAW_MAJOR_MIN_INPUTS + 37, 2))
    pred = posterior.predictive(X)
    assert pred._plan()[0] == "draw"
    return pred


def _input_major(pred, kernel, rows=(), *, extra=1, static=()):
    input_chunk, draw_chunk = pred._chunk_plan(extra)
    return pred._run(kernel, rows, static=static, plan=(input_chunk, draw_chunk))


def test_draw_major_reductions_match_the_input_major_kernels(many_inputs):
    pred = many_inputs
    rng = np.random.default_rng(3)
    y = rng.normal(1.5, 2.0, size=(pred.num_inputs, 1))
    targets = pred._targets(y)
    log_scale = pred._log_scale()
    np.testing.assert_allclose(pred.log_prob(y),
                               _input_major(pred, _kernels._log_prob_kernel, (targets,))
                               - log_scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.cdf(y), _input_major(pred, _kernels._cdf_kernel, (targets,)),
                               rtol=1e-5, atol=1e-6)
    mean, variance = _input_major(pred, _kernels._moments_kernel)
    np.testing.assert_allclose(pred.mean(), pred._to_original(mean), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.variance(), variance * 4.0, rtol=1e-5, atol=1e-6)
    aleatoric, epistemic = _input_major(pred, _kernels._variance_split_kernel)
    for got, want in zip(pred.variance_decomposition(), (aleatoric, epistemic), strict=True):
        np.testing.assert_allclose(got, want * 4.0, rtol=1e-5, atol=1e-6)
    grid = np.linspace(-6.0, 9.0, 17)
    standard_grid = pred._to_standardised(np.broadcast_to(grid, (pred.num_inputs, 17)))
    np.testing.assert_allclose(
        pred.log_prob_grid(grid),
        _input_major(pred, _kernels._log_prob_grid_kernel, (standard_grid,), extra=17)
        - log_scale, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*too coarse:UserWarning")
def test_draw_major_entropy_matches_the_input_major_kernel(many_inputs):
    pred = many_inputs
    lower, upper, _ = pred._support_grid(64, 1.0)
    bounds = (lower.astype(np.float32), upper.astype(np.float32))
    total, expected = _input_major(pred, _kernels._entropy_grid_kernel, bounds, extra=64,
                                   static=(64,))
    got_total, got_expected, _ = pred.entropy_decomposition(grid_size=64)
    np.testing.assert_allclose(got_total, total + pred._log_scale(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_expected, expected + pred._log_scale(), rtol=1e-5,
                               atol=1e-5)


def test_quantiles_solve_the_cdf_within_the_stated_tolerance(many_inputs):
    pred = many_inputs
    levels = np.array([0.001, 0.05, 0.5, 0.93, 0.999])
    quantiles = pred.quantiles(levels)  # (Q, M, 1)
    assert np.all(np.diff(quantiles, axis=0) >= 0), "monotone in q"
    # |cdf(x) - q| <= density x the x tolerance + the float32 cdf sum's rounding.
    for level, values in zip(levels, quantiles, strict=True):
        np.testing.assert_allclose(pred.cdf(values)[:, 0], level, atol=2e-6)
    # The previous implementation: 40 bisection steps, same answers within the tolerance
    # (2 eps |x| + 5e-7 in standardised units, times y_scale = 2 here) where the density is
    # not small; at q = 0.001 and 0.999 both are limited by the float32 cdf (checked above).
    input_chunk, draw_chunk = pred._chunk_plan(levels.size)
    old = pred._run(_kernels._quantile_kernel, batch_axis=1, static=(40, True),
                    trailing=(levels.astype(np.float32),), plan=(input_chunk, draw_chunk))
    np.testing.assert_allclose(quantiles[1:-1], pred._to_original(old)[1:-1], rtol=0,
                               atol=2e-5)


def test_quantiles_with_draws_recomputed_per_step_match():
    # A budget of 4 values: one input and one draw per step, the network re-run per step.
    posterior = random_posterior(7, 2, hidden_sizes=(2,))
    X = np.random.default_rng(1).normal(size=(5, 2))
    levels = [0.02, 0.5, 0.97]
    np.testing.assert_allclose(posterior.predictive(X, max_elements=4).quantiles(levels),
                               posterior.predictive(X).quantiles(levels), atol=2e-5)


def test_discrete_quantiles_are_the_smallest_integers_reaching_q():
    model = bm.MDN(num_components=3, hidden_sizes=(4,), family=bm.families.Poisson())
    rng = np.random.default_rng(4)
    draws = {name: (0.5 * rng.normal(size=(1, 9, *shape))).astype(np.float32)
             for name, shape in model.latent_shapes(2, 1).items()}
    standardizer = Standardizer(np.zeros(2), np.ones(2), np.zeros(1), np.ones(1))
    posterior = bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)
    pred = posterior.predictive(rng.normal(size=(DRAW_MAJOR_MIN_INPUTS + 5, 2)))
    levels = np.array([0.1, 0.5, 0.9])
    quantiles = pred.quantiles(levels)
    np.testing.assert_array_equal(quantiles, np.round(quantiles))
    for level, values in zip(levels, quantiles, strict=True):
        assert np.all(pred.cdf(values)[:, 0] >= level - 1e-6)
        assert np.all(pred.cdf(values - 1.0)[:, 0] < level + 1e-6)


@pytest.fixture(scope="module")
def reduced_pair():
    posterior = random_posterior(50, 5, hidden_sizes=(4,))
    pred = posterior.predictive(np.random.default_rng(1).normal(size=(40, 2)))
    return pred, pred.reduce(8)


def test_reduce_preserves_mean_and_variance(reduced_pair):
    pred, reduced = reduced_pair
    assert (reduced.num_draws, reduced.num_components, reduced.X_std.shape) == (1, 8, (40, 24))
    np.testing.assert_allclose(reduced.mean(), pred.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reduced.variance(), pred.variance(), rtol=1e-5)


def test_reduce_loses_little_log_score_and_every_query_works(reduced_pair):
    # 250 components -> 8 per input; the log score of samples from the full predictive
    # (an estimate of KL(full || reduced) per point) must stay small.
    pred, reduced = reduced_pair
    y = pred.sample(jax.random.key(0), 20)
    loss = np.mean([pred.log_prob(value) - reduced.log_prob(value) for value in y])
    assert 0.0 <= loss < 0.05
    assert reduced.quantiles([0.1, 0.9]).shape == (2, 40, 1)
    assert len(reduced.hdr(0.9)) == len(reduced.modes()) == 40
    assert reduced.sample(jax.random.key(1), 3).shape == (3, 40, 1)


def test_reduce_refuses_other_families_and_outputs():
    model = bm.MDN(num_components=2, hidden_sizes=(), family=bm.families.StudentT())
    draws = {name: np.zeros((1, 1, *shape), np.float32)
             for name, shape in model.latent_shapes(1, 1).items()}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    pred = bm.Posterior(model=model, method="map", draws=draws,
                        standardizer=standardizer).predictive(np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"reduce\(\) merges Normal components.*StudentT"):
        pred.reduce(4)
    two = random_posterior(3, 2, num_outputs=2).predictive(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"reduce\(\) is defined for one output"):
        two.reduce(4)


def test_reduce_to_more_components_than_it_has_stays_finite():
    # 2 draws x 2 components -> 6 groups: at least 2 stay empty; every query stays finite.
    posterior = random_posterior(2, 2, hidden_sizes=(3,))
    pred = posterior.predictive(np.random.default_rng(5).normal(size=(6, 2)))
    reduced = pred.reduce(6)
    y = pred.mean()
    assert np.all(np.isfinite(reduced.X_std))
    assert np.all(np.isfinite(bm.metrics.crps(reduced, y)))
    assert np.all(np.isfinite(reduced.log_prob(y)))
    np.testing.assert_allclose(reduced.variance(), pred.variance(), rtol=1e-5)
