"""Laplace's linearised ("GLM") predictive and its Fisher curvature."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from test_conjugate import closed_form, coefficient_draws, linear_model

import bayes_mdn as bm
from bayes_mdn.model import LINEARISED_PREFIX


@pytest.fixture(scope="module")
def seed_data():
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=600,
                                                    train_fraction=0.5)
    return X, y, X_test[:100], y_test[:100]


def _laplace(model, X, y, **options):
    map_fit = model.fit(X, y, key=jax.random.key(1), num_steps=300)
    return model.fit(X, y, key=jax.random.key(2), method="laplace", init=map_fit,
                     hessian="fisher", num_draws=64, **options)


def test_linearisation_is_exact_for_a_network_linear_in_its_weights(seed_data):
    """Without hidden layers every head is linear in the weights, so the linearised and
    the sampled predictive are the same distribution: equal log densities draw by draw."""
    X, y, X_test, y_test = seed_data
    posterior = _laplace(bm.MDN(num_components=3, hidden_sizes=()), X, y)
    assert posterior.linearised_at is not None
    sampled = dataclasses.replace(posterior, linearised_at=None)
    np.testing.assert_allclose(posterior.predictive(X_test).log_prob(y_test),
                               sampled.predictive(X_test).log_prob(y_test), atol=2e-4)


def test_linearised_predictive_differs_from_the_sampled_one_with_hidden_layers(seed_data):
    X, y, X_test, y_test = seed_data
    model = bm.MDN(num_components=3, hidden_sizes=(8,))
    linearised = _laplace(model, X, y)
    sampled = _laplace(model, X, y, predictive="sampled")
    assert sampled.linearised_at is None and sampled.info["predictive"] == "sampled"
    # Same Gaussian in weight space (same key), different predictive.
    for name, value in linearised.draws.items():
        np.testing.assert_array_equal(value, sampled.draws[name])
    gap = np.abs(linearised.predictive(X_test).log_prob(y_test)
                 - sampled.predictive(X_test).log_prob(y_test))
    assert gap.max() > 1e-3
    # Draws at the centre itself reproduce the MAP network exactly.
    centre = {name: value[None, None] for name, value in linearised.linearised_at.items()}
    at_centre = dataclasses.replace(linearised, draws=centre)
    plain = dataclasses.replace(at_centre, linearised_at=None)
    np.testing.assert_allclose(at_centre.predictive(X_test).log_prob(y_test),
                               plain.predictive(X_test).log_prob(y_test), atol=1e-5)
    # The record of the fit scores the linearised predictive.
    draws = linearised.prediction_draws()
    assert {name for name in draws if name.startswith(LINEARISED_PREFIX)} == {
        LINEARISED_PREFIX + name for name in linearised.linearised_at}


def test_linearised_posterior_round_trips_and_thins(seed_data, tmp_path):
    X, y, X_test, y_test = seed_data
    posterior = _laplace(bm.MDN(num_components=2, hidden_sizes=(6,)), X, y)
    path = tmp_path / "laplace.bmdn"
    posterior.save(path)
    loaded = bm.load(path)
    assert set(loaded.linearised_at) == set(posterior.linearised_at)
    np.testing.assert_array_equal(loaded.predictive(X_test).log_prob(y_test),
                                  posterior.predictive(X_test).log_prob(y_test))
    thinned = posterior.thin(num_draws=8)
    assert thinned.linearised_at is posterior.linearised_at or set(thinned.linearised_at) == set(
        posterior.linearised_at)
    assert np.isfinite(thinned.predictive(X_test).log_prob(y_test)).all()


def test_linearised_at_is_checked():
    posterior = bm.MDN(num_components=2, hidden_sizes=(4,)).fit(
        np.linspace(-1, 1, 20)[:, None], np.linspace(0, 1, 20), key=jax.random.key(0),
        num_steps=5)
    with pytest.raises(ValueError, match="names sites that are not drawn"):
        dataclasses.replace(posterior, linearised_at={"nope": np.zeros(3)})
    name, value = next(iter(posterior.draws.items()))
    with pytest.raises(ValueError, match="has shape"):
        dataclasses.replace(posterior, linearised_at={name: np.zeros((*value.shape[2:], 2))})


def test_fisher_curvature_matches_the_conjugate_posterior():
    """For a fixed-scale Gaussian likelihood the Fisher information equals the Hessian of
    the negative log-likelihood (X'X / s^2) whatever y is, so Laplace with the Fisher
    recovers the conjugate posterior covariance, up to the Monte Carlo error of the
    replicates (8 x 60 rows: about 7 % per entry) and of the draws. (The empirical Fisher
    weighs row n by its squared MAP residual / s^2 instead: 0.35 off here.)"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 5.0, -2.0])
    y = (X @ np.array([0.8, -0.3, 1.2]) + 2.0 + 0.7 * rng.normal(size=60))[:, None]
    map_fit = linear_model().fit(X, y, key=jax.random.key(0), num_steps=3000,
                                 learning_rate=0.02)
    posterior = linear_model().fit(X, y, key=jax.random.key(2), method="laplace",
                                   init=map_fit, hessian="fisher", num_draws=20_000)
    mean, covariance = closed_form(X, y)
    beta = coefficient_draws(posterior).reshape(-1, 4)
    np.testing.assert_allclose(beta.mean(0), mean, atol=0.01)
    error = np.linalg.norm(np.cov(beta.T) - covariance) / np.linalg.norm(covariance)
    assert error < 0.15, error
