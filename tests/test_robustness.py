"""Numerical robustness of fitting and prediction.

* Units do not matter: targets scaled by 1e-6 or 1e6, or shifted by 1e6 or 1e8 (beyond
  float32 resolution), give the same test log-likelihood once the log-Jacobian is added
  (log-lik + log(scale)), within 0.01 nats; targets scaled by 1e-20 or 1e20 give the same
  means, variances and quantiles once rescaled; rescaled or shifted inputs give the same
  log-likelihood.
* Awkward data fit without NaN: duplicated rows, constant features, heavy outliers, huge or
  tiny magnitudes, K = 100 components. A constant target is ill-posed (a point mass has no
  density) and is refused with a clear error.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.scaling import Standardizer

NUM_STEPS = 300


@pytest.fixture(scope="module")
def seed_data():
    """The seed's inverse problem in float64 (so that shifting by 1e6 loses nothing)."""
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=1200,
                                                    train_fraction=1 / 3)
    return tuple(np.asarray(a, np.float64) for a in (X, y, X_test, y_test))


@pytest.fixture(scope="module")
def seed_model():
    return bm.MDN(num_components=5, hidden_sizes=(16,))


def _test_ll(model, X, y, X_test, y_test):
    posterior = model.fit(X, y, key=jax.random.key(1), num_steps=NUM_STEPS)
    return float(np.mean(posterior.predictive(X_test).log_prob(y_test)))


@pytest.fixture(scope="module")
def baseline_ll(seed_data, seed_model):
    return _test_ll(seed_model, *seed_data)


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize(("scale", "shift"), [(1e-6, 0.0), (1e6, 0.0), (1.0, 1e6),
                                              (1e6, 1e9)])
def test_target_units_do_not_change_the_log_likelihood(seed_data, seed_model, baseline_ll,
                                                       scale, shift):
    X, y, X_test, y_test = seed_data
    rescaled = _test_ll(seed_model, X, scale * y + shift, X_test, scale * y_test + shift)
    # p_scaled(a y + b | x) = p(y | x) / a: add log(a) back.
    gap = rescaled + np.log(scale) - baseline_ll
    assert np.isfinite(rescaled)
    assert abs(gap) < 0.01, gap


@pytest.mark.parametrize(("scale", "shift"), [(1e-6, 0.0), (1e6, 1e6)])
def test_input_units_do_not_change_the_log_likelihood(seed_data, seed_model, baseline_ll,
                                                      scale, shift):
    X, y, X_test, y_test = seed_data
    rescaled = _test_ll(seed_model, scale * X + shift, y, scale * X_test + shift, y_test)
    assert abs(rescaled - baseline_ll) < 0.01, rescaled - baseline_ll


def test_target_offset_far_beyond_float32_resolution(seed_data, seed_model, baseline_ll):
    # An offset of 1e8 over a spread of ~6 is beyond float32 resolution: the predictive
    # evaluates in standardised units and converts on the host in float64.
    X, y, X_test, y_test = seed_data
    shifted = _test_ll(seed_model, X, y + 1e8, X_test, y_test + 1e8)
    assert abs(shifted - baseline_ll) < 0.01


# --------------------------------------------------------------------------- awkward data
@pytest.fixture(scope="module")
def awkward_model():
    return bm.MDN(num_components=3, hidden_sizes=(8,))


def _data(seed: int = 0, num_rows: int = 200):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_rows, 2))
    return X, np.sin(X[:, 0]) + 0.1 * rng.normal(size=num_rows)


def _assert_finite_fit(posterior: bm.Posterior, X: np.ndarray, y: np.ndarray) -> None:
    assert np.all(np.isfinite(posterior.history["loss"]))
    for name, value in posterior.draws.items():
        assert np.all(np.isfinite(np.asarray(value))), name
    predictive = posterior.predictive(X[:40])
    outputs = {"log_prob": predictive.log_prob(y[:40]), "cdf": predictive.cdf(y[:40]),
               "mean": predictive.mean(), "variance": predictive.variance(),
               "quantiles": predictive.quantiles([0.05, 0.5, 0.95]),
               "sample": predictive.sample(jax.random.key(2), num_samples=3)}
    for name, value in outputs.items():
        assert np.all(np.isfinite(value)), name


def _duplicated_rows():
    X, y = _data()
    return np.repeat(X[:5], 40, axis=0), np.repeat(y[:5], 40)


def _constant_feature():
    X, y = _data()
    X[:, 1] = 3.0
    return X, y


def _all_features_constant():
    X, y = _data()
    return np.full_like(X, -7.5), y


def _heavy_outliers():
    X, y = _data()
    y[::20] *= 1e4  # 5 % of the targets, four orders of magnitude off
    return X, y


def _cauchy_targets():
    X, _ = _data()
    return X, np.random.default_rng(1).standard_cauchy(X.shape[0])


def _huge_inputs():
    X, y = _data()
    return X * 1e30, y


def _huge_targets():
    X, y = _data()
    return X, y * 1e15


def _tiny_targets():
    X, y = _data()
    return X, y * 1e-30


def _nearly_constant_target():
    X, _ = _data()
    return X, 4.2 + 1e-9 * np.random.default_rng(2).normal(size=X.shape[0])


@pytest.mark.parametrize("make", [_duplicated_rows, _constant_feature, _all_features_constant,
                                  _heavy_outliers, _cauchy_targets, _huge_inputs,
                                  _huge_targets, _tiny_targets, _nearly_constant_target],
                         ids=lambda make: make.__name__.lstrip("_"))
def test_awkward_data_fit_without_nan(awkward_model, make):
    X, y = make()
    posterior = awkward_model.fit(X, y, key=jax.random.key(0), num_steps=NUM_STEPS)
    _assert_finite_fit(posterior, X, y)


def test_variance_of_targets_near_float32_limits(awkward_model):
    # For |y| ~ 1e20 the variance (~1e40) is beyond float32: moments are merged in
    # standardised units and scaled back in float64.
    X, y = _data()
    posterior = awkward_model.fit(X, y * 1e20, key=jax.random.key(0), num_steps=NUM_STEPS)
    assert not np.any(np.isnan(posterior.predictive(X[:5]).variance()))


@pytest.fixture(scope="module")
def awkward_baseline(awkward_model):
    """Unscaled fit of the awkward-data model: predictive at 5 inputs and the y spread."""
    X, y = _data()
    posterior = awkward_model.fit(X, y, key=jax.random.key(0), num_steps=NUM_STEPS)
    return posterior.predictive(X[:5]), float(np.std(y))


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_extreme_target_scales_give_the_unscaled_predictive(awkward_model, awkward_baseline,
                                                            scale):
    # Fitting is unit-free (y is standardised) and so is every query: rescaled back, the
    # results match the unscaled fit. Both scales are beyond float32 (squares overflow or
    # underflow); the mean, variance and quantiles are float64 in original units.
    X, y = _data()
    baseline, spread = awkward_baseline
    predictive = awkward_model.fit(X, scale * y, key=jax.random.key(0),
                                   num_steps=NUM_STEPS).predictive(X[:5])
    tolerance = {"rtol": 1e-4, "atol": 1e-4 * spread}
    np.testing.assert_allclose(predictive.mean() / scale, baseline.mean(), **tolerance)
    np.testing.assert_allclose(predictive.quantiles([0.05, 0.5, 0.95]) / scale,
                               baseline.quantiles([0.05, 0.5, 0.95]), **tolerance)
    np.testing.assert_allclose(predictive.variance() / scale**2, baseline.variance(),
                               rtol=1e-4, atol=1e-4 * spread**2)
    # Densities scale by 1 / scale: log p_scaled(scale * y) = log p(y) - log(scale).
    np.testing.assert_allclose(predictive.log_prob(scale * y[:5]) + np.log(scale),
                               baseline.log_prob(y[:5]), rtol=1e-4, atol=1e-4)


def test_one_hundred_components():
    X, y = _data()
    model = bm.MDN(num_components=100, hidden_sizes=(8,))
    posterior = model.fit(X, y, key=jax.random.key(0), num_steps=NUM_STEPS)
    _assert_finite_fit(posterior, X, y)


def test_prediction_far_outside_the_training_inputs(awkward_model):
    X, y = _data()
    posterior = awkward_model.fit(X, y, key=jax.random.key(0), num_steps=NUM_STEPS)
    far = np.array([[1e6, -1e6], [-1e12, 1e12], [1e20, 0.0], [0.0, -1e20]])
    predictive = posterior.predictive(far)
    for value in (predictive.log_prob(np.zeros(4)), predictive.mean(),
                  predictive.quantiles([0.1, 0.9])):
        assert np.all(np.isfinite(value))


# --------------------------------------------------------------------------- constant targets
def test_constant_target_is_refused(awkward_model):
    X, _ = _data()
    with pytest.raises(ValueError, match=r"`y` is constant \(every row is 4\.2\): its "
                                         r"conditional distribution is a point mass, which a "
                                         r"mixture density cannot represent\."):
        awkward_model.fit(X, np.full(X.shape[0], 4.2), key=jax.random.key(0), num_steps=5)


def test_constant_output_column_is_named(awkward_model):
    X, y = _data()
    targets = np.column_stack([y, np.zeros_like(y)])
    with pytest.raises(ValueError, match=r"`y` column 1 is constant \(every row is 0\.0\)"):
        awkward_model.fit(X, targets, key=jax.random.key(0), num_steps=5)


def test_standardizer_treats_rounding_noise_as_constant():
    # The std of 200 copies of 4.2 is 8.9e-16, not 0: scaling by it would turn rounding
    # noise into unit-scale data.
    values = np.full((200, 1), 4.2)
    assert values.std() > 0
    standardizer = Standardizer.fit(values, values)
    assert standardizer.x_scale[0] == standardizer.y_scale[0] == 1.0
    np.testing.assert_array_equal(standardizer.transform_X(values), 0.0)
    tiny = 4.2 + 1e-12 * np.arange(200.0)[:, None]  # really varying, however little
    assert Standardizer.fit(tiny, tiny).y_scale[0] == pytest.approx(tiny.std(), rel=1e-6)
