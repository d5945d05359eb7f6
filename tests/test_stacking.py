"""bm.stack: weights (stacking, pseudo-BMA; held-out or PSIS-LOO), the stacked predictive's
queries against closed forms, metrics, save/load, and every error.

The members are built directly (no fitting): a K = 1 MDN without hidden layers whose kernels
are zero predicts a constant Normal(loc, scale) at every input, so the stacked predictive is
a known two-component mixture.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _compilation import no_compilation
from _posteriors import constant_normal_posterior as normal_posterior
from scipy import integrate, optimize, stats

import bayes_mdn as bm
from bayes_mdn.diagnostics import ConvergenceWarning
from bayes_mdn.stacking import (
    StackedPosterior,
    StackedPredictive,
    load_stacked,
    stacking_weights,
)

LOCS, SCALES, WEIGHTS = (0.0, 3.0), (1.0, 0.5), (0.3, 0.7)
NUM_INPUTS = 6


def mixture_log_pdf(y):
    return np.log(sum(w * stats.norm.pdf(y, m, s)
                      for w, m, s in zip(WEIGHTS, LOCS, SCALES, strict=True)))


def mixture_cdf(y):
    return sum(w * stats.norm.cdf(y, m, s) for w, m, s in zip(WEIGHTS, LOCS, SCALES, strict=True))


@pytest.fixture(scope="module")
def members():
    return {"a": normal_posterior(LOCS[0], SCALES[0]), "b": normal_posterior(LOCS[1], SCALES[1])}


@pytest.fixture(scope="module")
def stacked(members):
    return bm.stack(members, weights=WEIGHTS)


@pytest.fixture(scope="module")
def pred(stacked):
    return stacked.predictive(np.zeros((NUM_INPUTS, 1)))


# --------------------------------------------------------------------------- queries
def test_log_prob_and_cdf_match_the_closed_form(pred):
    y = np.linspace(-2.0, 4.0, NUM_INPUTS)
    np.testing.assert_allclose(pred.log_prob(y), mixture_log_pdf(y), atol=1e-5)
    np.testing.assert_allclose(pred.cdf(y)[:, 0], mixture_cdf(y), atol=1e-6)
    grid = np.linspace(-3, 5, 7)
    np.testing.assert_allclose(pred.log_prob_grid(grid), np.tile(mixture_log_pdf(grid),
                                                                 (NUM_INPUTS, 1)), atol=1e-5)


def test_moments_and_variance_decomposition(pred):
    mean = sum(w * m for w, m in zip(WEIGHTS, LOCS, strict=True))
    aleatoric = sum(w * s**2 for w, s in zip(WEIGHTS, SCALES, strict=True))
    epistemic = sum(w * (m - mean) ** 2 for w, m in zip(WEIGHTS, LOCS, strict=True))
    np.testing.assert_allclose(pred.mean(), mean, atol=1e-6)
    np.testing.assert_allclose(pred.variance(), aleatoric + epistemic, rtol=1e-6)
    split = pred.variance_decomposition()
    np.testing.assert_allclose(split[0], aleatoric, rtol=1e-6)
    np.testing.assert_allclose(split[1], epistemic, rtol=1e-6)


def test_quantiles_invert_the_cdf(pred):
    levels = np.array([0.01, 0.3, 0.5, 0.9, 0.999])
    values = pred.quantiles(levels)
    assert values.shape == (levels.size, NUM_INPUTS, 1)
    np.testing.assert_allclose(mixture_cdf(values[:, 0, 0]), levels, atol=1e-5)
    assert np.all(np.diff(values[:, 0, 0]) > 0)


def test_samples_match_the_moments(pred):
    samples = pred.sample(jax.random.key(0), 20_000)
    assert samples.shape == (20_000, NUM_INPUTS, 1)
    mean, variance = pred.mean()[0, 0], pred.variance()[0, 0]
    se = np.sqrt(variance / samples.shape[0])
    assert abs(samples[:, 0, 0].mean() - mean) < 4 * se
    # Fraction below 1.5 is the mixture cdf there, within 4 binomial standard errors.
    share, expected = np.mean(samples[:, :, 0] < 1.5), mixture_cdf(1.5)
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / samples[..., 0].size)
    again = pred.sample(jax.random.key(0), 20_000)
    np.testing.assert_array_equal(samples, again)


def test_modes_and_hdr(pred):
    modes = pred.modes()
    assert len(modes) == NUM_INPUTS
    np.testing.assert_allclose(np.sort(modes[0][:, 0]), LOCS, atol=0.02)
    assert abs(modes[0][0, 0] - 3.0) < 0.02  # the heavier, narrower component first
    regions = pred.hdr(0.9)
    assert len(regions) == NUM_INPUTS and regions[0].shape == (2, 2)
    mass = sum(mixture_cdf(hi) - mixture_cdf(lo) for lo, hi in regions[0])
    assert abs(mass - 0.9) < 2e-3
    ends = regions[0].ravel()
    np.testing.assert_allclose(np.exp(mixture_log_pdf(ends)), np.exp(mixture_log_pdf(ends[0])),
                               rtol=0.02)


def test_entropy_matches_numerical_integration(pred):
    exact = integrate.quad(lambda z: -np.exp(mixture_log_pdf(z)) * mixture_log_pdf(z),
                           -10, 10, points=[0, 3], limit=200)[0]
    total, expected, information = pred.entropy_decomposition()
    np.testing.assert_allclose(total, exact, atol=1e-3)
    member_entropy = sum(w * stats.norm(0, s).entropy()
                         for w, s in zip(WEIGHTS, SCALES, strict=True))
    np.testing.assert_allclose(expected, member_entropy, atol=1e-3)
    np.testing.assert_allclose(information, total - expected)
    mc_total, _, _ = pred.entropy_decomposition(method="monte_carlo", key=jax.random.key(1),
                                                num_samples=4000)
    assert np.all(np.abs(mc_total - exact) < 0.1)  # about 5 standard errors of 4000 samples


def test_mixture_parameters_and_subsets(pred):
    log_weights, params = pred[[0, 2]].mixture_parameters()
    assert log_weights.shape == (2, 2)
    np.testing.assert_allclose(np.exp(log_weights).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(log_weights[0]), WEIGHTS, atol=1e-6)
    np.testing.assert_allclose(params["loc"][0, :, 0], LOCS, atol=1e-6)
    assert len(pred[1:3]) == 2 and pred[3].batch_shape == (1,)


def test_metrics_accept_the_stacked_predictive(pred):
    y = np.linspace(-1.0, 3.5, NUM_INPUTS)
    assert bm.metrics.log_score(pred, y) == pytest.approx(np.mean(mixture_log_pdf(y)), abs=1e-5)

    def exact_crps(target):
        left = integrate.quad(lambda z: mixture_cdf(z) ** 2, -12, target, limit=200)[0]
        right = integrate.quad(lambda z: (1 - mixture_cdf(z)) ** 2, target, 12, limit=200)[0]
        return left + right

    exact = np.array([exact_crps(t) for t in y])
    np.testing.assert_allclose(bm.metrics.crps(pred, y, pointwise=True)[:, 0], exact, rtol=1e-3)
    sampled = bm.metrics.crps(pred, y, method="sample", key=jax.random.key(2), num_samples=4000)
    assert abs(sampled[0] - exact.mean()) < 0.05
    np.testing.assert_allclose(bm.metrics.pit(pred, y)[:, 0], mixture_cdf(y), atol=1e-6)
    assert 0.0 <= bm.metrics.coverage(pred, y)[0.9] <= 1.0
    report = bm.metrics.calibration_report(pred, y)
    assert {"log_score", "crps", "rmse", "mae", "pit_ks_statistic"} <= set(report)
    np.testing.assert_allclose(bm.metrics.rmse(pred, y),
                               np.sqrt(np.mean((y - pred.mean()[:, 0]) ** 2)))


# --------------------------------------------------------------------------- weights
def test_stacking_weights_maximise_the_objective():
    rng = np.random.default_rng(0)
    log_density = rng.normal(size=(300, 4)) + np.array([0.0, 0.3, -0.5, 0.2])

    def negative(logits):
        w = np.exp(logits - logits.max())
        w /= w.sum()
        return -np.mean(np.log(np.exp(log_density) @ w))

    best = optimize.minimize(negative, np.zeros(4), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000})
    reference = np.exp(best.x - best.x.max()) / np.exp(best.x - best.x.max()).sum()
    found = stacking_weights(log_density)
    assert found.sum() == pytest.approx(1.0) and np.all(found >= 0)
    objective = np.mean(np.log(np.exp(log_density) @ found))
    assert objective >= -best.fun - 1e-7
    np.testing.assert_allclose(found, reference, atol=2e-3)


def test_pseudo_bma_weights_are_exp_elpd():
    log_density = np.array([[-1.0, -1.2], [-2.0, -1.5], [-0.5, -0.6]])
    elpd = log_density.sum(axis=0)
    expected = np.exp(elpd - elpd.max()) / np.exp(elpd - elpd.max()).sum()
    np.testing.assert_allclose(stacking_weights(log_density, "pseudo-bma"), expected)


def test_held_out_weights_find_the_true_member(members):
    rng = np.random.default_rng(1)
    y = rng.normal(LOCS[0], SCALES[0], size=400)
    stacked = bm.stack(members, np.zeros((400, 1)), y)
    assert stacked.weight_of["a"] > 0.95
    assert stacked.info["source"] == "held-out" and stacked.info["num_points"] == 400
    # Data from the 0.3 / 0.7 mixture: stacking recovers the weights (se about 0.02).
    which = rng.uniform(size=2000) < WEIGHTS[0]
    y = np.where(which, rng.normal(LOCS[0], SCALES[0], 2000), rng.normal(LOCS[1], SCALES[1],
                                                                          2000))
    stacked = bm.stack(members, np.zeros((2000, 1)), y)
    np.testing.assert_allclose(stacked.weights, WEIGHTS, atol=0.06)


def test_loo_weights_from_training_data():
    fits = {"near": normal_posterior(0.0, 1.0, num_draws=4, spread=0.01),
            "far": normal_posterior(2.5, 1.0, num_draws=4, spread=0.01)}
    y = np.random.default_rng(2).normal(0.0, 1.0, size=60)
    # Four draws: PSIS-LOO is unreliable (said), yet the far fit is far enough to lose.
    with pytest.warns(ConvergenceWarning, match="PSIS-LOO is unreliable"):
        stacked = bm.stack(fits, X=np.zeros((60, 1)), y=y, cv="loo")
    assert stacked.info["source"] == "loo"
    assert set(stacked.info["max_pareto_k"]) == {"near", "far"}
    assert stacked.weight_of["near"] > 0.9
    with pytest.warns(ConvergenceWarning, match="PSIS-LOO is unreliable"):
        pseudo = bm.stack(list(fits.values()), X=np.zeros((60, 1)), y=y, method="pseudo-bma",
                          cv="loo")
    assert pseudo.names == ("fit_0", "fit_1") and pseudo.weights[0] > 0.99


def test_loo_refuses_single_draw_fits(members):
    with pytest.raises(ValueError, match="posterior draws"):
        bm.stack(members, X=np.zeros((10, 1)), y=np.zeros(10), cv="loo")


def test_one_member_and_zero_weights(members):
    single = bm.stack({"a": members["a"]}, np.zeros((5, 1)), np.zeros(5))
    assert single.weights.tolist() == [1.0]
    partial = bm.stack(members, weights=[1.0, 0.0])
    pred = partial.predictive(np.zeros((3, 1)))
    assert len(pred.predictives) == 1  # the zero-weight fit is skipped
    np.testing.assert_allclose(pred.log_prob(np.zeros(3)),
                               members["a"].predictive(np.zeros((3, 1))).log_prob(np.zeros(3)))


def test_weights_are_read_only(stacked):
    with pytest.raises(ValueError, match="read-only"):
        stacked.weights[0] = 1.0
    with pytest.raises(AttributeError):
        stacked.weights = np.ones(2) / 2


# --------------------------------------------------------------------------- save / load
def test_save_and_load_round_trip(tmp_path, stacked, pred):
    path = tmp_path / "stacked.bmdn"
    stacked.save(path)
    loaded = bm.load(path)
    assert isinstance(loaded, StackedPosterior)
    assert loaded.names == stacked.names
    np.testing.assert_array_equal(loaded.weights, stacked.weights)
    y = np.linspace(-1, 4, NUM_INPUTS)
    np.testing.assert_array_equal(loaded.predictive(np.zeros((NUM_INPUTS, 1))).log_prob(y),
                                  pred.log_prob(y))
    assert isinstance(load_stacked(path), StackedPosterior)
    assert not list(tmp_path.glob(".bmdn-*"))  # no temporary file left behind


def test_load_refuses_a_damaged_file(tmp_path, stacked):
    path = tmp_path / "stacked.bmdn"
    stacked.save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a"):
        load_stacked(path)
    with pytest.raises(FileNotFoundError, match="No bayes_mdn file"):
        load_stacked(tmp_path / "missing.bmdn")
    with pytest.raises(ValueError, match="is a directory"):
        stacked.save(tmp_path)


def test_load_stacked_refuses_a_plain_posterior(tmp_path, members):
    path = tmp_path / "single.bmdn"
    members["a"].save(path)
    with pytest.raises(ValueError, match="not a stacked bayes_mdn file"):
        load_stacked(path)
    assert isinstance(bm.load(path), bm.Posterior)


# --------------------------------------------------------------------------- errors
def test_errors_before_compilation(members):
    other = normal_posterior(0.0, 1.0, num_features=2)
    with no_compilation():
        with pytest.raises(ValueError, match="same inputs: 'a' was fitted on 1 features but "
                                             "'c' on 2"):
            bm.stack({"a": members["a"], "c": other}, weights=[0.5, 0.5])
        with pytest.raises(ValueError, match=r"must sum to one; they sum to 0\.9"):
            bm.stack(members, weights=[0.5, 0.4])
        with pytest.raises(ValueError, match="is empty"):
            bm.stack({})
        with pytest.raises(ValueError, match="is empty"):
            bm.stack([])
        with pytest.raises(ValueError, match=r"3 features|3 columns"):
            bm.stack(members, np.zeros((4, 3)), np.zeros(4))


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda m: bm.stack(m, weights=[-0.5, 1.5]), ValueError, "non-negative"),
    (lambda m: bm.stack(m, weights=[1.0]), ValueError, "one entry per fit"),
    (lambda m: bm.stack(m, weights="ab"), TypeError, "sequence of 2 numbers"),
    (lambda m: bm.stack(m, np.zeros((2, 1)), np.zeros(2), weights=[0.5, 0.5]), ValueError,
     "not both"),
    (lambda m: bm.stack(m, np.zeros((2, 1))), ValueError, "both `X_val` and `y_val`"),
    (lambda m: bm.stack(m, X=np.zeros((2, 1))), ValueError, "both `X` and `y`"),
    (lambda m: bm.stack(m), ValueError, "needs data to weight"),
    (lambda m: bm.stack(m, np.zeros((2, 1)), np.zeros(3)), ValueError, "rows"),
    (lambda m: bm.stack(m, np.zeros((2, 1)), np.zeros(2), method="bma"), ValueError, "bma"),
    (lambda m: bm.stack(m["a"]), TypeError, "got one Posterior"),
    (lambda m: bm.stack("fits"), TypeError, "dict of name -> Posterior"),
    (lambda m: bm.stack({"a": m["a"], "b": 3}), TypeError, r"`posteriors\['b'\]`"),
    (lambda m: bm.stack({1: m["a"]}), TypeError, "must be strings"),
])
def test_bad_arguments(members, call, error, match):
    with pytest.raises(error, match=match):
        call(members)


def test_incompatible_members():
    with pytest.raises(ValueError, match="same outputs"):
        bm.stack([normal_posterior(0, 1), normal_posterior(0, 1, num_outputs=2)],
                 weights=[0.5, 0.5])
    first, second = normal_posterior(0, 1), normal_posterior(1, 1)
    import dataclasses

    first = dataclasses.replace(first, info={"feature_names": ["u"]})
    second = dataclasses.replace(second, info={"feature_names": ["v"]})
    with pytest.raises(ValueError, match="fitted on columns"):
        bm.stack([first, second], weights=[0.5, 0.5])


def test_stacked_posterior_checks_its_fields(members):
    a, b = members["a"], members["b"]
    with pytest.raises(ValueError, match="unique"):
        StackedPosterior(members=(a, b), names=("x", "x"), weights=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="same length"):
        StackedPosterior(members=(a, b), names=("x",), weights=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="at least one member"):
        StackedPredictive(predictives=(), weights=np.array([]))
    with pytest.raises(TypeError, match="PredictiveMixture"):
        StackedPredictive(predictives=("p",), weights=np.array([1.0]))


def test_stacking_weights_refuses_bad_densities():
    with pytest.raises(ValueError, match=r"shape \(N, M\)"):
        stacking_weights(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        stacking_weights(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="zero density under every fit"):
        stacking_weights(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))


def test_query_errors(pred):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        pred.quantiles([0.0, 0.5])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        pred.hdr(1.5)
    with pytest.raises(TypeError, match="strictly between 0 and 1"):
        pred.hdr("0.9")
    with pytest.raises(TypeError, match="needs `key`"):
        pred.crps(np.zeros(NUM_INPUTS), method="sample")
    with pytest.raises(TypeError, match="needs `key`"):
        pred.entropy_decomposition(method="monte_carlo")
    with pytest.raises(ValueError, match="one row per input"):
        pred.crps(np.zeros(NUM_INPUTS + 1))
    two = bm.stack([normal_posterior(0, 1, num_outputs=2), normal_posterior(1, 1, num_outputs=2)],
                   weights=[0.5, 0.5]).predictive(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="one output"):
        two.modes()
    with pytest.raises(ValueError, match="one output"):
        two.hdr(0.5)
    assert two.quantiles(0.5).shape == (1, 2, 2)
