"""Split-conformal prediction sets for mixture predictives (D = 1).

Two conformity scores:

* ``score="density"``: ``s(x, y) = -log p(y | x)``. The set at x is the density superlevel
  set ``{y : p(y | x) >= exp(-q)}``: the shape of a highest-density region, a union of
  disjoint intervals where the predictive is multimodal, so it can be much shorter than any
  single interval at the same coverage.
* ``score="pit"``: distributional conformal prediction (Chernozhukov, Wuethrich & Zhu 2021),
  ``s(x, y) = |F(y | x) - 1/2|``. The set is the interval between the predictive quantiles
  ``F^-1(1/2 - q)`` and ``F^-1(1/2 + q)``: a central interval whose level is corrected.

q is the ``k``-th smallest of the n calibration scores, ``k = ceil((n + 1)(1 - alpha))``.

Guarantee (Vovk et al. 2005; Lei et al. 2018): if the n calibration rows and the test row
are exchangeable (e.g. drawn independently from one distribution) and the predictive was
fitted without the calibration rows, then ``P(y in C(x)) >= 1 - alpha`` *marginally* (over
calibration and test draws), whatever the model and however wrong it is; when the scores
have no ties (continuous families) also ``<= 1 - alpha + 1 / (n + 1)``. Coverage at a fixed
x is not guaranteed. With Mondrian bins (``bins=``) every bin gets its own q and the
guarantee holds within each bin (conditionally on the bin). Sets from :meth:`predict_sets`
are found on a grid of the predictive's 1e-9 to 1 - 1e-9 quantile range (1 - 5e-7 in
float32); :meth:`contains`
is exact (no grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_choice,
    check_positive_int,
    check_same_rows,
)
from bayes_mdn.calibration._grid import cdf_on_grid, check_one_output, runs_to_intervals
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.scaling import to_compute

__all__ = ["ConformalPredictor", "conformal"]

#: Probability left out of each tail of the grid of :meth:`ConformalPredictor.predict_sets`.
_TAIL = 1e-9


def _check_alpha(alpha: Any) -> float:
    if (isinstance(alpha, bool) or np.ndim(alpha) != 0
            or np.asarray(alpha).dtype.kind not in "iuf"):
        raise TypeError(f"`alpha` must be a number strictly between 0 and 1, e.g. 0.1 for 90% "
                        f"sets; got {alpha!r}.")
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise ValueError(f"`alpha` must lie strictly between 0 and 1, e.g. 0.1 for 90% sets; "
                         f"got {value}.")
    return value


def _predictor(source: Any) -> tuple[Callable[[np.ndarray], PredictiveMixture], int | None]:
    """(X -> PredictiveMixture, number of features or None) from a Posterior or callable."""
    if hasattr(source, "predictive") and hasattr(source, "num_features"):
        return source.predictive, int(source.num_features)
    if callable(source):
        return source, None
    raise TypeError("`predictor` must be a bayes_mdn.Posterior or a callable X -> "
                    f"PredictiveMixture; got {type(source).__name__}.")


def _needed_rows(alpha: float) -> int:
    """Fewest calibration scores for a finite threshold: (n + 1)(1 - alpha) <= n."""
    return math.ceil((1 - alpha) / alpha - 1e-9)


def _spread(pred: PredictiveMixture) -> np.ndarray:
    """Interquartile range of each input's predictive (M,): the default Mondrian statistic."""
    quartiles = pred.quantiles([0.25, 0.75])[:, :, 0]
    return quartiles[1] - quartiles[0]


@dataclass(frozen=True, eq=False)
class ConformalPredictor:
    """Split-conformal prediction sets of level ``1 - alpha``; build with :func:`conformal`.

    Attributes
    ----------
    predict : callable
        ``X -> PredictiveMixture``.
    alpha : float
        Miscoverage level: sets cover with probability >= 1 - alpha.
    score : str
        ``"density"`` or ``"pit"``.
    thresholds : numpy.ndarray, shape (B,)
        q per Mondrian bin (one entry without bins).
    num_calibration : numpy.ndarray, shape (B,)
        Calibration rows per bin.
    bin_edges : numpy.ndarray or None
        Interior edges of the predictive-spread bins (``bins=int``).
    bin_function : callable or None
        ``X -> labels`` (``bins=callable``); labels are 0..B-1.
    grid_size : int
        Grid points per input of :meth:`predict_sets`.
    """

    predict: Callable[[np.ndarray], PredictiveMixture]
    alpha: float
    score: str
    thresholds: np.ndarray
    num_calibration: np.ndarray
    bin_edges: np.ndarray | None = None
    bin_function: Callable[[np.ndarray], Any] | None = None
    grid_size: int = 2048

    @property
    def coverage_band(self) -> tuple[float, float]:
        """Range of the expected coverage ``[1 - alpha, 1 - alpha + 1 / (n_min + 1)]``
        (the upper end holds when the scores have no ties), n_min the smallest bin."""
        n = int(np.min(self.num_calibration))
        return 1 - self.alpha, 1 - self.alpha + 1 / (n + 1)

    # ----------------------------------------------------------------- helpers
    def _labels(self, X: np.ndarray, pred: PredictiveMixture) -> np.ndarray:
        if self.bin_function is not None:
            labels = np.asarray(self.bin_function(X)).reshape(-1)
            if labels.shape[0] != X.shape[0] or labels.dtype.kind not in "iu":
                raise ValueError("`bins(X)` must return one integer label per row of X.")
            if np.any((labels < 0) | (labels >= self.thresholds.size)):
                raise ValueError(f"`bins(X)` returned labels outside the {self.thresholds.size}"
                                 " bins seen at calibration.")
            return labels
        if self.bin_edges is not None:
            return np.searchsorted(self.bin_edges, _spread(pred), side="right")
        return np.zeros(X.shape[0], np.int64)

    def _prepare(self, X: Any) -> tuple[np.ndarray, PredictiveMixture, np.ndarray]:
        X = as_features(X, "X")
        pred = self.predict(X)
        check_one_output(pred.num_outputs, "conformal()")
        return X, pred, self.thresholds[self._labels(X, pred)]

    def threshold(self, X: Any) -> np.ndarray:
        """q at each row of `X` (M,) (its bin's threshold)."""
        return self._prepare(X)[2]

    # ----------------------------------------------------------------- queries
    def contains(self, X: Any, y: Any) -> np.ndarray:
        """Whether each y_i lies in the set at x_i (M,) bool; exact (no grid)."""
        X, pred, threshold = self._prepare(X)
        y = as_targets(y, "y", num_outputs=1)
        check_same_rows(X, y)
        return _scores(pred, y, self.score) <= threshold

    def predict_sets(self, X: Any) -> list[np.ndarray]:
        """The prediction set at each row of `X`.

        Returns
        -------
        list of numpy.ndarray
            One float64 array (num_intervals_i, 2) per row: disjoint ``[lower, upper]``
            intervals in increasing order (for a discrete family, inclusive runs of
            integers). An infinite threshold gives ``[[-inf, inf]]``.
        """
        return self._sets(X)[0]

    def set_length(self, X: Any) -> np.ndarray:
        """Total length of each set (M,) float64: the sum of its intervals' widths (for a
        discrete family, the number of integers in it)."""
        sets, discrete = self._sets(X)
        offset = 1.0 if discrete else 0.0
        return np.array([float(np.sum(s[:, 1] - s[:, 0] + offset)) for s in sets])

    def _sets(self, X: Any) -> tuple[list[np.ndarray], bool]:
        X, pred, threshold = self._prepare(X)
        discrete = bool(getattr(pred.model.family, "discrete", False))
        if self.score == "pit" and not discrete:
            return _pit_intervals(pred, threshold), discrete
        grid = _grid(pred, self.grid_size, discrete)
        if self.score == "pit":
            value = -np.abs(cdf_on_grid(pred, grid) - 0.5)
        else:
            value = pred.log_prob_grid(grid)
        inside = value >= -threshold[:, None]
        if discrete:
            return runs_to_intervals(grid, inside), discrete
        return runs_to_intervals(grid, inside, value, -threshold), discrete


def _scores(pred: PredictiveMixture, y: np.ndarray, score: str) -> np.ndarray:
    if score == "density":
        return -pred.log_prob(y)
    return np.abs(np.asarray(pred.cdf(y), np.float64)[:, 0] - 0.5)


def _grid(pred: PredictiveMixture, grid_size: int, discrete: bool) -> np.ndarray:
    # A level that rounds to 1 in the compute dtype has no finite quantile.
    top = min(1 - _TAIL, 1 - 4 * float(np.finfo(to_compute(0.0).dtype).eps))
    bounds = pred.quantiles([_TAIL, top])[:, :, 0].astype(np.float64)
    if discrete:
        lower = np.floor(bounds[0])
        size = int(np.max(bounds[1] - lower)) + 1
        grid = lower[:, None] + np.arange(size, dtype=np.float64)
        return np.minimum(grid, bounds[1][:, None])
    fractions = np.linspace(0.0, 1.0, grid_size)
    return bounds[0][:, None] + (bounds[1] - bounds[0])[:, None] * fractions


def _pit_intervals(pred: PredictiveMixture, threshold: np.ndarray) -> list[np.ndarray]:
    """``[F^-1(1/2 - q), F^-1(1/2 + q)]`` per input, one quantile query per distinct q."""
    sets = [np.zeros((1, 2))] * pred.num_inputs
    for value in np.unique(threshold):
        rows = np.flatnonzero(threshold == value)
        if value >= 0.5:
            for row in rows:
                sets[row] = np.array([[-np.inf, np.inf]])
            continue
        ends = pred[rows].quantiles([0.5 - value, 0.5 + value])[:, :, 0]
        for index, row in enumerate(rows):
            sets[row] = ends[:, index][None].astype(np.float64)
    return sets


def conformal(
    predictor: Any,
    X_cal: Any,
    y_cal: Any,
    *,
    alpha: float = 0.1,
    score: str = "density",
    bins: int | Callable[[np.ndarray], Any] | None = None,
    grid_size: int = 2048,
) -> ConformalPredictor:
    """Calibrate split-conformal prediction sets on held-out rows (D = 1).

    See the module docstring for the scores and the guarantee: if the calibration rows and
    future rows are exchangeable and `predictor` was fitted without the calibration rows,
    the sets cover a new y with probability at least ``1 - alpha`` (marginally), and at most
    ``1 - alpha + 1 / (n + 1)`` for continuous families.

    Parameters
    ----------
    predictor : Posterior or callable
        A fitted :class:`~bayes_mdn.Posterior` (its ``predictive``, recalibrated or not) or
        any callable ``X -> PredictiveMixture``.
    X_cal : array-like, shape (N, P)
        Calibration inputs, not used to fit `predictor`.
    y_cal : array-like, shape (N,) or (N, 1)
        Their targets.
    alpha : float
        Miscoverage, strictly between 0 and 1 (0.1: 90 % sets). Needs
        ``N >= ceil((1 - alpha) / alpha)`` calibration rows (per bin).
    score : {"density", "pit"}
        ``"density"``: superlevel sets of the predictive density (unions of intervals);
        ``"pit"``: central intervals by distributional conformal prediction.
    bins : int or callable, optional
        Mondrian calibration: an int B splits the rows into B equal-count bins of the
        predictive's interquartile range (an estimate of how hard each input is); a callable
        ``bins(X) -> labels`` (integers 0..B-1) gives the bins directly. Each bin gets its own
        threshold.
    grid_size : int
        Grid points per input of :meth:`ConformalPredictor.predict_sets` (continuous y).

    Returns
    -------
    ConformalPredictor
        With ``predict_sets(X)``, ``contains(X, y)``, ``set_length(X)``, ``threshold(X)``
        and ``coverage_band``.

    Raises
    ------
    ValueError
        For `alpha` outside (0, 1), wrongly shaped or non-finite data, fewer rows (per bin)
        than `alpha` needs, D > 1; all before any compilation.
    """
    alpha = _check_alpha(alpha)
    score = check_choice(score, "score", ("density", "pit"))
    grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
    predict, num_features = _predictor(predictor)
    X = as_features(X_cal, "X_cal", num_features=num_features)
    y = as_targets(y_cal, "y_cal")
    check_same_rows(X, y, "X_cal", "y_cal")
    check_one_output(y.shape[1], "conformal()")
    needed = _needed_rows(alpha)
    if bins is not None and not callable(bins):
        bins = check_positive_int(bins, "bins")
    per_bin = needed * (bins if isinstance(bins, int) else 1)
    if X.shape[0] < per_bin:
        raise ValueError(f"conformal() with alpha={alpha} needs at least {needed} calibration "
                         f"rows{' per bin' if bins else ''}; got {X.shape[0]}. Pass more rows"
                         f"{' or fewer bins' if bins else ''}, or a larger alpha.")
    pred = predict(X)
    check_one_output(pred.num_outputs, "conformal()")
    scores = _scores(pred, y, score)
    edges = None
    if callable(bins):
        labels = np.asarray(bins(X)).reshape(-1)
        if labels.shape[0] != X.shape[0] or labels.dtype.kind not in "iu" or np.any(labels < 0):
            raise ValueError("`bins(X)` must return one non-negative integer label per row.")
        num_bins = int(labels.max()) + 1
    elif bins:
        spread = _spread(pred)
        edges = np.quantile(spread, np.arange(1, bins) / bins)
        labels = np.searchsorted(edges, spread, side="right")
        num_bins = bins
    else:
        labels, num_bins = np.zeros(X.shape[0], np.int64), 1
    counts = np.bincount(labels, minlength=num_bins)
    if np.any(counts < needed):
        small = int(np.argmin(counts))
        raise ValueError(f"Bin {small} has {int(counts[small])} calibration rows; alpha={alpha} "
                         f"needs at least {needed} per bin. Use fewer bins.")
    thresholds = np.empty(num_bins)
    for label in range(num_bins):
        values = np.sort(scores[labels == label])
        rank = math.ceil((values.size + 1) * (1 - alpha))
        thresholds[label] = values[min(rank, values.size) - 1]
    return ConformalPredictor(predict=predict, alpha=alpha, score=score, thresholds=thresholds,
                              num_calibration=counts, bin_edges=edges,
                              bin_function=bins if callable(bins) else None,
                              grid_size=grid_size)
