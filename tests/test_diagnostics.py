"""Function-space convergence diagnostics, component collapse, Pareto k, objective trend,
ConvergenceWarning, Posterior.summary() and the diagnostic plots."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import warnings

import arviz as az
import jax
import matplotlib
import numpy as np
import pytest
from conftest import exact_posterior

import bayes_mdn as bm
from bayes_mdn import plotting
from bayes_mdn.diagnostics import (
    ConvergenceWarning,
    diagnose,
    function_space_draws,
    objective_trend,
    pareto_k,
    reference_indices,
)
from bayes_mdn.scaling import Standardizer

matplotlib.use("Agg")

SIGMA, TAU = 0.7, 1.5


@pytest.fixture(scope="module")
def data():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=600,
                                          train_fraction=0.5)
    return X, y


@pytest.fixture(scope="module")
def ensemble(data):
    X, y = data
    return bm.MDN(num_components=3, hidden_sizes=(6,)).fit(
        X, y, key=jax.random.key(1), method="ensemble", num_members=4, num_steps=300,
        num_evaluations=1)


@pytest.fixture(scope="module")
def stuck(ensemble):
    """4 chains, each stuck near its own ensemble member."""
    return chains_around(ensemble, [0, 1, 2, 3], num_draws=25, noise=0.01)


def chains_around(posterior, centres, num_draws, noise, seed=0):
    """A Posterior with one chain per entry of `centres` (member indices of `posterior`),
    each `num_draws` iid draws of that member's weights plus Normal(0, noise) jitter."""
    rng = np.random.default_rng(seed)
    draws = {}
    for name, value in posterior.draws.items():
        members = np.asarray(value)[0, list(centres)]  # (C, ...)
        jitter = noise * rng.normal(size=(len(centres), num_draws, *members.shape[1:]))
        draws[name] = (members[:, None] + jitter).astype(np.float32)
    return dataclasses.replace(posterior, method="nuts", draws=draws, history={},
                               sample_stats={})


def permute_units(draws, chain, hidden_perm, signs, component_perm):
    """Relabel hidden units (with tanh sign flips) and components of one chain's draws: the
    network computes exactly the same function."""
    draws = {name: np.array(value) for name, value in draws.items()}
    kernel = draws["hidden_0.kernel"][chain]
    draws["hidden_0.kernel"][chain] = kernel[..., hidden_perm] * signs
    draws["hidden_0.bias"][chain] = draws["hidden_0.bias"][chain][..., hidden_perm] * signs
    num_components = len(component_perm)
    for head in ("logits", "loc", "scale"):
        head_kernel = draws[f"{head}.kernel"][chain][..., hidden_perm, :] * signs[:, None]
        head_bias = draws[f"{head}.bias"][chain]
        width = head_bias.shape[-1] // num_components

        def relabel(array, width=width):
            shaped = array.reshape(*array.shape[:-1], num_components, width)
            return shaped[..., component_perm, :].reshape(array.shape)

        draws[f"{head}.kernel"][chain] = relabel(head_kernel)
        draws[f"{head}.bias"][chain] = relabel(head_bias)
    return draws


def raw_weight_rhat(posterior):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(posterior.to_arviz())
    return max(float(np.nanmax(value)) for value in rhat.data_vars.values())


# --------------------------------------------------------------------------- R-hat
def test_function_space_rhat_sees_through_permuted_units_where_raw_rhat_fails(ensemble):
    # 4 chains of iid draws around one network: converged by construction.
    converged = chains_around(ensemble, [0, 0, 0, 0], num_draws=500, noise=0.05)
    rng = np.random.default_rng(1)
    draws = dict(converged.draws)
    for chain in (1, 2, 3):
        draws = permute_units(draws, chain, rng.permutation(6), rng.choice([-1.0, 1.0], 6),
                              rng.permutation(3))
    permuted = dataclasses.replace(converged, draws=draws)
    # The same functions, to float rounding ...
    before, after = function_space_draws(converged), function_space_draws(permuted)
    np.testing.assert_allclose(after["log_density"], before["log_density"], atol=1e-3)
    # Quantiles by float32 bisection: where the density is low a rounding change in the CDF
    # moves a quantile by more than 1e-3 (one of 192 000 by 1.04e-3 seen).
    np.testing.assert_allclose(after["quantiles"], before["quantiles"], atol=1e-3, rtol=1e-3)
    # ... so function-space R-hat stays ~1, while raw-weight R-hat is huge.
    report = diagnose(permuted, warn=False)
    assert report.max_rhat <= 1.01, report.convergence
    assert raw_weight_rhat(converged) <= 1.01
    assert raw_weight_rhat(permuted) > 1.5
    assert not any("R-hat" in message for message in report.warnings)


def test_stuck_chains_have_large_rhat_and_warn(stuck):
    with pytest.warns(ConvergenceWarning) as record:
        report = diagnose(stuck)
    messages = [str(entry.message) for entry in record]
    assert any(re.search(r"R-hat is .* the chains have not mixed", m) for m in messages)
    assert any(re.search(r"ESS is low: bulk \d+, tail \d+ for 4 chains", m) for m in messages)
    assert all(entry.filename == __file__ for entry in record)  # stacklevel: the caller
    assert report.max_rhat > 1.1
    assert report.convergence["log_density"]["rhat"] > 1.1
    assert report.min_ess_bulk < 100 * 4
    assert any("ESS is low" in message for message in report.warnings)


def test_real_nuts_chains_started_in_different_modes_are_flagged(data, ensemble):
    """A real (short) NUTS run: 4 chains started at 4 different ensemble members, with a
    handful of warm-up and sampling steps and shallow trees, cannot mix between modes."""
    X, y = data
    posterior = ensemble.model.fit(X, y, key=jax.random.key(2), method="nuts", init=ensemble,
                                   num_chains=4, num_warmup=5, num_samples=40,
                                   max_tree_depth=3)
    report = diagnose(posterior, warn=False)
    assert report.convergence["log_density"]["rhat"] > 1.1, report.convergence
    assert any("R-hat" in message for message in report.warnings)


def test_divergences_and_tree_depth_warn_with_advice(ensemble):
    posterior = chains_around(ensemble, [0, 0], num_draws=50, noise=0.05)
    diverging = np.zeros((2, 50), bool)
    diverging[0, :3] = True
    stats = {"diverging": diverging, "tree_depth": np.full((2, 50), 4)}
    posterior = dataclasses.replace(posterior, sample_stats=stats,
                                    info={**posterior.info, "max_tree_depth": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 x 50 draws also trip the R-hat and ESS checks
        with pytest.warns(ConvergenceWarning,
                          match=r"3 of 100 NUTS transitions diverged.*target_accept_prob"):
            report = diagnose(posterior)
    assert report.num_divergent == 3 and report.fraction_max_tree_depth == 1.0
    assert any("max_tree_depth=4" in message for message in report.warnings)
    summary = posterior.summary()
    assert summary["num_divergent"] == 3 and summary["mean_tree_depth"] == 4.0


# --------------------------------------------------------------------------- collapse
def test_collapse_detector_fires_on_one_live_component():
    posterior = exact_posterior([[0.0, -20.0, -20.0]], [[0.0, 1.0, 2.0]], [[1.0, 1.0, 1.0]])
    with pytest.warns(ConvergenceWarning,
                      match=r"Component collapse: 2.0 of K=3 components are dead"):
        report = diagnose(posterior)
    assert report.dead_components == 2.0
    assert report.effective_components == pytest.approx(1.0, abs=1e-6)
    assert report.scale_floor_fraction == 0.0
    healthy = exact_posterior([[0.0, 0.0, 0.0]], [[0.0, 1.0, 2.0]], [[1.0, 1.0, 1.0]])
    report = diagnose(healthy, warn=False)
    assert report.dead_components == 0 and report.warnings == ()
    assert report.effective_components == pytest.approx(3.0, rel=1e-5)


def test_scale_floor_hits_warn():
    posterior = exact_posterior([[0.0, 0.0]], [[-1.0, 1.0]], [[1.0005e-3, 1.0]])
    with pytest.warns(ConvergenceWarning, match=r"50.0% of live component scales sit at the "
                                                r"family's min_scale floor"):
        report = diagnose(posterior)
    assert report.scale_floor_fraction == pytest.approx(0.5)


# --------------------------------------------------------------------------- objective
def with_objective(trace, num_rows=100):
    posterior = exact_posterior([[0.0]], [[0.0]], [[1.0]])
    return dataclasses.replace(posterior, method="svi", history={"elbo": trace},
                               info={"num_rows": num_rows})


def test_elbo_still_rising_warns_and_a_flat_one_does_not():
    rng = np.random.default_rng(0)
    steps = np.arange(2000)
    rising = with_objective(-1000 + 0.5 * steps + rng.normal(size=2000))
    with pytest.warns(ConvergenceWarning, match=r"ELBO was still improving.*more num_steps"):
        report = diagnose(rising)
    assert report.objective["still_improving"] and report.objective["z"] > 3
    flat = with_objective(-1000 + rng.normal(size=2000))
    assert not diagnose(flat, warn=False).objective["still_improving"]
    assert objective_trend(with_objective(np.zeros(100))) is None  # too short to judge


# --------------------------------------------------------------------------- Pareto k
@pytest.mark.parametrize("num_draws", [100, 1000])
def test_pareto_k_matches_arviz_psis(num_draws):
    rng = np.random.default_rng(num_draws)
    for df in (1.5, 3.0, 30.0):
        log_weights = np.log(np.abs(rng.standard_t(df, size=num_draws)))
        _, expected = az.psislw(log_weights.copy())
        assert pareto_k(log_weights) == pytest.approx(float(expected), abs=1e-8)
    assert pareto_k(np.arange(10.0)) is None  # too few draws for a tail fit
    assert pareto_k(1e-5 * np.arange(100.0)) == 0.0  # equal weights up to rounding
    assert pareto_k([np.nan, -np.inf]) is None


def linear_model():
    return bm.MDN(num_components=1, hidden_sizes=(),
                  family=bm.families.Normal(fixed_scale=SIGMA), prior=bm.priors.Normal(TAU))


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 5.0, -2.0])
    y = X @ np.array([0.8, -0.3, 1.2]) + 2.0 + SIGMA * rng.normal(size=60)
    return X, y


def conjugate_map(X, y):
    """The exact MAP fit of the conjugate model (closed form; see test_conjugate.py)."""
    x_s = (X - X.mean(0)) / X.std(0)
    y_s = (y - y.mean()) / y.std()
    design = np.column_stack([x_s, np.ones(len(X))])
    precision = design.T @ design / (SIGMA / y.std()) ** 2 + np.eye(4) / TAU**2
    mean = np.linalg.solve(precision, design.T @ y_s / (SIGMA / y.std()) ** 2)
    draws = {"logits.kernel": np.zeros((1, 1, 3, 1)), "logits.bias": np.zeros((1, 1, 1)),
             "loc.kernel": mean[:3].reshape(1, 1, 3, 1), "loc.bias": mean[3:].reshape(1, 1, 1)}
    standardizer = Standardizer(X.mean(0), X.std(0), np.array([y.mean()]), np.array([y.std()]))
    return bm.Posterior(model=linear_model(), method="map", standardizer=standardizer,
                        draws={name: value.astype(np.float32) for name, value in draws.items()})


def test_pareto_k_of_an_exact_laplace_fit_is_small(regression_data):
    X, y = regression_data
    # The posterior is exactly Gaussian: the Laplace approximation is exact, so the
    # importance weights are constant up to rounding.
    laplace = linear_model().fit(X, y, key=jax.random.key(0), method="laplace",
                                 init=conjugate_map(X, y), num_draws=50)
    assert laplace.info["pareto_k"] < 0.5 and laplace.info["pareto_k_draws"] == 200
    assert diagnose(laplace, warn=False).pareto_k == laplace.info["pareto_k"]


@pytest.mark.slow
def test_pareto_k_of_a_too_narrow_svi_guide_warns(regression_data):
    X, y = regression_data
    # A guide barely moved from its tiny initial scale is far too narrow.
    svi = linear_model().fit(X, y, key=jax.random.key(0), method="svi", num_steps=20,
                             num_draws=50)
    assert svi.info["pareto_k"] > 0.7
    with pytest.warns(ConvergenceWarning, match=r"Pareto k of the svi approximation .*richer "
                                                r"guide"):
        diagnose(svi)


# --------------------------------------------------------------------------- reference set
def test_reference_points_are_stored_at_fit_time(data, ensemble):
    X, y = data
    reference_X = np.asarray(ensemble.info["reference_X"])
    reference_y = np.asarray(ensemble.info["reference_y"])
    assert reference_X.shape == (32, 1) and reference_y.shape == (32, 1)
    assert np.all(np.diff(reference_X[:, 0]) >= 0)  # spread along x, in order
    np.testing.assert_allclose(reference_X[[0, -1], 0], [X.min(), X.max()], rtol=1e-5)
    rows = reference_indices(np.random.default_rng(0).normal(size=(100, 3)))
    assert rows.shape == (32,) and np.unique(rows).size == 32
    np.testing.assert_array_equal(reference_indices(X[:10]), np.argsort(X[:10, 0]))
    values = function_space_draws(ensemble, X, y, num_points=8)
    assert values["log_density"].shape == (1, 4, 8)
    assert values["quantiles"].shape == (1, 4, 3, 8, 1)
    assert values["effective_components"].shape == (1, 4)


def test_reference_points_of_many_rows_come_from_an_even_stride():
    from bayes_mdn.diagnostics import MAX_REFERENCE_CANDIDATES

    rng = np.random.default_rng(1)
    num_rows = 3 * MAX_REFERENCE_CANDIDATES + 5
    t = rng.normal(size=num_rows)
    # Two correlated columns: the principal direction orders the rows by t.
    X = np.column_stack([t, 3 * t + 0.01 * rng.normal(size=num_rows)]).astype(np.float32)
    rows = reference_indices(X)
    assert rows.shape == (32,) and np.unique(rows).size == 32
    assert np.all(rows % 4 == 0)  # stride ceil(N / MAX_REFERENCE_CANDIDATES) = 4
    assert np.all(np.diff(t[rows]) > 0)
    candidates = t[::4]
    assert t[rows[0]] < np.quantile(candidates, 1e-4)
    assert t[rows[-1]] > np.quantile(candidates, 1 - 1e-4)
    np.testing.assert_array_equal(reference_indices(X), rows)  # deterministic


def test_diagnose_checks_its_arguments(data, ensemble):
    X, y = data
    with pytest.raises(ValueError, match="`y` was given without `X`"):
        diagnose(ensemble, y=y)
    with pytest.raises(TypeError, match="`warn` must be True or False"):
        diagnose(ensemble, warn="yes")
    with pytest.raises(ValueError, match="num_points"):
        diagnose(ensemble, X, y, num_points=0)


# --------------------------------------------------------------------------- summary
def test_summary_prints_a_report_and_converts(ensemble):
    summary = ensemble.summary()
    assert isinstance(summary, dict) and summary["method"] == "ensemble"
    assert summary["num_reference_points"] == 32 and summary["max_rhat"] is None
    assert 1.0 <= summary["effective_components"] <= 3.0
    text = str(summary)
    assert "method='ensemble'" in text and "Mixture components" in text
    json.dumps(summary.to_dict(), allow_nan=False)  # no NaN, plain types
    frame = summary.to_dataframe()
    assert frame.loc["method", "value"] == "ensemble"
    # A point estimate: no R-hat, never NaN.
    point = exact_posterior([[0.0, 0.0]], [[-1.0, 1.0]], [[1.0, 1.0]]).summary()
    assert point["max_rhat"] is None and point["warnings"] == []
    json.dumps(point.to_dict(), allow_nan=False)


def test_summary_dataframe_needs_pandas(ensemble, monkeypatch):
    summary = exact_posterior([[0.0]], [[0.0]], [[1.0]]).summary()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        summary.to_dataframe()


# --------------------------------------------------------------------------- plots
def test_rank_and_elbo_plots(ensemble, stuck):
    import matplotlib.pyplot as plt

    ax = plotting.plot_rank(stuck)
    assert "R-hat" in ax.get_title() and len(ax.patches) > 0
    plotting.plot_rank(stuck, "median", point=3)
    plotting.plot_rank(stuck, "effective_components", num_bins=5)
    with pytest.raises(ValueError, match="Unknown quantity"):
        plotting.plot_rank(stuck, "weights")
    with pytest.raises(ValueError, match="out of range for 32 reference points"):
        plotting.plot_rank(stuck, point=32)
    with pytest.raises(ValueError, match="needs reference targets"):
        plotting.plot_rank(exact_posterior([[0.0]], [[0.0]], [[1.0]]))
    ax = plotting.plot_elbo(ensemble)
    assert ax.get_ylabel() == "-loss"
    with pytest.raises(ValueError, match="recorded no optimisation trace"):
        plotting.plot_elbo(stuck)
    plt.close("all")


# --------------------------------------------------------------------------- real NUTS
@pytest.mark.slow
def test_converged_nuts_run_has_function_space_rhat_below_1_01(regression_data):
    X, y = regression_data
    posterior = linear_model().fit(X, y, key=jax.random.key(1), method="nuts", num_chains=4,
                                   num_warmup=200, num_samples=1000)
    report = diagnose(posterior, warn=False)
    assert report.max_rhat <= 1.01, report.convergence
    assert report.min_ess_bulk > 400
    assert not any("R-hat" in message or "ESS" in message for message in report.warnings)
    idata = posterior.to_arviz(X, y)
    assert idata.sample_stats["diverging"].shape == (4, 1000)
    assert np.isfinite(az.loo(idata).elpd_loo)
