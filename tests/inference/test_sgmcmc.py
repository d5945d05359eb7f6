"""method="sgmcmc": cyclical SGHMC with minibatches (bayes_mdn/inference/sgmcmc.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_conjugate import SIGMA, closed_form, coefficient_draws, linear_model

import bayes_mdn as bm
import bayes_mdn.inference.sgmcmc as sgmcmc_module
from bayes_mdn.inference import METHODS
from bayes_mdn.inference.sgmcmc import SgmcmcOptions, _program, fit_sgmcmc

SMALL = dict(num_chains=2, num_cycles=2, num_steps_per_cycle=40, num_samples_per_cycle=5,
             thinning=2)


@pytest.fixture(scope="module")
def regression_data():
    # The data of tests/test_conjugate.py: 60 rows, 3 features.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 5.0, -2.0])
    y = X @ np.array([0.8, -0.3, 1.2]) + 2.0 + SIGMA * rng.normal(size=60)
    return X, y[:, None]


@pytest.fixture(scope="module")
def mdn_data():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=300,
                                          train_fraction=0.9)
    return X, y


@pytest.fixture(scope="module")
def small_fit(mdn_data):
    X, y = mdn_data
    model = bm.MDN(num_components=3, hidden_sizes=(8,))
    return model.fit(X, y, key=jax.random.key(1), method="sgmcmc", batch_size=64, **SMALL)


def test_registered():
    entry = METHODS["sgmcmc"]
    assert (entry.options, entry.fit, entry.kind) == (SgmcmcOptions, fit_sgmcmc, "chains")


@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(num_chains=0), ValueError, "num_chains"),
    (dict(num_cycles=1.5), TypeError, "num_cycles"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(step_size=0.0), ValueError, "step_size"),
    (dict(step_size="big"), TypeError, "step_size"),
    (dict(friction=0.0), ValueError, "friction"),
    (dict(friction=1.5), ValueError, r"friction.*\(0, 1\]"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(exploration_fraction=1.0), ValueError, r"exploration_fraction.*\[0, 1\)"),
    (dict(num_steps_per_cycle=100, num_samples_per_cycle=30, thinning=2), ValueError,
     r"keeps num_samples_per_cycle \* thinning = 60 steps, but only 50"),
    (dict(progress="yes"), TypeError, "progress"),
])
def test_invalid_options(options, error, match):
    with pytest.raises(error, match=match):
        SgmcmcOptions(**options)


def test_invalid_options_fail_before_fitting(mdn_data):
    X, y = mdn_data
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    with pytest.raises(ValueError, match="friction"):
        model.fit(X, y, key=jax.random.key(0), method="sgmcmc", friction=2.0)
    with pytest.raises(TypeError, match=r"unknown options.*num_warmup"):
        model.fit(X, y, key=jax.random.key(0), method="sgmcmc", num_warmup=10)
    with pytest.raises(ValueError, match=r"`batch_size` \(1000\) must not exceed .* \(270\)"):
        model.fit(X, y, key=jax.random.key(0), method="sgmcmc", batch_size=1000, **SMALL)


def test_non_finite_chains_raise(mdn_data):
    X, y = mdn_data
    model = bm.MDN(num_components=3, hidden_sizes=(8,))  # small_fit's compiled program
    with pytest.raises(FloatingPointError, match="lower `step_size`"):
        model.fit(X, y, key=jax.random.key(0), method="sgmcmc", step_size=1e6, batch_size=64,
                  **SMALL)


def test_shapes_stats_and_info(small_fit):
    post = small_fit
    assert post.method == "sgmcmc"
    assert (post.num_chains, post.num_draws) == (2, 10)
    for value in post.draws.values():
        assert value.shape[:2] == (2, 10)
    assert set(post.sample_stats) == {"step_size", "potential_energy", "cycle"}
    for value in post.sample_stats.values():
        assert value.shape == (2, 10)
    np.testing.assert_array_equal(post.sample_stats["cycle"][0], np.repeat([0, 1], 5))
    # Draws at the last steps of the cycle, where the cosine step size is smallest.
    steps = np.asarray(post.sample_stats["step_size"])
    assert np.all(steps <= 0.01 * 0.5 * (np.cos(np.pi * 30 / 40) + 1) + 1e-9)
    assert np.all(np.isfinite(post.sample_stats["potential_energy"]))
    assert post.info["batch_size"] == 64 and post.info["num_gradient_steps"] == 2 * 2 * 40
    assert np.isfinite(post.history["train_log_likelihood"]).all()


def test_summary_reports_function_space_rhat_and_ess(small_fit):
    summary = small_fit.summary()
    assert summary["method"] == "sgmcmc"
    assert summary["max_rhat"] is not None and np.isfinite(summary["max_rhat"])
    assert summary["min_ess_bulk"] is not None and summary["min_ess_bulk"] > 0


def test_same_key_same_draws_and_one_compilation(mdn_data, small_fit):
    X, y = mdn_data
    model = bm.MDN(num_components=3, hidden_sizes=(8,))
    before = _program.cache_info()
    again = model.fit(X, y, key=jax.random.key(1), method="sgmcmc", batch_size=64, **SMALL)
    for name, value in small_fit.draws.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(again.draws[name]))
    # Another key and another step size reuse the same compiled program.
    other = model.fit(X, y, key=jax.random.key(2), method="sgmcmc", batch_size=64,
                      step_size=0.02, **SMALL)
    after = _program.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2
    name = "hidden_0.kernel"
    assert not np.allclose(np.asarray(other.draws[name]), np.asarray(small_fit.draws[name]))


def test_training_score_on_a_bounded_row_subset(mdn_data, monkeypatch):
    X, y = mdn_data
    model = bm.MDN(num_components=3, hidden_sizes=(8,))
    full = model.fit(X, y, key=jax.random.key(1), method="sgmcmc", batch_size=64, **SMALL)
    monkeypatch.setattr(sgmcmc_module, "MAX_SCORE_ROWS", 100)
    part = model.fit(X, y, key=jax.random.key(1), method="sgmcmc", batch_size=64, **SMALL)
    assert (full.info["train_score_rows"], part.info["train_score_rows"]) == (270, 100)
    # The same draws, scored on 100 evenly spaced rows: close to, not equal to, all 270.
    full_ll = full.history["train_log_likelihood"][0]
    part_ll = part.history["train_log_likelihood"][0]
    assert full_ll != part_ll and abs(full_ll - part_ll) < 0.5


def test_save_load_round_trip(tmp_path, small_fit, mdn_data):
    path = tmp_path / "fit.bmdn"
    small_fit.save(path)
    loaded = bm.load(path)
    assert loaded.method == "sgmcmc" and loaded.info == small_fit.info
    for name, value in small_fit.draws.items():
        np.testing.assert_array_equal(np.asarray(loaded.draws[name]), np.asarray(value))
    for name, value in small_fit.sample_stats.items():
        np.testing.assert_array_equal(loaded.sample_stats[name], value)
    X, y = mdn_data
    np.testing.assert_allclose(loaded.predictive(X[:20]).log_prob(y[:20]),
                               small_fit.predictive(X[:20]).log_prob(y[:20]), rtol=1e-6)


def test_predictive(small_fit, mdn_data):
    X, y = mdn_data
    pred = small_fit.predictive(X[:7])
    log_prob = np.asarray(pred.log_prob(y[:7]))
    assert log_prob.shape == (7,) and np.isfinite(log_prob).all()
    assert pred.sample(jax.random.key(0), num_samples=3).shape == (3, 7, 1)


def test_init_from_a_map_fit(regression_data):
    X, y = regression_data
    model = linear_model()
    map_fit = model.fit(X, y, key=jax.random.key(0), num_steps=2000, learning_rate=0.02)
    # Temperature 0 and a tiny step: the chains stay at the MAP point they start from.
    post = model.fit(X, y, key=jax.random.key(1), method="sgmcmc", init=map_fit,
                     temperature=0.0, step_size=1e-6, **SMALL)
    assert post.info["init"] == "map"
    expected = np.broadcast_to(np.asarray(map_fit.draws["loc.kernel"])[0, 0],
                               (*post.draws["loc.kernel"].shape[:2], 3, 1))
    np.testing.assert_allclose(np.asarray(post.draws["loc.kernel"]), expected, atol=1e-4)


# Conjugate Bayesian linear regression (tests/test_conjugate.py): posterior sd about 0.06
# for every coefficient. 4 chains x 10 cycles x 100 kept draws; the errors below are in
# units of the posterior sd, whose Monte Carlo error here is about 0.05 (ESS of a few
# hundred); the SD tolerance also bounds the discretisation bias of the cyclical schedule,
# and with minibatches the extra variance of the noisy gradient (SGHMC with beta-hat = 0
# over-disperses by O(step_size * N / B): 1.2-1.3x at step_size 0.05, B = 20, measured).
CONJUGATE = dict(num_chains=4, num_cycles=10, num_steps_per_cycle=1000,
                 num_samples_per_cycle=100, thinning=4)


@pytest.mark.parametrize(("batch_size", "step_size", "friction"), [
    (None, 0.05, 0.1), (30, 0.005, 0.1),
    # friction 1 is cyclical SGLD
    pytest.param(None, 0.05, 1.0, marks=pytest.mark.slow),
])
def test_conjugate_posterior(regression_data, batch_size, step_size, friction):
    X, y = regression_data
    post = linear_model().fit(X, y, key=jax.random.key(3), method="sgmcmc",
                              batch_size=batch_size, step_size=step_size, friction=friction,
                              **CONJUGATE)
    mean, covariance = closed_form(X, y)
    sd = np.sqrt(np.diag(covariance))
    beta = coefficient_draws(post).reshape(-1, 4)
    np.testing.assert_array_less(np.abs(beta.mean(0) - mean) / sd, 0.2)
    np.testing.assert_allclose(beta.std(0) / sd, 1.0, atol=0.12)
    correlation = np.corrcoef(beta.T)
    np.testing.assert_allclose(correlation, covariance / np.outer(sd, sd), atol=0.1)


def test_to_arviz_sample_stats(small_fit):
    data = small_fit.to_arviz()
    stats = data.sample_stats
    assert stats["lp"].shape == (2, 10) and stats["cycle"].shape == (2, 10)
    np.testing.assert_allclose(stats["lp"].values,
                               -np.asarray(small_fit.sample_stats["potential_energy"]))
