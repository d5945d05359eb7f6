"""K = 1, no hidden layer, fixed-scale Normal: conjugate Bayesian linear regression.

In standardised units the model is ``y_s = [x_s, 1] beta + eps``, ``eps ~ N(0, s^2)`` with
``s = sigma / sd(y)`` and prior ``beta ~ N(0, tau^2 I)``, so the posterior of beta is Normal
with covariance ``(A'A / s^2 + I / tau^2)^-1`` and mean ``cov A' y_s / s^2``; MAP is that mean.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayes_mdn as bm

SIGMA, TAU = 0.7, 1.5


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 5.0, -2.0])
    y = X @ np.array([0.8, -0.3, 1.2]) + 2.0 + SIGMA * rng.normal(size=60)
    return X, y[:, None]


def closed_form(X, y):
    x_s = (X - X.mean(0)) / X.std(0)
    y_s = (y - y.mean(0)) / y.std(0)
    s = SIGMA / y.std()
    design = np.column_stack([x_s, np.ones(len(X))])
    precision = design.T @ design / s**2 + np.eye(design.shape[1]) / TAU**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y_s[:, 0] / s**2
    return mean, covariance


def linear_model():
    return bm.MDN(num_components=1, hidden_sizes=(),
                  family=bm.families.Normal(fixed_scale=SIGMA), prior=bm.priors.Normal(TAU))


def test_map_equals_conjugate_posterior_mean(regression_data):
    X, y = regression_data
    posterior = linear_model().fit(X, y, key=jax.random.key(0), num_steps=3000,
                                   learning_rate=0.02)
    mean, _ = closed_form(X, y)
    kernel = np.asarray(posterior.draws["loc.kernel"])[0, 0, :, 0]
    bias = np.asarray(posterior.draws["loc.bias"])[0, 0, 0]
    # float32 Adam converges to ~1e-5 here; 1e-3 leaves room for platform differences.
    np.testing.assert_allclose(kernel, mean[:3], atol=1e-3)
    np.testing.assert_allclose(bias, mean[3], atol=1e-3)

    # The same in function space and original units: predictive mean and variance.
    X_new = np.array([[0.0, 5.0, -2.0], [1.0, 2.0, -1.5]])
    x_s = (X_new - X.mean(0)) / X.std(0)
    expected_mean = (np.column_stack([x_s, np.ones(2)]) @ mean) * y.std() + y.mean()
    predictive = posterior.predictive(X_new)
    np.testing.assert_allclose(predictive.mean()[:, 0], expected_mean, atol=2e-3)
    np.testing.assert_allclose(predictive.variance()[:, 0], SIGMA**2, rtol=1e-5)
    # log_prob is reported in original units: a Normal(mean, SIGMA) density.
    y_new = expected_mean[:, None] + 0.3
    expected_lp = -0.5 * np.log(2 * np.pi * SIGMA**2) - 0.5 * (0.3 / SIGMA) ** 2
    np.testing.assert_allclose(predictive.log_prob(y_new), expected_lp, atol=2e-3)
