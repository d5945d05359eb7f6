"""Host-side helpers shared by recalibration and conformal sets: cdfs on per-input grids,
input validation, and runs of grid points turned into intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_mdn._validation import as_features, as_targets, check_same_rows
from bayes_mdn.predictive import PredictiveMixture

#: Rows (input x grid point) evaluated per block by :func:`cdf_on_grid`.
_ROWS_PER_BLOCK = 1 << 18


def cdf_on_grid(pred: PredictiveMixture, grid: np.ndarray) -> np.ndarray:
    """The cdf (D = 1) of input i of `pred` at ``grid[i, :]``, (M, G) float64.

    Each input is repeated once per grid point and evaluated with ``pred.cdf``, in blocks
    of inputs, so the cost is that of M x G ordinary cdf evaluations.
    """
    num_inputs, size = grid.shape
    block = max(1, _ROWS_PER_BLOCK // size)
    values = np.empty(grid.shape, np.float64)
    for start in range(0, num_inputs, block):
        stop = min(start + block, num_inputs)
        tiled = pred[np.repeat(np.arange(start, stop), size)]
        values[start:stop] = np.asarray(
            tiled.cdf(grid[start:stop].reshape(-1, 1)), np.float64)[:, 0].reshape(-1, size)
    return values


def check_calibration_data(X: Any, y: Any, num_features: int, num_outputs: int,
                           minimum: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (X (N, P) float64, y (N, D) float64) with at least `minimum` rows."""
    X = as_features(X, "X", num_features=num_features)
    y = as_targets(y, "y", num_outputs=num_outputs)
    check_same_rows(X, y)
    if X.shape[0] < minimum:
        raise ValueError(f"{what} needs at least {minimum} calibration rows; got "
                         f"{X.shape[0]}. Pass more rows of held-out data.")
    return X, y


#: Why recalibration refuses D > 1 (in its error).
JOINT_REASON = ("Maps of each output's marginal cdf would not define the joint density "
                "(that needs a dependence structure the marginal PIT values cannot check). ")


def check_one_output(num_outputs: int, what: str, reason: str = "") -> None:
    """Refuse D > 1 (`reason`, e.g. :data:`JOINT_REASON`, goes into the message).

    For recalibration: per-marginal maps would calibrate each output's cdf, quantiles and
    intervals, but not define the joint distribution that ``log_prob``, ``sample``, ``hdr``
    and the metrics of a D-output predictive answer: that needs a copula, which marginal
    PIT values cannot check, so a recalibrated joint would be a guess.
    """
    if num_outputs != 1:
        raise ValueError(
            f"{what} is defined for one output (D = 1); this model has D = {num_outputs}. "
            f"{reason}Fit one model per output to calibrate each output's intervals.")


def runs_to_intervals(grid: np.ndarray, inside: np.ndarray, value: np.ndarray | None = None,
                      threshold: np.ndarray | None = None) -> list[np.ndarray]:
    """Per row, the runs of consecutive grid points where `inside` holds, as rows
    ``[lower, upper]``.

    With `value` (B, G) and `threshold` (B,), each run's ends are moved to where the linear
    interpolant of `value` crosses the threshold in the neighbouring cell (continuous y);
    without them the ends are grid points (integers for discrete families).
    """
    regions = []
    for row in range(grid.shape[0]):
        points = np.flatnonzero(inside[row])
        if points.size == 0:
            regions.append(np.zeros((0, 2)))
            continue
        breaks = np.flatnonzero(np.diff(points) > 1)
        first = points[np.concatenate([[0], breaks + 1])]
        last = points[np.concatenate([breaks, [points.size - 1]])]
        lower, upper = grid[row, first].astype(np.float64), grid[row, last].astype(np.float64)
        if value is not None:
            t = threshold[row]
            for index, (a, b) in enumerate(zip(first, last, strict=True)):
                if a > 0 and value[row, a] != value[row, a - 1]:
                    share = (t - value[row, a - 1]) / (value[row, a] - value[row, a - 1])
                    lower[index] = grid[row, a - 1] + np.clip(share, 0, 1) * (
                        grid[row, a] - grid[row, a - 1])
                if b < grid.shape[1] - 1 and value[row, b] != value[row, b + 1]:
                    share = (value[row, b] - t) / (value[row, b] - value[row, b + 1])
                    upper[index] = grid[row, b] + np.clip(share, 0, 1) * (
                        grid[row, b + 1] - grid[row, b])
        regions.append(np.stack([lower, upper], axis=1))
    return regions
