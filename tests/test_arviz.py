"""ArviZ interoperability: InferenceData groups and dims, pointwise log-likelihood in original
units, LOO/WAIC, posterior-predictive checks, MAP refusal, and bm.compare."""

from __future__ import annotations

import dataclasses
import warnings

import arviz as az
import jax
import matplotlib
import numpy as np
import pytest
from conftest import exact_posterior

import bayes_mdn as bm

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=600,
                                          train_fraction=0.5)
    return X, y


def ensemble(data, num_components):
    X, y = data
    model = bm.MDN(num_components=num_components, hidden_sizes=(6,))
    return model.fit(X, y, key=jax.random.key(1), method="ensemble", num_members=4,
                     num_steps=300, num_evaluations=1)


@pytest.fixture(scope="module")
def ensemble_k3(data):
    return ensemble(data, 3)


@pytest.fixture(scope="module")
def ensemble_k1(data):
    return ensemble(data, 1)


@pytest.fixture(scope="module")
def idata(data, ensemble_k3):
    X, y = data
    return ensemble_k3.to_arviz(X, y, key=jax.random.key(2))


def fake_nuts(posterior, num_chains=2):
    """The ensemble's draws as C chains, with synthetic NUTS statistics."""
    draws = {name: np.asarray(value).reshape(num_chains, -1, *value.shape[2:])
             for name, value in posterior.draws.items()}
    shape = next(iter(draws.values())).shape[:2]
    rng = np.random.default_rng(0)
    stats = {"diverging": np.zeros(shape, bool), "tree_depth": np.full(shape, 3),
             "num_steps": np.full(shape, 7), "step_size": np.full(shape, 0.1),
             "accept_prob": rng.uniform(0.7, 1.0, shape), "energy": rng.normal(size=shape),
             "potential_energy": rng.normal(size=shape)}
    return dataclasses.replace(posterior, method="nuts", draws=draws, sample_stats=stats)


def test_inference_data_groups_and_dims(data, ensemble_k3, idata):
    X, y = data
    num_rows = X.shape[0]
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood",
                                   "observed_data", "constant_data"}
    kernel = idata.posterior["hidden_0.kernel"]
    assert kernel.dims == ("chain", "draw", "hidden_0.kernel_dim_0", "hidden_0.kernel_dim_1")
    assert kernel.shape == (1, 4, 1, 6)
    assert set(idata.posterior.data_vars) == set(ensemble_k3.draws)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["y"].shape == (1, 4, num_rows)
    assert idata.posterior_predictive["y"].shape == (1, 4, num_rows)
    assert idata.observed_data["y"].dims == ("obs",)
    np.testing.assert_array_equal(idata.observed_data["y"], y[:, 0])
    assert idata.constant_data["X"].dims == ("obs", "feature")
    assert idata.attrs["method"] == "ensemble"
    assert np.isfinite(idata.posterior_predictive["y"]).all()
    # Without data: the posterior only; without a key: no posterior predictive.
    assert set(ensemble_k3.to_arviz().groups()) == {"posterior"}
    assert "posterior_predictive" not in ensemble_k3.to_arviz(X, y).groups()


def test_log_likelihood_is_each_draws_density_in_original_units(data, ensemble_k3, idata):
    X, y = data
    for draw in (0, 3):
        single = dataclasses.replace(
            ensemble_k3, draws={name: value[:, draw:draw + 1]
                                for name, value in ensemble_k3.draws.items()})
        expected = single.predictive(X).log_prob(y)
        np.testing.assert_allclose(idata.log_likelihood["y"][0, draw], expected, atol=2e-4)
    # Chunked over rows and draws (a tiny memory budget) gives the same values, up to
    # float32 round-off: XLA's matmuls over 1 row and over 300 rows may sum in another order
    # (differences of 1.7e-5 nats seen).
    chunked = ensemble_k3.to_arviz(X[:50], y[:50], max_elements=40)
    np.testing.assert_allclose(chunked.log_likelihood["y"],
                               idata.log_likelihood["y"][:, :, :50], atol=1e-4)


def test_posterior_predictive_is_reproducible_and_matches_the_data(data, ensemble_k3, idata):
    X, y = data
    again = ensemble_k3.to_arviz(X, key=jax.random.key(2))
    np.testing.assert_array_equal(again.posterior_predictive["y"],
                                  idata.posterior_predictive["y"])
    other = ensemble_k3.to_arviz(X, key=jax.random.key(3))
    assert not np.array_equal(other.posterior_predictive["y"], idata.posterior_predictive["y"])
    replicates = np.asarray(idata.posterior_predictive["y"]).reshape(-1)
    # Replicates follow the data's distribution (y ~ U(-10.5, 10.5) marginally).
    assert abs(replicates.mean() - y.mean()) < 0.5
    assert abs(replicates.std() - y.std()) < 0.5


def test_loo_waic_and_plots_work(idata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 4 draws: arviz warns about Pareto k, rightly
        loo = az.loo(idata, pointwise=True)
        waic = az.waic(idata, pointwise=True)
        axes = az.plot_ppc(idata, num_pp_samples=4)
        pit_axes = az.plot_loo_pit(idata, y="y")
    assert loo.loo_i.shape == (300,)
    assert np.isfinite(loo.loo_i).all() and np.isfinite(loo.elpd_loo)
    assert np.isfinite(waic.elpd_waic)
    assert axes is not None and pit_axes is not None
    import matplotlib.pyplot as plt

    plt.close("all")


def test_sample_stats_named_as_arviz_expects(data, ensemble_k3):
    posterior = fake_nuts(ensemble_k3)
    idata = posterior.to_arviz()
    stats = idata.sample_stats
    assert set(stats.data_vars) == {"diverging", "tree_depth", "step_size", "energy",
                                    "acceptance_rate", "lp", "n_steps"}
    assert stats["diverging"].dtype == bool and stats["diverging"].shape == (2, 2)
    np.testing.assert_array_equal(stats["lp"], -posterior.sample_stats["potential_energy"])
    np.testing.assert_array_equal(stats["acceptance_rate"], posterior.sample_stats["accept_prob"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(idata, var_names=["loc.bias"])
    assert table.shape[0] == 3 and "r_hat" in table.columns


def test_map_fit_is_refused_with_advice(data):
    point = exact_posterior([[0.0, 0.0]], [[-1.0, 1.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match=r"single draw.*method='nuts'.*method='svi'"):
        point.to_arviz()
    X, y = data
    with pytest.raises(ValueError, match=r"compare \(fit 'map'\) needs posterior draws"):
        bm.compare({"map": point, "other": point}, X, y)


def test_to_arviz_checks_its_arguments(data, ensemble_k3):
    X, y = data
    with pytest.raises(ValueError, match="`y` was given without `X`"):
        ensemble_k3.to_arviz(y=y)
    with pytest.raises(TypeError, match=r"jax.random.key\(0\)"):
        ensemble_k3.to_arviz(X, y, key=0)
    with pytest.raises(ValueError, match="same number of rows"):
        ensemble_k3.to_arviz(X, y[:10])


def test_compare_ranks_one_component_last(data, ensemble_k1, ensemble_k3):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: arviz flags high Pareto k
        table = bm.compare({"K=1": ensemble_k1, "K=3": ensemble_k3}, X, y)
    assert list(table.index) == ["K=3", "K=1"]
    assert table.loc["K=3", "rank"] == 0
    assert table.loc["K=1", "elpd_diff"] > 2 * table.loc["K=1", "dse"]
    assert np.isfinite(table["elpd_loo"]).all()


def test_compare_checks_its_arguments(data, ensemble_k3):
    X, y = data
    with pytest.raises(TypeError, match="must be a dict of name -> Posterior"):
        bm.compare([ensemble_k3, ensemble_k3], X, y)
    with pytest.raises(ValueError, match="at least two fits; got 1"):
        bm.compare({"a": ensemble_k3}, X, y)
    with pytest.raises(TypeError, match=r"`posteriors\['b'\]` must be a bayes_mdn.Posterior"):
        bm.compare({"a": ensemble_k3, "b": "fit"}, X, y)
    with pytest.raises(TypeError, match="names of `posteriors` must be strings"):
        bm.compare({1: ensemble_k3, 2: ensemble_k3}, X, y)
    with pytest.raises(ValueError, match="Unknown ic 'aic'"):
        bm.compare({"a": ensemble_k3, "b": ensemble_k3}, X, y, ic="aic")
