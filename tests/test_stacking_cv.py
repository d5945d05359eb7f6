"""bm.stack: cross-validated weights (``cv=``), the PSIS-LOO warning, and the Dirichlet prior
on the weights (``concentration=``).

The cv members are real, cheap recipes: a K = 1 MDN without hidden layers (a linear-Gaussian
model) fitted by MAP, once with a sensible prior and once with a prior so tight that the
slope is shrunk to zero (a fit that ignores x).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import optimize

import bayes_mdn as bm
from bayes_mdn.diagnostics import ConvergenceWarning
from bayes_mdn.priors import FanInNormal
from bayes_mdn.scaling import Standardizer
from bayes_mdn.stacking import stacking_weights

NUM_ROWS, FOLDS = 80, 4


def constant_posterior(loc: float, scale: float, *, num_draws: int = 1, spread: float = 0.0,
                       method: str | None = None) -> bm.Posterior:
    """A fit whose draw s predicts Normal(loc + spread * s, scale) at every input (P = 1)."""
    model = bm.MDN(num_components=1, hidden_sizes=(), family=bm.families.Normal(min_scale=0.0))
    S = num_draws
    draws = {"logits.kernel": np.zeros((1, S, 1, 1)), "logits.bias": np.zeros((1, S, 1)),
             "loc.kernel": np.zeros((1, S, 1, 1)),
             "loc.bias": (loc + spread * np.arange(S)[:, None])[None],
             "scale.kernel": np.zeros((1, S, 1, 1)),
             "scale.bias": np.full((1, S, 1), np.log(np.expm1(scale)))}
    draws = {name: value.astype(np.float32) for name, value in draws.items()}
    identity = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, draws=draws, standardizer=identity,
                        method=method or ("ensemble" if S > 1 else "map"))


@pytest.fixture(scope="module")
def linear_data():
    """y = 2 x + 0.2 noise: the x-blind fit is off by about 2 nats per row."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, size=(NUM_ROWS, 1))
    y = 2.0 * X[:, 0] + 0.2 * rng.normal(size=NUM_ROWS)
    return X, y


@pytest.fixture(scope="module")
def linear_fits(linear_data):
    X, y = linear_data

    def fit(prior_scale: float) -> bm.Posterior:
        model = bm.MDN(num_components=1, hidden_sizes=(), prior=FanInNormal(prior_scale))
        return model.fit(X, y, key=jax.random.key(1), method="map", num_steps=300,
                         learning_rate=0.05)

    # FanInNormal(1e-4): the slope's prior sd is 1e-4, so MAP predicts y's marginal.
    return {"true": fit(1.0), "x-blind": fit(1e-4)}


# --------------------------------------------------------------------------- cv weights
def test_cv_weights_find_the_true_recipe(linear_data, linear_fits):
    """Out-of-fold densities differ by about 2 nats per row, so the stacking optimum puts
    (almost) all weight on the true recipe: asserted > 0.95."""
    X, y = linear_data
    stacked = bm.stack(linear_fits, X=X, y=y, cv=FOLDS, key=jax.random.key(2))
    assert stacked.weight_of["true"] > 0.95
    assert stacked.info["source"] == "cv" and stacked.info["cv"] == FOLDS
    assert stacked.info["num_points"] == NUM_ROWS
    elpd = stacked.info["elpd_per_point"]
    assert elpd["true"] > elpd["x-blind"] + 1.0
    # The weights are applied to the full-data fits themselves.
    assert stacked.members[0] is linear_fits["true"]


def test_cv_refits_each_recipe_on_the_other_folds(monkeypatch, linear_data, linear_fits):
    """Every member is refitted once per fold with its own method and recorded options, on
    the rows outside the fold, and every row is scored exactly once."""
    X, y = linear_data
    calls = []
    original = bm.MDN.fit

    def recording(self, X_fit, y_fit, *, key, method, **options):
        calls.append((self.prior, method, options, X_fit.shape[0]))
        return original(self, X_fit, y_fit, key=key, method=method, **options)

    monkeypatch.setattr(bm.MDN, "fit", recording)
    stacked = bm.stack(linear_fits, X=X, y=y, cv=FOLDS, key=jax.random.key(3),
                       fit_options={"x-blind": {"num_steps": 50, "learning_rate": 0.05}})
    assert len(calls) == FOLDS * 2
    assert {call[3] for call in calls} == {NUM_ROWS - NUM_ROWS // FOLDS}
    true_calls = [call for call in calls if call[0] == linear_fits["true"].model.prior]
    assert len(true_calls) == FOLDS
    assert all(call[1] == "map" and call[2]["num_steps"] == 300 for call in true_calls)
    blind_calls = [call for call in calls if call not in true_calls]
    assert all(call[2] == {"num_steps": 50, "learning_rate": 0.05} for call in blind_calls)
    assert np.isfinite(list(stacked.info["elpd_per_point"].values())).all()


# --------------------------------------------------------------------------- LOO warning
def test_loo_warns_when_pareto_k_is_high():
    """Four draws whose locations differ by 1.5 scales: single rows dominate the importance
    ratios, so PSIS fits k > 0.7 and stack says so, with advice."""
    fits = {"spread": constant_posterior(0.0, 0.5, num_draws=4, spread=1.5),
            "other": constant_posterior(1.0, 1.0, num_draws=4, spread=1.5)}
    y = np.random.default_rng(4).normal(2.0, 1.5, size=40)
    with pytest.warns(ConvergenceWarning, match=r"Pareto k > 0\.7.*cv=\"auto\""):
        stacked = bm.stack(fits, X=np.zeros((40, 1)), y=y, cv="loo")
    assert max(stacked.info["max_pareto_k"].values()) > 0.7


# --------------------------------------------------------------------------- Dirichlet prior
def test_concentration_maximises_the_penalised_objective():
    rng = np.random.default_rng(5)
    log_density = rng.normal(size=(30, 3)) + np.array([0.5, 0.0, -0.3])
    a = 3.0

    def negative(theta):
        log_w = theta - np.logaddexp.reduce(theta)
        values = np.logaddexp.reduce(log_density + log_w, axis=1)
        return -(values.sum() + (a - 1.0) * log_w.sum())

    best = optimize.minimize(negative, np.zeros(3), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000})
    expected = np.exp(best.x - np.logaddexp.reduce(best.x))
    found = stacking_weights(log_density, concentration=a)
    np.testing.assert_allclose(found, expected, atol=1e-4)
    assert np.all(found > 0)
    np.testing.assert_allclose(stacking_weights(log_density, concentration=1.0),
                               stacking_weights(log_density))
    # A strong prior pulls the weights to uniform (within 1 % for 1e6 pseudo-points).
    np.testing.assert_allclose(stacking_weights(log_density, concentration=1e6), 1 / 3,
                               atol=0.01)


def test_stack_records_the_concentration(linear_data, linear_fits):
    X, y = linear_data
    plain = bm.stack(linear_fits, X, y)
    shrunk = bm.stack(linear_fits, X, y, concentration=5.0)
    assert shrunk.info["concentration"] == 5.0 and "concentration" not in plain.info
    assert shrunk.weight_of["x-blind"] > plain.weight_of["x-blind"]


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"cv": 1, "key": jax.random.key(0)}, ValueError, "integer >= 2"),
    ({"cv": True, "key": jax.random.key(0)}, ValueError, "integer >= 2"),
    ({"cv": 2.5, "key": jax.random.key(0)}, ValueError, "integer >= 2"),
    ({"cv": 5}, TypeError, "needs `key`"),
    ({"cv": 5, "key": 3}, TypeError, "key"),
    ({"cv": 5, "key": jax.random.key(0), "fit_options": [1]}, TypeError,
     "dict of fit name"),
    ({"cv": 5, "key": jax.random.key(0), "fit_options": {"c": {}}}, ValueError,
     r"not stacked: \['c'\]"),
    ({"cv": 5, "key": jax.random.key(0), "fit_options": {"a": 3}}, TypeError,
     r"`fit_options\['a'\]` must be a dict"),
    ({"fit_options": {"a": {}}, "cv": "loo"}, ValueError, "leave them out with held-out"),
    ({"cv": "5", "key": jax.random.key(0)}, ValueError, r"\"auto\" or \"loo\"; got '5'"),
    ({"concentration": 0.5}, ValueError, "`concentration` must be a finite number >= 1"),
    ({"concentration": "2"}, ValueError, "`concentration` must be a finite number >= 1"),
])
def test_cv_argument_errors(kwargs, error, match):
    fits = {"a": constant_posterior(0.0, 1.0, num_draws=2), "b": constant_posterior(1.0, 1.0)}
    with pytest.raises(error, match=match):
        bm.stack(fits, X=np.zeros((20, 1)), y=np.zeros(20), **kwargs)


def test_cv_errors_before_any_fit(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("stack fitted before validating its arguments")

    monkeypatch.setattr(bm.MDN, "fit", no_fit)
    fits = {"a": constant_posterior(0.0, 1.0), "b": constant_posterior(1.0, 1.0)}
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 10 rows"):
        bm.stack(fits, X=np.zeros((9, 1)), y=np.zeros(9), cv=5, key=key)
    with pytest.raises(ValueError, match="pass X=, y="):
        bm.stack(fits, np.zeros((20, 1)), np.zeros(20), cv=5, key=key)
    with pytest.raises(ValueError, match="`weights` or `cv`"):
        bm.stack(fits, weights=[0.5, 0.5], cv=5, key=key)
    handmade = {"a": fits["a"], "b": constant_posterior(1.0, 1.0, method="my-sampler")}
    with pytest.raises(ValueError, match=r"'b' has method 'my-sampler', which MDN\.fit does not"):
        bm.stack(handmade, X=np.zeros((20, 1)), y=np.zeros(20), cv=5, key=key)
    with pytest.raises(ValueError, match=r"2 features|2 columns"):
        bm.stack(fits, X=np.zeros((20, 2)), y=np.zeros(20), cv=5, key=key)


def test_stacking_weights_refuses_a_bad_concentration():
    with pytest.raises(ValueError, match="`concentration` must be a finite number >= 1"):
        stacking_weights(np.zeros((3, 2)), concentration=0.0)
    with pytest.raises(ValueError, match="`concentration` must be a finite number >= 1"):
        stacking_weights(np.zeros((3, 2)), concentration=float("inf"))
