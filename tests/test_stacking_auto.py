"""bm.stack(cv="auto"), the default on training data: PSIS-LOO for fits where it is reliable
(enough draws, every Pareto k <= 0.7), 5-fold refits for the others, one set of weights from
the combined out-of-sample densities; which estimate each fit got is in ``info``.

The data are y = 2 x + 0.2 noise (80 rows). The fits are cheap: hand-built linear fits (a
K = 1 MDN without hidden layers, whose draws are set directly) and MAP fits of that model.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from _compilation import no_compilation

import bayes_mdn as bm
from bayes_mdn.priors import FanInNormal
from bayes_mdn.scaling import Standardizer
from bayes_mdn.stacking import AUTO_FOLDS, MIN_LOO_DRAWS

NUM_ROWS = 80
#: Cheap refits of the hand-built fits (method "ensemble"): 2 MAP fits of 200 steps.
CHEAP = {"num_members": 2, "num_steps": 200, "learning_rate": 0.05}


def linear_posterior(slopes, intercepts, scale: float) -> bm.Posterior:
    """A fit whose draw s predicts Normal(slopes[s] x + intercepts[s], scale) (P = 1)."""
    slopes = np.asarray(slopes, np.float64).reshape(-1)
    intercepts = np.broadcast_to(np.asarray(intercepts, np.float64), slopes.shape)
    S = slopes.size
    model = bm.MDN(num_components=1, hidden_sizes=(), family=bm.families.Normal(min_scale=0.0))
    draws = {"logits.kernel": np.zeros((1, S, 1, 1)), "logits.bias": np.zeros((1, S, 1)),
             "loc.kernel": slopes.reshape(1, S, 1, 1), "loc.bias": intercepts.reshape(1, S, 1),
             "scale.kernel": np.zeros((1, S, 1, 1)),
             "scale.bias": np.full((1, S, 1), np.log(np.expm1(scale)))}
    draws = {name: value.astype(np.float32) for name, value in draws.items()}
    identity = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, method="ensemble", draws=draws, standardizer=identity)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, size=(NUM_ROWS, 1))
    return X, 2.0 * X[:, 0] + 0.2 * rng.normal(size=NUM_ROWS)


@pytest.fixture(scope="module")
def fits(data):
    """"true": 200 draws tightly around the true line (PSIS-LOO reliable); "x-blind": a MAP
    fit whose prior (sd 1e-4) shrinks the slope to 0 (one draw: must be refitted);
    "spread": 60 draws with slopes from 0 to 4 (enough draws, but single rows dominate the
    importance ratios: Pareto k > 0.7)."""
    X, y = data
    rng = np.random.default_rng(1)
    blind = bm.MDN(num_components=1, hidden_sizes=(), prior=FanInNormal(1e-4)).fit(
        X, y, key=jax.random.key(1), method="map", num_steps=300, learning_rate=0.05)
    return {"true": linear_posterior(2.0 + 0.01 * rng.normal(size=200),
                                     0.01 * rng.normal(size=200), 0.2),
            "x-blind": blind,
            "spread": linear_posterior(np.linspace(0.0, 4.0, 60), 0.0, 0.2)}


def test_unreliable_fits_are_refitted_and_the_true_recipe_wins(data, fits):
    """"true" keeps PSIS-LOO, the one-draw MAP fit is refitted on 5 folds, and the weights
    from the combined densities go to the true recipe (> 0.95; the x-blind fit is about 2
    nats per row worse)."""
    X, y = data
    pair = {"true": fits["true"], "x-blind": fits["x-blind"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every estimate is reliable
        stacked = bm.stack(pair, X=X, y=y, key=jax.random.key(2))
    info = stacked.info
    assert info["source"] == "auto" and info["cv"] == AUTO_FOLDS
    assert info["estimate"] == {"true": "loo", "x-blind": "cv"}
    assert info["estimate_reason"]["x-blind"] == f"1 draws < {MIN_LOO_DRAWS}"
    assert info["estimate_reason"]["true"].startswith("200 draws, max Pareto k")
    assert set(info["max_pareto_k"]) == {"true"} and info["max_pareto_k"]["true"] <= 0.7
    assert info["num_draws"] == {"true": 200, "x-blind": 1}
    assert stacked.weight_of["true"] > 0.95
    assert info["elpd_per_point"]["true"] > info["elpd_per_point"]["x-blind"] + 1.0
    # The true line's LOO density is close to its in-sample one (200 tight draws).
    in_sample = np.mean(fits["true"].predictive(X).log_prob(y))
    assert abs(info["elpd_per_point"]["true"] - in_sample) < 0.05


def test_auto_refits_are_those_of_cv(monkeypatch, data, fits):
    """The refitted fit's out-of-fold densities are exactly those of cv=5 with the same key
    (same folds, same refit keys), and only that fit is refitted: 5 times, on 4/5 of the
    rows each."""
    X, y = data
    pair = {"true": fits["true"], "x-blind": fits["x-blind"]}
    calls = []
    original = bm.MDN.fit

    def recording(self, X_fit, y_fit, *, key, method, **options):
        calls.append((method, X_fit.shape[0]))
        return original(self, X_fit, y_fit, key=key, method=method, **options)

    monkeypatch.setattr(bm.MDN, "fit", recording)
    auto = bm.stack(pair, X=X, y=y, cv="auto", key=jax.random.key(3))
    assert calls == [("map", NUM_ROWS - NUM_ROWS // AUTO_FOLDS)] * AUTO_FOLDS
    full = bm.stack(pair, X=X, y=y, cv=AUTO_FOLDS, key=jax.random.key(3),
                    fit_options={"true": CHEAP})
    np.testing.assert_allclose(auto.info["elpd_per_point"]["x-blind"],
                               full.info["elpd_per_point"]["x-blind"], rtol=1e-6)


def test_bad_pareto_k_is_refitted(data, fits):
    """60 draws pass the draw count, but their Pareto k exceeds 0.7: refitted (with the
    given cheap options), while the reliable fit keeps LOO; both k are recorded."""
    X, y = data
    chosen = {"true": fits["true"], "spread": fits["spread"]}
    stacked = bm.stack(chosen, X=X, y=y, key=jax.random.key(4),
                       fit_options={"spread": CHEAP})
    info = stacked.info
    assert info["estimate"] == {"true": "loo", "spread": "cv"}
    assert info["max_pareto_k"]["spread"] > 0.7
    assert info["estimate_reason"]["spread"].startswith("max Pareto k")
    assert info["estimate_reason"]["spread"].endswith("> 0.7")
    # Refitted, the spread recipe learns the line: its out-of-fold density is close to the
    # true fit's LOO one (within 0.2 nats per row).
    assert abs(info["elpd_per_point"]["spread"] - info["elpd_per_point"]["true"]) < 0.2


def test_every_fit_reliable_needs_no_key_and_equals_loo(data, fits):
    """The default with X=, y=: when every fit's LOO is reliable nothing is refitted, no key
    is needed, and the weights are those of cv="loo"."""
    X, y = data
    rng = np.random.default_rng(5)
    pair = {"true": fits["true"],
            "flat": linear_posterior(1.0 + 0.01 * rng.normal(size=100), 0.0, 0.6)}
    stacked = bm.stack(pair, X=X, y=y)
    assert stacked.info["estimate"] == {"true": "loo", "flat": "loo"}
    assert "cv" not in stacked.info
    loo = bm.stack(pair, X=X, y=y, cv="loo")
    assert loo.info["source"] == "loo" and "estimate" not in loo.info
    np.testing.assert_allclose(stacked.weights, loo.weights)


def test_the_estimates_are_saved_and_loaded(tmp_path, data, fits):
    X, y = data
    stacked = bm.stack({"true": fits["true"], "x-blind": fits["x-blind"]}, X=X, y=y,
                       key=jax.random.key(6))
    path = tmp_path / "stacked.bmdn"
    stacked.save(path)
    loaded = bm.load(path)
    for name in ("source", "estimate", "estimate_reason", "max_pareto_k", "num_draws", "cv",
                 "elpd_per_point"):
        assert loaded.info[name] == stacked.info[name]
    np.testing.assert_array_equal(loaded.weights, stacked.weights)


# --------------------------------------------------------------------------- errors
def test_unreliable_loo_without_key_is_an_error(data, fits):
    """Known only once k is computed: a clear error naming the fit, its k and the cures."""
    X, y = data
    with pytest.raises(TypeError, match=r"PSIS-LOO is unreliable for 'spread' \(max Pareto k "
                                        r"[0-9.]+ > 0\.7\)\) needs `key` to refit 'spread' on 5 "
                                        r"folds.*cv=\"loo\""):
        bm.stack({"true": fits["true"], "spread": fits["spread"]}, X=X, y=y)


def _few_draws(num_draws: int = 1) -> bm.Posterior:
    return linear_posterior(np.full(num_draws, 2.0), 0.0, 0.2)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({}, TypeError, r"too few posterior draws for PSIS-LOO: 'few': 1 draws < 50\) needs "
                    r"`key` to refit 'few' on 5 folds"),
    ({"cv": "auto"}, TypeError, "needs `key`"),
    ({"cv": "bogus"}, ValueError, r"\"auto\" or \"loo\"; got 'bogus'"),
    ({"cv": "loo", "fit_options": {"few": {}}}, ValueError, "leave them out"),
    ({"key": jax.random.key(0), "fit_options": {"other": {}}}, ValueError,
     r"not stacked: \['other'\]"),
    ({"key": jax.random.key(0), "fit_options": {"few": 3}}, TypeError,
     r"`fit_options\['few'\]` must be a dict"),
    ({"key": 3}, TypeError, r"`key` must be a JAX PRNG key, not the integer 3"),
])
def test_auto_argument_errors_before_any_compilation(kwargs, error, match):
    fits = {"few": _few_draws(), "many": _few_draws(MIN_LOO_DRAWS)}
    with no_compilation(), pytest.raises(error, match=match):
        bm.stack(fits, X=np.zeros((20, 1)), y=np.zeros(20), **kwargs)


def test_a_bad_key_is_refused_even_when_nothing_is_refitted():
    many = {"a": _few_draws(MIN_LOO_DRAWS), "b": _few_draws(MIN_LOO_DRAWS)}
    with no_compilation(), pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key"):
        bm.stack(many, X=np.zeros((20, 1)), y=np.zeros(20), key=3)


def test_auto_checks_the_refits_before_any_fit(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("stack fitted before validating its arguments")

    monkeypatch.setattr(bm.MDN, "fit", no_fit)
    fits = {"few": _few_draws(), "many": _few_draws(MIN_LOO_DRAWS)}
    key = jax.random.key(0)
    with no_compilation():
        with pytest.raises(ValueError, match="at least 10 rows"):
            bm.stack(fits, X=np.zeros((9, 1)), y=np.zeros(9), key=key)
        handmade = {"many": fits["many"], "few": bm.Posterior(
            model=fits["few"].model, method="my-sampler", draws=dict(fits["few"].draws),
            standardizer=fits["few"].standardizer)}
        with pytest.raises(ValueError, match=r"'few' has method 'my-sampler', which MDN\.fit "
                                             "does not know"):
            bm.stack(handmade, X=np.zeros((20, 1)), y=np.zeros(20), key=key)
        with pytest.raises(ValueError, match="pass X=, y="):
            bm.stack(fits, np.zeros((20, 1)), np.zeros(20), cv="auto", key=key)
        with pytest.raises(ValueError, match="leave them out"):
            bm.stack(fits, np.zeros((20, 1)), np.zeros(20), fit_options={"few": {}})


def test_nuts_refits_start_from_map_fits():
    """A NUTS fit started from an ensemble records init="ensemble", which MDN.fit cannot
    take: its refits start from init="auto" (one MAP fit per chain) instead."""
    from bayes_mdn.stacking import _refit_options

    post = _few_draws(MIN_LOO_DRAWS)
    nuts = bm.Posterior(model=post.model, method="nuts", draws=dict(post.draws),
                        standardizer=post.standardizer,
                        info={"init": "ensemble", "num_samples": 50, "num_chains": 1})
    options = _refit_options(nuts, None)
    assert options["init"] == "auto" and options["num_samples"] == 50
    assert _refit_options(nuts, {"num_chains": 2}) == {"num_chains": 2}
