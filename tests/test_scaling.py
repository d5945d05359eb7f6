"""Standardisation: float64 arithmetic block by block, without a float64 copy of the data."""

from __future__ import annotations

import jax
import numpy as np

from bayes_mdn import scaling
from bayes_mdn._validation import as_features, as_targets
from bayes_mdn.scaling import Standardizer


def test_statistics_and_transform_match_numpy_in_float64_across_blocks():
    # More rows than one block, a large offset and a constant column.
    rng = np.random.default_rng(0)
    num_rows = 2 * scaling.BLOCK_ROWS + 123
    X = np.column_stack([1e6 + rng.normal(size=num_rows), np.full(num_rows, 4.2)])
    y = rng.gamma(2.0, size=(num_rows, 1))
    fitted = Standardizer.fit(X, y)
    np.testing.assert_allclose(fitted.x_shift, [X[:, 0].mean(), 4.2], rtol=1e-14)
    np.testing.assert_allclose(fitted.x_scale, [X[:, 0].std(), 1.0], rtol=1e-12)
    np.testing.assert_allclose(fitted.y_scale, y.std(axis=0), rtol=1e-12)
    expected = (X - fitted.x_shift) / fitted.x_scale
    np.testing.assert_allclose(np.asarray(fitted.transform_X(X)), expected, rtol=1e-6,
                               atol=1e-6)


def test_float32_input_is_not_copied_and_standardises_like_float64():
    rng = np.random.default_rng(1)
    X32 = (100 + 3 * rng.normal(size=(scaling.BLOCK_ROWS + 7, 3))).astype(np.float32)
    y32 = rng.normal(size=scaling.BLOCK_ROWS + 7).astype(np.float32)
    kept = as_features(X32, keep_float32=True)
    assert kept.dtype == np.float32 and np.shares_memory(kept, X32)
    assert as_features(X32).dtype == np.float64  # the default stays float64
    assert as_targets(y32, keep_float32=True).dtype == np.float32
    from_32 = Standardizer.fit(kept, as_targets(y32, keep_float32=True))
    from_64 = Standardizer.fit(X32.astype(np.float64), y32.astype(np.float64)[:, None])
    for name, value in from_32.to_arrays().items():
        np.testing.assert_allclose(value, from_64.to_arrays()[name], rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(np.asarray(from_32.transform_X(kept)),
                                  np.asarray(from_64.transform_X(X32.astype(np.float64))))


def test_standardised_data_reach_the_device_without_another_copy():
    # The premise: JAX's CPU client adopts a DEVICE_ALIGNMENT-aligned buffer (zero-copy).
    # If a JAX release stops doing so, the data are copied once more on the way to the
    # device (not wrong, but N x P x 4 bytes more at the peak): this test says so.
    for shape, dtype in [((1000, 3), np.float32), ((7,), np.float64)]:
        buffer = scaling._aligned_empty(shape, np.dtype(dtype))
        assert buffer.shape == shape and buffer.dtype == dtype and buffer.flags.c_contiguous
        assert buffer.ctypes.data % scaling.DEVICE_ALIGNMENT == 0
    buffer = scaling._aligned_empty((4096, 2), np.dtype(np.float32))
    buffer[:] = 1.0
    on_device = jax.device_put(buffer)
    if on_device.devices().pop().platform == "cpu":
        assert np.shares_memory(np.asarray(on_device), buffer)
