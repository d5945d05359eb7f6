"""Every inference method through one MDN.fit call: shapes, records, options, init, thinning."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayes_mdn as bm


@pytest.fixture(scope="module")
def data():
    return bm.datasets.inverse_sine(jax.random.key(0), num_samples=600, train_fraction=0.5)


@pytest.fixture(scope="module")
def model():
    return bm.MDN(num_components=3, hidden_sizes=(6,))


@pytest.fixture(scope="module")
def map_fit(data, model):
    """Converged enough for a positive definite Hessian (cosine decay settles Adam)."""
    X, y, _, _ = data
    return model.fit(X, y, key=jax.random.key(0), num_steps=2000, lr_schedule="cosine")


@pytest.fixture(scope="module")
def ensemble_fit(data, model):
    X, y, X_test, y_test = data
    return model.fit(X, y, key=jax.random.key(1), method="ensemble", num_members=4,
                     num_steps=200, X_test=X_test, y_test=y_test, num_evaluations=5)


@pytest.fixture(scope="module")
def nuts_fit(data, model, ensemble_fit):
    X, y, X_test, y_test = data
    return model.fit(X, y, key=jax.random.key(7), method="nuts", init=ensemble_fit,
                     num_chains=2, num_warmup=30, num_samples=20, max_tree_depth=4,
                     X_test=X_test, y_test=y_test)


def assert_finite_predictive(posterior, X_test, y_test):
    predictive = posterior.predictive(X_test[:50])
    assert np.isfinite(predictive.log_prob(y_test[:50])).all()
    assert np.isfinite(predictive.quantiles([0.05, 0.95])).all()


def test_ensemble_members_are_independent_draws(data, ensemble_fit):
    _, _, X_test, y_test = data
    posterior = ensemble_fit
    assert (posterior.num_chains, posterior.num_draws) == (1, 4)
    kernels = np.asarray(posterior.draws["hidden_0.kernel"])[0]
    assert all(not np.allclose(kernels[0], kernels[i]) for i in range(1, 4))
    assert posterior.history["member_loss"].shape == (4, 200)
    assert posterior.history["loss"].shape == (200,)
    assert posterior.history["test_log_likelihood"].shape == (5,)
    assert_finite_predictive(posterior, X_test, y_test)


@pytest.mark.parametrize("guide", ["normal", "lowrank", "mvn", "flow"])
def test_svi_guides(data, model, map_fit, guide):
    X, y, X_test, y_test = data
    posterior = model.fit(X, y, key=jax.random.key(2), method="svi", guide=guide,
                          init=map_fit, num_steps=150, num_draws=64, X_test=X_test,
                          y_test=y_test, num_evaluations=3)
    assert posterior.method == "svi" and posterior.info["guide"] == guide
    assert (posterior.num_chains, posterior.num_draws) == (1, 64)
    elbo = posterior.history["elbo"]
    assert elbo.shape == (150,)
    assert elbo[-30:].mean() > elbo[:30].mean()  # the guide widens: the ELBO improves
    assert np.isfinite(posterior.history["test_log_likelihood"]).all()
    draws = np.asarray(posterior.draws["loc.bias"])[0]
    assert draws.std(axis=0).max() > 0  # a distribution, not a point
    assert_finite_predictive(posterior, X_test, y_test)


def test_svi_minibatch_and_schedule(data, model):
    X, y, _, _ = data
    posterior = model.fit(X, y, key=jax.random.key(3), method="svi", subsample_size=32,
                          lr_schedule="cosine", num_steps=100, num_draws=8,
                          num_eval_draws=4, num_evaluations=2)
    assert posterior.info["subsample_size"] == 32
    assert np.isfinite(posterior.history["loss"]).all()


def test_svi_on_many_rows_skips_the_pareto_k(data, model, monkeypatch):
    """Above MAX_PARETO_ROWS the Pareto k (NUM_PARETO_DRAWS passes over the data) is skipped;
    the fit, its curves (on a fixed subset of MAX_TRAIN_EVAL_ROWS rows) and the report work."""
    from bayes_mdn.inference import svi

    X, y, _, _ = data
    monkeypatch.setattr(svi, "MAX_PARETO_ROWS", len(X) - 1)
    monkeypatch.setattr(svi, "MAX_TRAIN_EVAL_ROWS", len(X) // 2)
    posterior = model.fit(X, y, key=jax.random.key(3), method="svi", subsample_size=32,
                          num_steps=20, num_draws=8, num_evaluations=2)
    assert posterior.info["pareto_k"] is None and posterior.info["pareto_k_draws"] == 0
    assert np.isfinite(posterior.history["train_log_likelihood"]).all()
    assert posterior.summary()["pareto_k"] is None


def test_laplace_around_map_and_a_bad_hessian(data, model, map_fit):
    X, y, X_test, y_test = data
    posterior = model.fit(X, y, key=jax.random.key(4), method="laplace", init=map_fit,
                          num_draws=32)
    assert posterior.info["hessian_min_eigenvalue"] > 0
    assert "map_train_log_likelihood" in posterior.history  # the MAP stage's record
    assert posterior.history["train_log_likelihood"].shape == (1,)  # the Laplace fit's
    assert_finite_predictive(posterior, X_test, y_test)
    # 40 steps, one block of 40 like map_fit's blocks: no new compilation.
    barely_fitted = model.fit(X, y, key=jax.random.key(4), num_steps=40, num_evaluations=1)
    with pytest.raises(ValueError, match=r"not positive definite.*hessian='fisher'"):
        model.fit(X, y, key=jax.random.key(4), method="laplace", init=barely_fitted)
    # The Fisher information is positive definite anywhere (with a log-concave prior).
    fisher = model.fit(X, y, key=jax.random.key(4), method="laplace", init=barely_fitted,
                       hessian="fisher", num_draws=32)
    assert fisher.info["hessian_min_eigenvalue"] > 0
    assert_finite_predictive(fisher, X_test, y_test)


def test_nuts_keeps_sampler_statistics_and_starts_from_ensemble(data, nuts_fit):
    _, _, X_test, y_test = data
    posterior = nuts_fit
    assert posterior.info["init"] == "ensemble"
    assert (posterior.num_chains, posterior.num_draws) == (2, 20)
    stats = posterior.sample_stats
    for name in ("diverging", "tree_depth", "num_steps", "step_size", "accept_prob",
                 "energy"):
        assert stats[name].shape == (2, 20), name
    assert stats["diverging"].dtype == bool
    assert stats["tree_depth"].max() <= 4
    assert posterior.info["chain_method"] == "vectorized"
    summary = posterior.summary()
    assert summary["num_divergent"] == int(stats["diverging"].sum())
    # Held-out data are scored with the posterior predictive, as the predictive would.
    expected = posterior.predictive(X_test).log_prob(y_test).mean()
    np.testing.assert_allclose(summary["test_log_likelihood"], expected, atol=1e-4)
    assert_finite_predictive(posterior, X_test, y_test)


def test_nuts_sample_stats_survive_save_and_load(nuts_fit, tmp_path):
    posterior = nuts_fit
    posterior.save(tmp_path / "nuts.bmdn")
    loaded = bm.load(tmp_path / "nuts.bmdn")
    assert loaded.method == "nuts"
    for name, value in posterior.sample_stats.items():
        np.testing.assert_array_equal(loaded.sample_stats[name], value)


def test_thin_and_predictive_num_draws(data, model):
    X, y, X_test, _ = data
    posterior = model.fit(X, y, key=jax.random.key(9), method="ensemble", num_members=100,
                          num_steps=20, num_evaluations=1)
    assert posterior.thin(10).num_draws == 10
    thinned = posterior.thin(num_draws=7)
    assert thinned.num_draws == 7 and thinned.info["thinned_from"] == 100
    np.testing.assert_array_equal(thinned.draws["loc.bias"][0, 0],
                                  posterior.draws["loc.bias"][0, 0])
    np.testing.assert_array_equal(thinned.draws["loc.bias"][0, -1],
                                  posterior.draws["loc.bias"][0, -1])
    assert posterior.predictive(X_test[:5], num_draws=13).num_draws == 13
    with pytest.raises(ValueError, match="exceeds the 100"):
        posterior.thin(num_draws=101)
    with pytest.raises(ValueError, match="`step`"):
        posterior.thin()
    with pytest.raises(ValueError, match="exceeds"):
        posterior.predictive(X_test[:5], num_draws=1000)


def test_bad_options_fail_before_fitting(data, model, map_fit, ensemble_fit):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="guide"):
        model.fit(X, y, key=jax.random.key(0), method="svi", guide="gaussian")
    with pytest.raises(TypeError, match=r"unknown options.*num_members"):
        model.fit(X, y, key=jax.random.key(0), method="nuts", num_members=3)
    with pytest.raises(ValueError, match="target_accept_prob"):
        model.fit(X, y, key=jax.random.key(0), method="nuts", target_accept_prob=1.5)
    with pytest.raises(ValueError, match="chain_method"):
        model.fit(X, y, key=jax.random.key(0), method="nuts", chain_method="threads")
    with pytest.raises(ValueError, match="lr_schedule"):
        model.fit(X, y, key=jax.random.key(0), method="svi", lr_schedule="linear")
    with pytest.raises(TypeError, match=r"fitted bayes_mdn\.Posterior"):
        model.fit(X, y, key=jax.random.key(0), method="svi", init={"loc.bias": 0})
    other = bm.MDN(num_components=2, hidden_sizes=(6,))
    with pytest.raises(ValueError, match="different MDN"):
        other.fit(X, y, key=jax.random.key(0), method="nuts", init=map_fit)
    with pytest.raises(ValueError, match="single-draw"):
        model.fit(X, y, key=jax.random.key(0), method="svi", init=ensemble_fit)


def test_integrating_methods_refuse_a_flat_prior(data):
    X, y, _, _ = data
    flat = bm.MDN(num_components=2, hidden_sizes=(3,), prior=bm.priors.Flat())
    for method in ("svi", "laplace", "nuts"):
        with pytest.raises(ValueError, match="needs a proper prior"):
            flat.fit(X, y, key=jax.random.key(0), method=method)
