"""``refit``: after validation rows choose when to stop, fit every row again for the chosen
number of steps (for ensembles, where the ensemble's validation curve peaked), the step count
tuned on held-out rows and the returned fit trained on all of them."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import bayes_mdn as bm

MODEL = bm.MDN(num_components=2, hidden_sizes=(12,), prior=bm.priors.FanInNormal(10.0))
OPTIONS = dict(num_steps=1500, num_evaluations=30, learning_rate=0.03, patience=4)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(80, 1))
    return X, np.sin(2.0 * X[:, 0]) + 0.3 * rng.normal(size=80)


def _assert_same_draws(a: dict, b: dict) -> None:
    for name, value in a.items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(b[name]), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_map_refit_equals_a_plain_fit_on_every_row_for_the_chosen_steps(data):
    X, y = data
    refitted = MODEL.fit(X, y, key=jax.random.key(0), validation=0.25, **OPTIONS)
    history = refitted.history
    best = int(history["best_step"])
    assert refitted.info["refit"] is True
    assert 0 < best < int(history["stopped_step"]) < OPTIONS["num_steps"]
    assert int(history["refit_step"]) == best and history["eval_step"][-1] == best
    # The refit trained on every row; the validation pass on 60 of them.
    assert refitted.info["num_rows"] == 80
    assert refitted.info["validation_pass_num_rows"] == 60
    # The validation curve is kept beside the steps it was measured at.
    assert (history["validation_log_likelihood"].shape
            == history["validation_pass_eval_step"].shape)
    assert history["validation_pass_eval_step"][-1] == int(history["stopped_step"])
    # Same key, same start, same schedule: a fit of all 80 rows for `best` steps.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.ConvergenceWarning)
        plain = MODEL.fit(X, y, key=jax.random.key(0), num_steps=best,
                          learning_rate=OPTIONS["learning_rate"])
    _assert_same_draws(refitted.draws, plain.draws)


def test_refit_false_keeps_the_best_iterate_of_the_validation_pass(data):
    X, y = data
    kept = MODEL.fit(X, y, key=jax.random.key(0), validation=0.25, refit=False, **OPTIONS)
    assert "refit" not in kept.info and "refit_step" not in kept.history
    assert kept.info["num_rows"] == 60


def test_ensemble_refit_stops_every_member_where_the_ensemble_curve_peaked(data):
    X, y = data
    refitted = MODEL.fit(X, y, key=jax.random.key(1), method="ensemble", num_members=3,
                         validation=0.25, **OPTIONS)
    history = refitted.history
    assert np.asarray(history["best_step"]).shape == (3,)
    curve, steps = history["validation_log_likelihood"], history["validation_pass_eval_step"]
    peak = int(steps[int(np.argmax(curve))])
    np.testing.assert_array_equal(history["refit_step"], [peak] * 3)
    assert history["eval_step"][-1] == peak
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.ConvergenceWarning)
        plain = MODEL.fit(X, y, key=jax.random.key(1), method="ensemble", num_members=3,
                          num_steps=peak, learning_rate=OPTIONS["learning_rate"])
    _assert_same_draws(refitted.draws, plain.draws)


def test_separate_validation_rows_are_not_trained_on_unless_asked(data):
    X, y = data
    X_val, y_val = X[:20] + 0.01, y[:20]
    kept = MODEL.fit(X, y, key=jax.random.key(0), validation=(X_val, y_val), **OPTIONS)
    assert "refit" not in kept.info and kept.info["num_rows"] == 80
    refitted = MODEL.fit(X, y, key=jax.random.key(0), validation=(X_val, y_val), refit=True,
                         **OPTIONS)
    assert refitted.info["refit"] is True and refitted.info["num_rows"] == 100


def test_svi_refit(data):
    X, y = data
    posterior = MODEL.fit(X, y, key=jax.random.key(0), method="svi", num_steps=300,
                          num_evaluations=10, validation=0.2, patience=2, num_draws=8,
                          num_eval_draws=4)
    assert posterior.info["refit"] is True and posterior.info["num_rows"] == 80
    assert int(posterior.history["refit_step"]) == int(posterior.history["best_step"])
    assert "validation_pass_elbo" in posterior.history


def test_refit_is_ignored_without_validation(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.ConvergenceWarning)
        posterior = MODEL.fit(X, y, key=jax.random.key(0), num_steps=50, refit=True)
    assert "refit" not in posterior.info


@pytest.mark.parametrize("refit", ["yes", 1, 0.5])
def test_bad_refit(data, refit):
    X, y = data
    with pytest.raises(TypeError, match=r"`refit` must be True, False or None .* got "):
        MODEL.fit(X, y, key=jax.random.key(0), validation=0.2, refit=refit)
