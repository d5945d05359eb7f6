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


def coefficient_draws(posterior):
    """beta = [kernel, bias] per draw, shape (C, S, 4)."""
    kernel = np.asarray(posterior.draws["loc.kernel"])[..., :, 0]
    bias = np.asarray(posterior.draws["loc.bias"])
    return np.concatenate([kernel, bias], axis=-1).astype(np.float64)


def test_svi_full_rank_guide_matches_conjugate_posterior(regression_data):
    X, y = regression_data
    posterior = linear_model().fit(X, y, key=jax.random.key(1), method="svi", guide="mvn",
                                   num_steps=6000, learning_rate=0.01, num_particles=4,
                                   ema_decay=0.999, num_draws=20_000)
    mean, covariance = closed_form(X, y)
    beta = coefficient_draws(posterior).reshape(-1, 4)
    # Tolerance from the issue: the Gaussian family holds the exact posterior, so only
    # optimisation noise (averaged away) and 20 000-draw Monte Carlo error remain.
    np.testing.assert_allclose(beta.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(beta.T), covariance, atol=0.05)
    assert posterior.history["elbo"].shape == (6000,)


def test_laplace_is_exact_for_a_gaussian_posterior(regression_data):
    X, y = regression_data
    map_fit = linear_model().fit(X, y, key=jax.random.key(0), num_steps=3000,
                                 learning_rate=0.02)
    posterior = linear_model().fit(X, y, key=jax.random.key(2), method="laplace",
                                   init=map_fit, num_draws=40_000)
    mean, covariance = closed_form(X, y)
    beta = coefficient_draws(posterior).reshape(-1, 4)
    # The log posterior is exactly quadratic: the Hessian is the posterior precision.
    # Errors: Monte Carlo, sd/sqrt(40 000) < 0.005 here.
    np.testing.assert_allclose(beta.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(np.cov(beta.T), covariance, atol=0.01)
    # The K = 1 logits head does not enter the likelihood: its curvature is the prior's.
    np.testing.assert_allclose(posterior.info["hessian_min_eigenvalue"], 1 / TAU**2, rtol=1e-3)


def test_laplace_well_determined_subspace_matches_the_closed_form():
    # Two nearly collinear features: their difference is barely seen by the data, so its
    # likelihood curvature is far below the prior's (a poorly determined direction).
    rng = np.random.default_rng(4)
    first = rng.normal(size=40)
    X = np.column_stack([first, first + 0.01 * rng.normal(size=40), rng.normal(size=40)])
    y = (X @ np.array([0.5, 0.5, -1.0]) + SIGMA * rng.normal(size=40))[:, None]
    mean, covariance = closed_form(X, y)
    # Generalised eigenvectors of the data and prior curvatures, in prior-whitened units.
    data_curvature = np.linalg.inv(covariance) - np.eye(4) / TAU**2
    ratio, vectors = np.linalg.eigh(TAU**2 * data_curvature)
    kept = ratio >= 1.0
    assert kept.sum() == 3  # the collinear difference is dropped
    subspace_covariance = TAU**2 * (vectors[:, kept] / (1 + ratio[kept])) @ vectors[:, kept].T

    model = linear_model()
    map_fit = model.fit(X, y, key=jax.random.key(0), num_steps=3000, learning_rate=0.02)
    fits = {subspace: model.fit(X, y, key=jax.random.key(2), method="laplace", init=map_fit,
                                num_draws=40_000, subspace=subspace)
            for subspace in ("well_determined", "full")}
    for subspace, expected in [("well_determined", subspace_covariance), ("full", covariance)]:
        beta = coefficient_draws(fits[subspace]).reshape(-1, 4)
        # Monte Carlo error of a (co)variance entry: about 2.5 sd^2 / sqrt(40 000) < 0.03.
        np.testing.assert_allclose(beta.mean(0), mean, atol=0.02, err_msg=subspace)
        np.testing.assert_allclose(np.cov(beta.T), expected, atol=0.03, err_msg=subspace)
        info = fits[subspace].info
        assert info["subspace"] == subspace
        # The logits head (no curvature from the data) is never well determined.
        assert info["well_determined_directions"] == 3 and info["num_parameters"] == 8
        gamma = np.sum(ratio / (1 + ratio))  # MacKay's effective number of parameters
        np.testing.assert_allclose(info["effective_num_parameters"], gamma, rtol=1e-3)
    # Outside the subspace the draws stay at the MAP values exactly: here the logits.
    logits = np.asarray(fits["well_determined"].draws["logits.kernel"])
    np.testing.assert_allclose(logits, np.asarray(map_fit.draws["logits.kernel"]).reshape(
        1, 1, 3, 1).repeat(40_000, axis=1), atol=1e-5)


def test_nuts_posterior_mean_within_four_mcse(regression_data):
    X, y = regression_data
    posterior = linear_model().fit(X, y, key=jax.random.key(3), method="nuts", num_chains=2,
                                   num_warmup=300, num_samples=1000)
    mean, covariance = closed_form(X, y)
    beta = coefficient_draws(posterior)  # (C, S, 4)
    import arviz as az

    mcse = np.asarray(az.mcse(az.convert_to_dataset({"beta": beta}))["beta"])
    assert np.all(np.abs(beta.reshape(-1, 4).mean(0) - mean) <= 4 * mcse)
    np.testing.assert_allclose(np.cov(beta.reshape(-1, 4).T), covariance, atol=0.05)
    assert posterior.sample_stats["diverging"].shape == (2, 1000)
    assert posterior.summary()["num_divergent"] == 0


@pytest.mark.slow
def test_minibatch_svi_scales_the_likelihood(regression_data):
    """With subsample_size the likelihood must be scaled by N / batch: a guide trained on
    minibatches of 10 rows recovers the full-data posterior, not a 6x wider one."""
    X, y = regression_data
    posterior = linear_model().fit(X, y, key=jax.random.key(4), method="svi", guide="mvn",
                                   subsample_size=10, num_steps=20_000, learning_rate=0.005,
                                   ema_decay=0.9995, num_draws=20_000)
    mean, covariance = closed_form(X, y)
    beta = coefficient_draws(posterior).reshape(-1, 4)
    np.testing.assert_allclose(beta.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(beta.T))), np.sqrt(np.diag(covariance)),
                               rtol=0.25)
