"""Standardisation of X and y, computed in float64 on the host and applied before any JAX work.

Fitting in standardised units makes priors, initialisation and learning rates independent of
the data's units; :class:`Standardizer` maps back so that every density is reported in the
original units of y (the log-Jacobian is ``-sum(log y_scale)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_mdn._validation import float_dtype

__all__ = ["Standardizer", "to_compute"]


def to_compute(array: Any) -> jax.Array:
    """Cast host data to the JAX compute dtype (float32, or float64 under jax x64)."""
    return jnp.asarray(np.asarray(array, dtype=np.float64), dtype=float_dtype())


#: Rows per block of the float64 arithmetic: the temporaries stay a few MB at any N.
BLOCK_ROWS = 65_536
#: Byte alignment at which JAX's CPU client adopts a NumPy buffer without copying it.
DEVICE_ALIGNMENT = 64


def _blocks(num_rows: int) -> range:
    return range(0, num_rows, BLOCK_ROWS)


def _constant_columns(values: np.ndarray) -> np.ndarray:
    """Columns whose values are all equal, decided exactly (max == min), shape (P,)."""
    return values.max(axis=0) == values.min(axis=0)


def _shift(values: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """Column means in float64; a constant column's own value (its float mean can be off by
    an ulp)."""
    mean = values.mean(axis=0, dtype=np.float64)  # accumulates in float64, no copy of values
    return np.where(constant, values[0], mean)


def _safe_scale(values: np.ndarray, mean: np.ndarray, constant: np.ndarray
                ) -> np.ndarray:
    """Column standard deviations (about `mean`, in float64, block by block), 1 for constant
    columns (left unscaled, not divided by 0).

    "Constant" is decided exactly (max == min): the computed std of a constant column is
    rounding noise (e.g. 8.9e-16 for 200 copies of 4.2), and dividing by it would blow that
    noise up to unit scale.
    """
    squares = np.zeros(values.shape[1])
    for start in _blocks(values.shape[0]):
        centred = values[start:start + BLOCK_ROWS] - mean  # float64: mean is
        squares += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(squares / values.shape[0])
    return np.where(constant | ~(std > 0), 1.0, std)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start at a DEVICE_ALIGNMENT boundary."""
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + DEVICE_ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % DEVICE_ALIGNMENT
    return raw[offset:offset + size].view(dtype).reshape(shape)


def _standardise(values: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> jax.Array:
    """``(values - shift) / scale`` in float64 block by block, stored in the compute dtype:
    no float64 copy of the whole array, and no second copy on the way to the device (on the
    CPU, ``device_put`` adopts an aligned buffer; ``jnp.asarray`` would copy it once or,
    unaligned, twice: 2 x 40 MB transient at 10^7 rows)."""
    out = _aligned_empty(values.shape, np.dtype(float_dtype()))
    for start in _blocks(values.shape[0]):
        out[start:start + BLOCK_ROWS] = (values[start:start + BLOCK_ROWS] - shift) / scale
    # `out` is private to this function, so the device array may alias it.
    return jax.device_put(out)


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Affine maps ``X_std = (X - x_shift) / x_scale`` and ``y_std = (y - y_shift) / y_scale``.

    Attributes
    ----------
    x_shift, x_scale : numpy.ndarray, shape (P,)
    y_shift, y_scale : numpy.ndarray, shape (D,)
        Identity (0 and 1) when the family does not standardise y.
    """

    x_shift: np.ndarray
    x_scale: np.ndarray
    y_shift: np.ndarray
    y_scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, standardize_y: bool = True) -> Standardizer:
        """Estimate shifts and scales from training data X (N, P) and y (N, D), float64 or
        float32 (the arithmetic is float64 either way)."""
        # One pass for max/min per array, shared by the shift and the scale.
        x_constant = _constant_columns(X)
        x_shift = _shift(X, x_constant)
        x_scale = _safe_scale(X, x_shift, x_constant)
        if standardize_y:
            y_constant = _constant_columns(y)
            y_shift = _shift(y, y_constant)
            y_scale = _safe_scale(y, y_shift, y_constant)
        else:
            y_shift = np.zeros(y.shape[1])
            y_scale = np.ones(y.shape[1])
        return cls(*(np.asarray(a, dtype=np.float64) for a in (x_shift, x_scale, y_shift, y_scale)))

    def transform_X(self, X: np.ndarray) -> jax.Array:
        """Standardised inputs in the compute dtype, shape (N, P)."""
        return _standardise(X, self.x_shift, self.x_scale)

    def transform_y(self, y: np.ndarray) -> jax.Array:
        """Standardised targets in the compute dtype, shape (N, D)."""
        return _standardise(y, self.y_shift, self.y_scale)

    @property
    def log_jacobian(self) -> float:
        """``log |d y_std / d y|``: add it to a standardised log-density to get original units."""
        return float(-np.sum(np.log(self.y_scale)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"x_shift": self.x_shift, "x_scale": self.x_scale,
                "y_shift": self.y_shift, "y_scale": self.y_scale}
