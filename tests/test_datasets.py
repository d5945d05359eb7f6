"""The seed's inverse-sine problem, its exact conditional density, and the UCI loader."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import integrate, stats

import bayes_mdn as bm
from bayes_mdn.datasets import (
    INVERSE_SINE_OPTIMAL_LOG_LIKELIHOOD,
    inverse_sine,
    inverse_sine_log_prob,
    load_uci,
)

Y_LOW, Y_HIGH = -10.5, 10.5
UCI_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


def _forward(y):
    return 7.0 * np.sin(0.75 * y) + 0.5 * y


def _compute_dtype():
    return np.float64 if jax.config.jax_enable_x64 else np.float32


# --------------------------------------------------------------------------- inverse_sine
def test_inverse_sine_shapes_and_dtypes():
    splits = inverse_sine(jax.random.key(0), num_samples=1000, train_fraction=0.2)
    shapes = [(200, 1), (200, 1), (800, 1), (800, 1)]
    for array, shape in zip(splits, shapes, strict=True):
        assert isinstance(array, np.ndarray)
        assert array.shape == shape
        assert array.dtype == _compute_dtype()


def test_inverse_sine_rounds_the_split():
    X_train, _, X_test, _ = inverse_sine(jax.random.key(0), num_samples=1001, train_fraction=0.1)
    assert (X_train.shape[0], X_test.shape[0]) == (100, 901)


def test_inverse_sine_is_deterministic():
    first = inverse_sine(jax.random.key(5), num_samples=500)
    second = inverse_sine(jax.random.key(5), num_samples=500)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = inverse_sine(jax.random.key(6), num_samples=500)
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a, b)


def test_inverse_sine_split_is_a_partition_of_the_same_draws():
    # The draws depend only on the key and num_samples; train_fraction only moves the cut.
    small = inverse_sine(jax.random.key(2), num_samples=400, train_fraction=0.1)
    large = inverse_sine(jax.random.key(2), num_samples=400, train_fraction=0.7)
    for split in (small, large):
        assert np.unique(np.concatenate([split[1], split[3]])).size == 400
    np.testing.assert_array_equal(np.sort(np.concatenate([small[1], small[3]]), axis=0),
                                  np.sort(np.concatenate([large[1], large[3]]), axis=0))


def test_inverse_sine_generator_statistics():
    X_train, y_train, X_test, y_test = inverse_sine(jax.random.key(1), num_samples=40_000)
    X = np.concatenate([X_train, X_test])[:, 0].astype(np.float64)
    y = np.concatenate([y_train, y_test])[:, 0].astype(np.float64)
    assert y.min() >= Y_LOW and y.max() <= Y_HIGH
    # y ~ U(-10.5, 10.5): mean 0, sd 21 / sqrt(12); tolerance 5 standard errors.
    assert abs(y.mean()) < 5 * (21 / np.sqrt(12)) / np.sqrt(y.size)
    # x - f(y) ~ N(0, 1): mean within 5 standard errors (0.025), sd within 0.02 (about 5.7 SE).
    noise = X - _forward(y)
    assert abs(noise.mean()) < 5 / np.sqrt(noise.size)
    assert abs(noise.std() - 1.0) < 0.02


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5, 0.001])
def test_inverse_sine_train_fraction_leaves_empty_split(fraction):
    with pytest.raises(ValueError, match=r"`train_fraction` must leave at least one row in each "
                                         r"split; got .* of 100 rows\."):
        inverse_sine(jax.random.key(0), num_samples=100, train_fraction=fraction)


@pytest.mark.parametrize("fraction", ["0.5", None, True])
def test_inverse_sine_train_fraction_type(fraction):
    with pytest.raises(TypeError, match=r"`train_fraction` must be a number in \(0, 1\); got "):
        inverse_sine(jax.random.key(0), num_samples=100, train_fraction=fraction)


@pytest.mark.parametrize("fraction", [float("inf"), float("nan")])
def test_inverse_sine_train_fraction_non_finite(fraction):
    with pytest.raises(ValueError, match=r"`train_fraction`"):
        inverse_sine(jax.random.key(0), num_samples=100, train_fraction=fraction)


def test_inverse_sine_accepts_numpy_float32_fraction():
    X_train, *_ = inverse_sine(jax.random.key(0), num_samples=100,
                               train_fraction=np.float32(0.5))
    assert X_train.shape == (50, 1)


def test_inverse_sine_num_samples_validation():
    with pytest.raises(ValueError, match=r"`num_samples` must be at least 2; got 1\."):
        inverse_sine(jax.random.key(0), num_samples=1)
    with pytest.raises(TypeError, match=r"`num_samples` must be an integer; got 100\.0"):
        inverse_sine(jax.random.key(0), num_samples=100.0)


def test_inverse_sine_int_key():
    with pytest.raises(TypeError, match=r"pass jax\.random\.key\(3\)"):
        inverse_sine(3)


# --------------------------------------------------------------------------- exact density
@pytest.mark.parametrize("x", [-9.0, -4.0, -0.5, 0.0, 2.5, 7.0, 12.0])
def test_inverse_sine_density_integrates_to_one(x):
    grid = np.linspace(Y_LOW, Y_HIGH, 4001)
    log_prob = inverse_sine_log_prob(np.full((grid.size, 1), x), grid)
    assert log_prob.shape == grid.shape and log_prob.dtype == np.float64
    # Trapezoid rule with spacing 5.25e-3 on a density whose features are >= 0.15 wide:
    # the discretisation error is below 1e-6 for these x, far inside the tolerance.
    total = integrate.trapezoid(np.exp(log_prob), grid)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_inverse_sine_density_outside_support_is_minus_inf():
    y = np.array([-50.0, -10.6, -10.5000001, Y_LOW, 0.0, Y_HIGH, 10.5000001, 11.0])
    log_prob = inverse_sine_log_prob(np.zeros((y.size, 1)), y)
    outside = np.array([True, True, True, False, False, False, True, True])
    assert np.all(log_prob[outside] == -np.inf)
    assert np.all(np.isfinite(log_prob[~outside]))


def test_inverse_sine_density_accepts_column_targets():
    X = np.array([[0.0], [1.0], [-3.0]])
    y = np.array([0.5, -2.0, 4.0])
    np.testing.assert_array_equal(inverse_sine_log_prob(X, y),
                                  inverse_sine_log_prob(X, y[:, None]))


@pytest.mark.parametrize("x", [-5.0, 0.3, 6.0])
def test_inverse_sine_normaliser_matches_quad(x):
    """Independent check: Z(x) = integral of N(x; f(u), 1) du over the support, by QUADPACK."""
    normaliser, error = integrate.quad(lambda u: stats.norm.pdf(x - _forward(u)), Y_LOW, Y_HIGH,
                                       limit=500, epsabs=0.0, epsrel=1e-12)
    assert error < 1e-9 * normaliser
    y = np.array([-8.0, -1.0, 0.0, 2.0, 9.5])
    log_prob = inverse_sine_log_prob(np.full((y.size, 1), x), y)
    implied = np.exp(stats.norm.logpdf(x - _forward(y)) - log_prob)  # Z(x) at each y
    np.testing.assert_allclose(implied, normaliser, rtol=1e-6)


def test_inverse_sine_coarse_grid_agrees_with_default():
    X_train, y_train, _, _ = inverse_sine(jax.random.key(4), num_samples=4000, train_fraction=0.5)
    np.testing.assert_allclose(inverse_sine_log_prob(X_train, y_train, num_grid=1025),
                               inverse_sine_log_prob(X_train, y_train), rtol=0, atol=1e-6)


def test_inverse_sine_optimal_log_likelihood():
    X_train, y_train, X_test, y_test = inverse_sine(jax.random.key(11), num_samples=200_000,
                                                    train_fraction=0.5)
    X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
    # num_grid=1025 keeps this fast; it agrees with the default grid to 1e-6 (test above).
    log_prob = inverse_sine_log_prob(X, y, num_grid=1025)
    assert np.all(np.isfinite(log_prob))
    # Monte Carlo standard error of the mean is about 0.002; tolerance 0.01 (about 5 SE).
    assert log_prob.mean() == pytest.approx(INVERSE_SINE_OPTIMAL_LOG_LIKELIHOOD, abs=0.01)
    assert bm.datasets.INVERSE_SINE_OPTIMAL_LOG_LIKELIHOOD == -1.2875


def test_inverse_sine_log_prob_validation():
    with pytest.raises(ValueError, match=r"`X` must be a 2-D array .* Use X\.reshape\(-1, 1\)"):
        inverse_sine_log_prob(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"`X` has 2 features but the model was fitted with 1"):
        inverse_sine_log_prob(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"`X` and `y` must have the same number of rows; got 3 "
                                         r"and 2\."):
        inverse_sine_log_prob(np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError, match=r"`num_grid` must be odd for Simpson's rule; got 1024\."):
        inverse_sine_log_prob(np.zeros((3, 1)), np.zeros(3), num_grid=1024)
    with pytest.raises(ValueError, match=r"`num_grid` must be at least 3; got 1\."):
        inverse_sine_log_prob(np.zeros((3, 1)), np.zeros(3), num_grid=1)


# --------------------------------------------------------------------------- UCI loader
@pytest.fixture(scope="module")
def yacht() -> Path:
    folder = UCI_ROOT / "yacht"
    if not (folder / "data.txt").is_file():
        pytest.skip(f"UCI yacht data not found at {folder} (expected the shared data checkout "
                    "next to the repository)")
    return folder


def test_load_uci_shapes(yacht):
    X_train, y_train, X_test, y_test = load_uci(yacht, split=0)
    assert X_train.shape == (277, 6) and y_train.shape == (277, 1)
    assert X_test.shape == (31, 6) and y_test.shape == (31, 1)
    for array in (X_train, y_train, X_test, y_test):
        assert array.dtype == np.float64 and np.all(np.isfinite(array))


@pytest.mark.parametrize("split", [0, 7, 19])
def test_load_uci_split_partitions_the_data(yacht, split):
    X_train, y_train, X_test, y_test = load_uci(yacht, split=split)
    data = np.loadtxt(yacht / "data.txt")
    rows = np.concatenate([np.hstack([X_train, y_train]), np.hstack([X_test, y_test])])
    assert rows.shape == data.shape

    def ordered(array):
        return array[np.lexsort(array.T[::-1])]

    np.testing.assert_array_equal(ordered(rows), ordered(data))


def test_load_uci_splits_differ(yacht):
    first, second = load_uci(yacht, split=0), load_uci(yacht, split=1)
    assert not np.array_equal(first[2], second[2])


@pytest.mark.parametrize("split", [20, -1, 100])
def test_load_uci_split_out_of_range(yacht, split):
    with pytest.raises(ValueError, match=rf"`split` must be in \[0, 20\); got {split}\."):
        load_uci(yacht, split=split)


@pytest.mark.parametrize("split", [1.5, "0", True])
def test_load_uci_split_not_an_int(yacht, split):
    with pytest.raises(TypeError, match=r"`split` must be an integer; got "):
        load_uci(yacht, split=split)


def test_load_uci_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"holds no data\.txt; pass a UCI split-format folder\."):
        load_uci(tmp_path / "nowhere")
