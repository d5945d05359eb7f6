"""Modes and highest-density regions of a 1-D density known on a grid per input.

The one grid query of every predictive that evaluates its density (or mass) on a grid and
post-processes it on the host: :class:`~bayes_mdn.PredictiveMixture` (``modes``, ``hdr``),
a :class:`~bayes_mdn.calibration.RecalibratedPredictive` and a
:class:`~bayes_mdn.stacking.StackedPredictive`. Continuous grids are refined (parabolic
modes of the log-density; HDR ends where the piecewise-linear density crosses its
threshold); integer grids of a discrete family are used as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_mdn.predictive._regions import (
    _highest_density_intervals,
    _integer_hdr,
    _integer_modes,
    _refine_modes,
)

__all__ = ["hdr_on_grid", "modes_on_grid"]


def _check_grid(grid: Any, values: Any, name: str, discrete: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    grid = np.asarray(grid, np.float64)
    values = np.asarray(values, np.float64)
    minimum = 1 if discrete else 2
    if grid.ndim != 2 or grid.shape[1] < minimum or values.shape != grid.shape:
        raise ValueError(f"`grid` and `{name}` must be arrays of one shape (M, G) with at "
                         f"least {minimum} points per input; got shapes {grid.shape} and "
                         f"{values.shape}.")
    if np.any(np.diff(grid, axis=1) < 0):
        raise ValueError("`grid` must be increasing along each row (axis 1).")
    return grid, values


def modes_on_grid(grid: Any, log_density: Any, *, discrete: bool = False,
                  min_relative_density: float = 1e-3) -> list[np.ndarray]:
    """Local maxima of a density on a grid per input, highest first.

    Parameters
    ----------
    grid : array-like, shape (M, G)
        Increasing points per input; for ``discrete=True`` consecutive integers.
    log_density : array-like, shape (M, G)
        Log-density (or log-mass) at the grid points; -inf allowed.
    discrete : bool
        Integers k with ``p(k - 1) < p(k) >= p(k + 1)`` (-inf beyond the grid's ends);
        otherwise grid maxima refined by a parabola through the log-density at 3 points
        (an end of the grid where the density is monotone on it).
    min_relative_density : float
        Drop maxima below this fraction of the highest one.

    Returns
    -------
    list of numpy.ndarray
        One float64 array (num_modes_i, 1) per input.
    """
    grid, log_density = _check_grid(grid, log_density, "log_density", discrete)
    if discrete:
        return _integer_modes(grid, log_density, min_relative_density)
    return _refine_modes(grid, log_density, min_relative_density)


def hdr_on_grid(grid: Any, density: Any, level: float, *, discrete: bool = False
                ) -> list[np.ndarray]:
    """Highest-density region of probability `level` from a density on a grid per input.

    Parameters
    ----------
    grid : array-like, shape (M, G)
        Increasing points per input; for ``discrete=True`` integers.
    density : array-like, shape (M, G)
        Density (or mass) at the grid points, >= 0; normalised to the grid's own mass.
    level : float
        Probability strictly between 0 and 1.
    discrete : bool
        The smallest set of integers with mass >= `level` (highest masses first), as
        inclusive runs; otherwise ``{y : p(y) >= c}`` for the piecewise-linear interpolant,
        with c solved exactly so that the region holds `level` of its mass.

    Returns
    -------
    list of numpy.ndarray
        One float64 array (num_intervals_i, 2) of ``[lower, upper]`` rows per input.
    """
    grid, density = _check_grid(grid, density, "density", discrete)
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1; got {level}.")
    if discrete:
        return _integer_hdr(grid, density, float(level))
    return _highest_density_intervals(grid, density, float(level))
