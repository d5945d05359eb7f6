# ruff: noqa
"""Grid post-processing on the host: refined modes and highest-density regions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


def _refine_modes(grid: np.ndarray, log_density: np.ndarray, min_relative: float
                  ) -> list[np.ndarray]:
    """Grid local maxima, refined by a parabola through the log-density at 3 points."""
    left, centre, right = log_density[:, :-2], log_density[:, 1:-1], log_density[:, 2:]
    is_peak = (centre > left) & (centre >= right)
    spacing = grid[:, 1:2] - grid[:, 0:1]
    curvature = left - 2 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    offset = np.clip(offset, -1.0, 1.0)
    location = grid[:, 1:-1] + offset * spacing
    height = centre - 0.25 * (left - right) * offset
    modes = []
    for row in range(grid.shape[0]):
        peaks = np.flatnonzero(is_peak[row])
        if peaks.size == 0:  # monotone on the grid: the maximum sits at an end
            peaks_loc = grid[row, [int(np.argmax(log_density[row]))]]
            modes.append(peaks_loc.reshape(-1, 1))
            continue
        heights = height[row, peaks]
        keep = heights >= heights.max() + np.log(min_relative)
        order = np.argsort(-heights[keep])
        modes.append(location[row, peaks[keep][order]].reshape(-1, 1))
    return modes


# --------------------------------------------------------------------------- HDR on a grid
def _mass_above(threshold: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                widths: np.ndarray) -> np.ndarray:
    """Mass of ``{y : f(y) >= c}`` for the piecewise-linear interpolant f of a density.

    Per cell with end densities lower <= upper and width h, the part above c has mass
    h (lower + upper) / 2 if c <= lower, 0 if c >= upper, and in between
    h (upper - c)(upper + c) / (2 (upper - lower)) (a triangle-topped trapezoid).

    Parameters
    ----------
    threshold : (B,)
    lower, upper, widths : (B, G - 1)

    Returns
    -------
    numpy.ndarray, shape (B,)
    """
    c = threshold[:, None]
    rise = np.where(upper > lower, upper - lower, 1.0)  # safe: only used where upper > lower
    partial = (upper - c) * (upper + c) / (2.0 * rise)
    mass = np.where(c <= lower, 0.5 * (lower + upper), np.where(c < upper, partial, 0.0))
    return np.sum(widths * mass, axis=1)


def _hdr_threshold(density: np.ndarray, widths: np.ndarray, level: float) -> np.ndarray:
    """Density threshold c (B,) whose super-level set of the interpolant holds `level` of
    the grid's mass.

    The mass above c is piecewise quadratic in c with breakpoints at the grid densities: a
    binary search over the sorted densities finds the two consecutive ones u > v with
    mass(u) < target <= mass(v); in between, mass(c) = mass(u) + A (u^2 - c^2) exactly, with
    A = sum over cells spanning [v, u] of h / (2 (upper - lower)).
    """
    lower = np.minimum(density[:, :-1], density[:, 1:])
    upper = np.maximum(density[:, :-1], density[:, 1:])
    total = np.sum(widths * 0.5 * (lower + upper), axis=1)
    target = level * total
    ordered = -np.sort(-density, axis=1)  # descending
    rows = np.arange(density.shape[0])
    # Invariant: mass(ordered[high]) >= target (all cells are full at the lowest density).
    low = np.zeros(rows.size, dtype=np.int64)
    high = np.full(rows.size, density.shape[1] - 1, dtype=np.int64)
    for _ in range(int(density.shape[1]).bit_length()):
        middle = (low + high) // 2
        enough = _mass_above(ordered[rows, middle], lower, upper, widths) >= target
        high = np.where(enough, middle, high)
        low = np.where(enough, low, middle + 1)
    v = ordered[rows, high]
    u = ordered[rows, np.maximum(high - 1, 0)]
    spanning = (lower <= v[:, None]) & (upper >= u[:, None]) & (upper > lower)
    rise = np.where(upper > lower, upper - lower, 1.0)
    slope = np.sum(np.where(spanning, widths / (2.0 * rise), 0.0), axis=1)
    missing = target - _mass_above(u, lower, upper, widths)
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = np.where(slope > 0, u**2 - missing / slope, v**2)
    # Clip into [v, u]: rounding, or a flat cell whose mass jumps in at v.
    return np.clip(np.sqrt(np.maximum(squared, 0.0)), v, u)


def _highest_density_intervals(grid: np.ndarray, density: np.ndarray, level: float
                               ) -> list[np.ndarray]:
    """HDR intervals per row of a density (B, G) on an increasing grid (B, G)."""
    widths = np.diff(grid, axis=1)
    threshold = _hdr_threshold(density, widths, level)[:, None]
    above = density >= threshold
    before = np.pad(above[:, :-1], ((0, 0), (1, 0)))  # is the previous point above?
    after = np.pad(above[:, 1:], ((0, 0), (0, 1)))
    start_rows, start_cols = np.nonzero(above & ~before)
    end_rows, end_cols = np.nonzero(above & ~after)
    # Where a run starts after a point below c, the interpolant crosses c in the cell before.
    previous = np.maximum(start_cols - 1, 0)
    rise = density[start_rows, start_cols] - density[start_rows, previous]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(rise > 0, (threshold[start_rows, 0] - density[start_rows, previous])
                            / rise, 1.0)
    starts = np.where(start_cols > 0, grid[start_rows, previous] + fraction
                      * (grid[start_rows, start_cols] - grid[start_rows, previous]),
                      grid[start_rows, start_cols])
    following = np.minimum(end_cols + 1, grid.shape[1] - 1)
    fall = density[end_rows, end_cols] - density[end_rows, following]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(fall > 0, (density[end_rows, end_cols] - threshold[end_rows, 0])
                            / fall, 0.0)
    ends = np.where(end_cols < grid.shape[1] - 1, grid[end_rows, end_cols] + fraction
                    * (grid[end_rows, following] - grid[end_rows, end_cols]),
                    grid[end_rows, end_cols])
    counts = np.bincount(start_rows, minlength=grid.shape[0])
    intervals = np.stack([starts, ends], axis=1)
    return np.split(intervals, np.cumsum(counts)[:-1])



# --------------------------------------------------------------------------- integer grids
def _integer_modes(grid: np.ndarray, log_mass: np.ndarray, min_relative: float
                   ) -> list[np.ndarray]:
    """Local maxima of a probability mass function on consecutive integers (B, G).

    k is a mode when ``p(k - 1) < p(k) >= p(k + 1)``, with -inf beyond both ends of the grid
    (so the lower end of the support can be a mode); on a plateau the smallest k is kept.
    """
    padded = np.pad(log_mass, ((0, 0), (1, 1)), constant_values=-np.inf)
    left, centre, right = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    is_peak = (centre > left) & (centre >= right)
    modes = []
    for row in range(grid.shape[0]):
        peaks = np.flatnonzero(is_peak[row])
        if peaks.size == 0:  # no mass on the grid at all: report its most likely point
            peaks = np.array([int(np.argmax(log_mass[row]))])
        heights = centre[row, peaks]
        keep = heights >= heights.max() + np.log(min_relative)
        order = np.argsort(-heights[keep], kind="stable")
        modes.append(grid[row, peaks[keep][order]].reshape(-1, 1))
    return modes


def _integer_hdr(grid: np.ndarray, mass: np.ndarray, level: float) -> list[np.ndarray]:
    """Smallest set of integers holding `level` of each row's mass (B, G), highest masses
    first, as rows ``[first, last]`` of inclusive runs of consecutive integers."""
    regions = []
    for row in range(grid.shape[0]):
        order = np.argsort(-mass[row], kind="stable")
        cumulative = np.cumsum(mass[row, order])
        count = min(int(np.searchsorted(cumulative, level * cumulative[-1])) + 1, order.size)
        chosen = np.sort(grid[row, order[:count]])
        breaks = np.flatnonzero(np.diff(chosen) > 1.5)
        starts = chosen[np.concatenate([[0], breaks + 1])]
        ends = chosen[np.concatenate([breaks, [chosen.size - 1]])]
        regions.append(np.stack([starts, ends], axis=1))
    return regions
