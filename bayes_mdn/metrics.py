"""Scores and calibration checks of a posterior predictive against held-out targets.

Every function takes a :class:`~bayes_mdn.PredictiveMixture` at N inputs and the targets y
observed there, shape (N,) or (N, D), in original units:

* :func:`log_score` -- mean log predictive density (nats per point; higher is better);
* :func:`crps` -- continuous ranked probability score per output (lower is better), in
  closed form for Normal components and by Monte Carlo otherwise;
* :func:`pit` -- probability integral transform values, uniform when calibrated, and
  :func:`ks_uniform`, a Kolmogorov-Smirnov test of their uniformity;
* :func:`coverage` -- fraction of targets inside central intervals or highest-density
  regions at several probability levels;
* :func:`rmse`, :func:`mae` -- errors of a point prediction (predictive mean or median);
* :func:`calibration_report` -- all of the above in one JSON-ready dict.

Per-output quantities (CRPS, PIT, coverage, RMSE, MAE) use each output's marginal
predictive; the log score uses the joint density.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from bayes_mdn._photoz_metrics import (
    anderson_darling_uniform,
    cde_loss,
    gridded_cdf,
    gridded_crps,
    gridded_density,
    median_bias,
    outlier_rate,
    photoz_dz,
    photoz_report,
    pit_tests,
    sigma_iqr,
    sigma_nmad,
)
from bayes_mdn._validation import as_targets, check_choice, check_key, check_positive_int
from bayes_mdn.calibration.recalibrated import RecalibratedPredictive
from bayes_mdn.predictive import PredictiveMixture

__all__ = [
    "Coverage",
    "anderson_darling_uniform",
    "calibration_report",
    "cde_loss",
    "coverage",
    "crps",
    "gridded_cdf",
    "gridded_crps",
    "gridded_density",
    "ks_uniform",
    "log_score",
    "mae",
    "median_bias",
    "outlier_rate",
    "photoz_dz",
    "photoz_report",
    "pit",
    "pit_tests",
    "rmse",
    "sigma_iqr",
    "sigma_nmad",
]

#: Default probability levels of :func:`coverage` and :func:`calibration_report`.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Methods of :func:`crps` (those of :meth:`PredictiveMixture.crps`).
CRPS_METHODS = ("auto", "closed_form", "quadrature", "sample")


# --------------------------------------------------------------------------- validation
def _check_predictive(pred: Any, function: str) -> PredictiveMixture:
    # Also predictives that answer the same public queries, e.g. a StackedPredictive.
    if isinstance(pred, PredictiveMixture) or getattr(pred, "__bayes_mdn_predictive__", False):
        return pred
    hint = (" Call posterior.predictive(X_test) first." if hasattr(pred, "predictive")
            else "")
    raise TypeError(f"{function}() needs a PredictiveMixture as `pred`; got "
                    f"{type(pred).__name__}.{hint}")


def _check_targets(pred: PredictiveMixture, y: Any) -> np.ndarray:
    """y as (N, D) float64 (the predictive standardises it before any cast), one row per
    input of `pred`."""
    values = as_targets(y, "y", num_outputs=pred.num_outputs)
    if values.shape[0] != pred.num_inputs:
        raise ValueError(
            f"`y` must have one row per input of the predictive ({pred.num_inputs}); got "
            f"{values.shape[0]} rows. Build the predictive at the inputs where y was observed."
        )
    return values


def _check_levels(levels: Any) -> np.ndarray:
    """Probability levels as a 1-D float64 array, each strictly between 0 and 1."""
    try:
        values = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`levels` must be a number or a sequence of numbers in (0, 1), e.g. "
                        f"(0.5, 0.9); got {levels!r}.") from None
    values = np.atleast_1d(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`levels` must be a number or a non-empty 1-D sequence of numbers in "
                         f"(0, 1); got shape {np.shape(levels)}.")
    if not np.all((values > 0) & (values < 1)):
        raise ValueError(f"`levels` must lie strictly between 0 and 1, e.g. 0.9 for a 90% "
                         f"interval; got {values.tolist()}.")
    if np.unique(values).size != values.size:
        raise ValueError(f"`levels` must not repeat a level; got {values.tolist()}.")
    return values


def _family_name(pred: PredictiveMixture) -> str:
    return pred.model.family.name


def _is_discrete(pred: PredictiveMixture) -> bool:
    if not isinstance(pred, PredictiveMixture):  # a StackedPredictive says so itself
        return bool(pred.discrete)
    return pred.model.family.discrete


# --------------------------------------------------------------------------- log score
def log_score(pred: PredictiveMixture, y: Any, *, pointwise: bool = False
              ) -> float | np.ndarray:
    """Mean log posterior-predictive density of the targets (higher is better).

    The logarithmic score is strictly proper; its negative is the test negative
    log-likelihood. Densities are in original units of y (a discrete family gives log
    probabilities).

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
        Targets observed at those inputs.
    pointwise : bool
        Return the per-point values instead of their mean.

    Returns
    -------
    float or numpy.ndarray of shape (N,)
        Nats per point; ``-inf`` where y has zero predictive density, never NaN.
    """
    pred = _check_predictive(pred, "log_score")
    values = pred.log_prob(_check_targets(pred, y))
    if pointwise:
        return values
    return float(np.mean(values.astype(np.float64)))


# --------------------------------------------------------------------------- CRPS
def crps(
    pred: PredictiveMixture,
    y: Any,
    *,
    pointwise: bool = False,
    method: str = "auto",
    key: jax.Array | None = None,
    num_samples: int = 1000,
    grid_size: int | None = None,
) -> np.ndarray:
    """Continuous ranked probability score of each output's marginal predictive.

    ``CRPS(F, y) = integral (F(z) - 1{y <= z})**2 dz = E|X - y| - 1/2 E|X - X'|`` with X, X'
    independent draws from the predictive F. It is strictly proper, in the units of y, and
    equals the absolute error for a point prediction (lower is better). The per-input
    scores are :meth:`PredictiveMixture.crps <bayes_mdn.PredictiveMixture.crps>` (a
    :class:`~bayes_mdn.stacking.StackedPredictive` answers with its own ``crps``).

    Methods:

    * ``"closed_form"`` (Normal components): exact, using
      ``E|N(m, s**2)| = s sqrt(2/pi) exp(-m**2 / (2 s**2)) + m (1 - 2 Phi(-m/s))`` for the
      S * K terms of ``E|X - y|`` and the (S * K)**2 pairs of ``E|X - X'|``; the pairs are
      visited in chunks, so memory stays within the predictive's ``max_elements``, but the
      cost grows as (S * K)**2 per input.
    * ``"quadrature"`` (Normal components): ``E|X - y|`` exact, and
      ``1/2 E|X - X'| = integral F(z) (1 - F(z)) dz`` by the trapezoid rule on a grid
      covering all but about 1e-6 of every significant component's mass; cost
      ``grid_size * S * K`` per input. The integrand is smooth, so the rule converges
      geometrically: with 1.5 grid points per interquartile range of the narrowest heavy
      component (weight >= 1e-3 within its draw) the error is about 1e-7 of the scale of
      the components (tested against the closed form to 1e-4 relative, float32 rounding
      included). By default each input gets the smallest power-of-two grid (128 to 8192
      points) that meets this; a UserWarning says when an input needs more.
    * ``"sample"`` (any family; needs `key`): the unbiased estimator
      ``mean_i |x_i - y| - 1/2 mean_{i != j} |x_i - x_j|`` from `num_samples` predictive
      samples per input, using all sample pairs (computed from the sorted sample). Its
      standard error shrinks as ``1 / sqrt(num_samples)``.

    A :class:`~bayes_mdn.calibration.RecalibratedPredictive` (cdf ``R(F(y))``) is scored by
    the trapezoid rule of the integral on a grid, whatever `method` says.

    * ``"auto"``: for Normal components, ``"closed_form"`` when S * K <= 64; above that,
      per input, the quadrature unless its grid would cost more than the closed form's
      pairs (grid points >= 2 S * K), which is then used instead. ``"sample"`` for every
      other family.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
        Targets observed at those inputs.
    pointwise : bool
        Return the per-point scores (N, D) instead of their mean per output (D,).
    method : {"auto", "closed_form", "quadrature", "sample"}
    key : PRNG key, optional
        Required by ``"sample"`` (and so by ``"auto"`` for non-Normal families); checked
        but unused otherwise.
    num_samples : int
        Samples per input for ``"sample"`` (at least 2).
    grid_size : int, optional
        Quadrature points per input and output for ``"quadrature"`` (at least 16); default
        chosen per input as described above.

    Returns
    -------
    numpy.ndarray
        Shape (D,) (float64 mean over points) or, with ``pointwise=True``, (N, D) in the
        compute dtype. Never negative, never NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import bayes_mdn as bm
    >>> from bayes_mdn.scaling import Standardizer
    >>> draws = {"logits.kernel": np.zeros((1, 1, 1)), "logits.bias": np.zeros((1, 1)),
    ...          "loc.kernel": np.zeros((1, 1, 1)), "loc.bias": np.zeros((1, 1)),
    ...          "scale.kernel": np.zeros((1, 1, 1)), "scale.bias": np.full((1, 1), 0.5413)}
    >>> model = bm.MDN(num_components=1, hidden_sizes=(),
    ...                family=bm.families.Normal(min_scale=0.0))
    >>> identity = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    >>> pred = bm.PredictiveMixture(model, draws, identity, np.zeros((1, 1), np.float32))
    >>> # N(0, 1) at y = 0: 2 phi(0) - 1/sqrt(pi) = 0.2337
    >>> np.round(bm.metrics.crps(pred, [0.0]), 4)
    array([0.2337])
    """
    pred = _check_predictive(pred, "crps")
    if not isinstance(pred, PredictiveMixture):  # e.g. StackedPredictive.crps
        return pred.crps(y, pointwise=pointwise, method=method, key=key,
                         num_samples=num_samples, grid_size=grid_size)
    method = check_choice(method, "method", CRPS_METHODS)
    targets = _check_targets(pred, y)
    if isinstance(pred, RecalibratedPredictive):  # cdf R(F(y)), not a mixture: quadrature
        scores = pred.crps(targets)
        return scores if pointwise else np.mean(scores, axis=0)
    scores = pred.crps(targets, method=method, key=key, num_samples=num_samples,
                       grid_size=grid_size)  # (N, D) float64
    if pointwise:
        return scores.astype(pred.X_std.dtype)
    return np.mean(scores, axis=0)


# --------------------------------------------------------------------------- PIT
def pit(pred: PredictiveMixture, y: Any, *, key: jax.Array | None = None) -> np.ndarray:
    """Probability integral transform ``u = F(y)`` of each output's marginal predictive.

    For a calibrated predictive the values are uniform on [0, 1]: a U-shaped histogram
    means the predictive is too narrow, a hump too wide, a slope biased (see
    :func:`bayes_mdn.plotting.plot_pit` and :func:`ks_uniform`).

    For a discrete family (one whose family has ``discrete = True``) the randomised PIT
    ``u = F(y - 1) + V (F(y) - F(y - 1))``, ``V ~ Uniform(0, 1)``, is returned; it is
    uniform under calibration too, and needs `key`.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
        Targets observed at those inputs.
    key : PRNG key, optional
        Required for discrete families; checked but unused for continuous ones.

    Returns
    -------
    numpy.ndarray, shape (N, D)
        Values in [0, 1].
    """
    pred = _check_predictive(pred, "pit")
    if key is not None:
        key = check_key(key)
    targets = _check_targets(pred, y)
    upper = pred.cdf(targets)
    if not _is_discrete(pred):
        return upper
    if key is None:
        raise TypeError(f"pit() randomises the PIT of the discrete family "
                        f"{_family_name(pred)!r} and needs `key`, e.g. key=jax.random.key(0).")
    lower = np.minimum(pred.cdf(targets - 1), upper)
    noise = np.asarray(jax.random.uniform(key, targets.shape, dtype=upper.dtype))
    return np.clip(lower + noise * (upper - lower), 0.0, 1.0)


# --------------------------------------------------------------------------- KS test
def _log_binomial(n: int) -> np.ndarray:
    """log C(n, j) for j = 0..n."""
    j = np.arange(1, n + 1, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log((n - j + 1) / j))])


def _smirnov_sf(n: int, d: float) -> float:
    """Exact P(D+_n >= d), the one-sided KS tail (Birnbaum and Tingey 1951), in log space."""
    if d <= 0:
        return 1.0
    if d >= 1:
        return 0.0
    j = np.arange(math.floor(n * (1 - d)) + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        terms = (_log_binomial(n)[: j.size] + (n - j) * np.log(1 - d - j / n)
                 + (j - 1) * np.log(d + j / n))
    top = np.max(terms)
    return float(min(1.0, d * np.exp(top) * np.sum(np.exp(terms - top))))


def _kolmogorov_cdf_exact(n: int, d: float) -> float:
    """Exact P(D_n < d) by the matrix method of Marsaglia, Tsang and Wang (2003)."""
    k = math.floor(n * d) + 1
    m = 2 * k - 1
    h = k - n * d
    offset = np.arange(m)[:, None] - np.arange(m)[None, :] + 1  # i - j + 1
    matrix = (offset >= 0).astype(np.float64)
    powers = h ** np.arange(1, m + 1)
    matrix[:, 0] -= powers
    matrix[-1, :] -= powers[::-1]
    if 2 * h - 1 > 0:
        matrix[-1, 0] += (2 * h - 1) ** m
    log_factorial = np.array([math.lgamma(v + 1.0) for v in range(m + 1)])
    positive = offset > 0
    matrix[positive] *= np.exp(-log_factorial[offset[positive]])
    # matrix ** n by repeated squaring, rescaling to keep the entries in range.
    result, log_scale = None, 0.0
    base, base_log_scale, exponent = matrix, 0.0, n
    while exponent:
        if exponent & 1:
            if result is None:
                result, log_scale = base.copy(), base_log_scale
            else:
                result, log_scale = result @ base, log_scale + base_log_scale
            peak = np.max(np.abs(result))
            if peak > 0:
                result, log_scale = result / peak, log_scale + math.log(peak)
        exponent >>= 1
        if exponent:
            base, base_log_scale = base @ base, 2 * base_log_scale
            peak = np.max(np.abs(base))
            if peak > 0:
                base, base_log_scale = base / peak, base_log_scale + math.log(peak)
    value = result[k - 1, k - 1]
    if value <= 0:
        return 0.0
    log_cdf = math.log(value) + log_scale + math.lgamma(n + 1.0) - n * math.log(n)
    return float(min(1.0, math.exp(log_cdf)))


def _kolmogorov_sf_asymptotic(n: int, d: float) -> float:
    """Kolmogorov's limit with Stephens' (1970) finite-n correction of the argument."""
    root = math.sqrt(n)
    x = (root + 0.12 + 0.11 / root) * d
    if x < 1.18:
        j = np.arange(1, 21)
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * np.sum(
            np.exp(-np.square(2 * j - 1) * math.pi**2 / (8 * x * x))))))
    j = np.arange(1, 101)
    return float(min(1.0, max(0.0, 2 * np.sum((-1.0) ** (j - 1) * np.exp(-2 * j**2 * x * x)))))


def _kolmogorov_sf(n: int, d: float) -> float:
    """P(D_n >= d) for the two-sided one-sample KS statistic of n uniform points.

    Twice the exact one-sided tail where that is at most 0.1 (the two one-sided events
    overlap with probability about 2 p1**4: relative error below 2e-4), the exact matrix
    method for moderate p-values while its matrix stays small (k <= 400), and the
    corrected asymptotic series beyond (n > about 40 000, absolute error below 1e-3).
    """
    if d >= 1:
        return 0.0
    one_sided = _smirnov_sf(n, d)
    if 2 * one_sided <= 0.1 or d >= 0.5:
        return min(1.0, 2 * one_sided)
    if math.floor(n * d) + 1 <= 400:
        return min(1.0, max(0.0, 1.0 - _kolmogorov_cdf_exact(n, d)))
    return _kolmogorov_sf_asymptotic(n, d)


def ks_uniform(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kolmogorov-Smirnov test that each column of `values` is Uniform(0, 1).

    Meant for PIT values (:func:`pit`). The p-value needs no SciPy: it is exact (the
    Birnbaum-Tingey one-sided tail, doubled, for p <= 0.1, and the Marsaglia-Tsang-Wang
    matrix method above) except for p > 0.1 with more than about 40 000 points, where the
    asymptotic Kolmogorov series with Stephens' correction is within 1e-3.

    Parameters
    ----------
    values : array-like, shape (N,) or (N, D)
        Values in [0, 1]; each column is tested separately.

    Returns
    -------
    statistic : numpy.ndarray, shape (D,)
        ``sup |F_N(u) - u|``, the largest gap between the empirical cdf and the diagonal.
    pvalue : numpy.ndarray, shape (D,)
        Probability of a statistic at least as large under uniformity.

    Examples
    --------
    >>> import numpy as np
    >>> import bayes_mdn as bm
    >>> statistic, pvalue = bm.metrics.ks_uniform(np.linspace(0.05, 0.95, 10))
    >>> round(float(statistic[0]), 12), bool(pvalue[0] > 0.99)
    (0.05, True)
    """
    array = as_targets(values, "values")
    if np.any((array < 0) | (array > 1)):
        raise ValueError(f"`values` must lie in [0, 1] (PIT values); got values from "
                         f"{array.min():.4g} to {array.max():.4g}.")
    n = array.shape[0]
    ordered = np.sort(array, axis=0)
    ranks = np.arange(1, n + 1, dtype=np.float64)[:, None]
    statistic = np.maximum(np.max(ranks / n - ordered, axis=0),
                           np.max(ordered - (ranks - 1) / n, axis=0))
    pvalue = np.array([_kolmogorov_sf(n, float(d)) for d in statistic])
    return statistic, pvalue


# --------------------------------------------------------------------------- coverage
@dataclass(frozen=True, eq=False)
class Coverage(Mapping):
    """Empirical coverage at several probability levels: a mapping level -> fraction.

    ``result[0.9]`` is the fraction of (point, output) pairs whose target lies inside its
    90 % region (for D = 1, the fraction of points); ``per_output`` keeps the outputs apart.

    Attributes
    ----------
    levels : numpy.ndarray, shape (L,)
        Nominal probability levels, in the order requested.
    per_output : numpy.ndarray, shape (L, D)
        Empirical coverage of each output at each level.
    num_points : int
        N, the number of targets.
    kind : str
        ``"central"`` or ``"hdr"``.
    """

    levels: np.ndarray
    per_output: np.ndarray
    num_points: int
    kind: str

    @property
    def empirical(self) -> np.ndarray:
        """Coverage (L,) pooled over outputs, in the order of `levels`."""
        return self.per_output.mean(axis=1)

    @property
    def standard_error(self) -> np.ndarray:
        """Binomial standard error (L,) of one output's coverage if perfectly calibrated:
        ``sqrt(level (1 - level) / N)``."""
        return np.sqrt(self.levels * (1 - self.levels) / self.num_points)

    def _index(self, level: Any) -> int:
        try:
            value = float(level)
        except (TypeError, ValueError):
            raise KeyError(level) from None
        matches = np.flatnonzero(np.isclose(self.levels, value, rtol=0.0, atol=1e-9))
        if matches.size == 0:
            raise KeyError(level)
        return int(matches[0])

    def __getitem__(self, level: Any) -> float:
        return float(self.empirical[self._index(level)])

    def __iter__(self) -> Iterator[float]:
        return iter(float(level) for level in self.levels)

    def __len__(self) -> int:
        return int(self.levels.size)

    def as_dict(self) -> dict[float, float]:
        """Plain ``{level: coverage}`` (pooled over outputs)."""
        return dict(zip(self.levels.tolist(), self.empirical.tolist(), strict=True))

    def __repr__(self) -> str:
        pairs = ", ".join(f"{level:g}: {value:.4f}" for level, value in self.as_dict().items())
        return f"Coverage(kind={self.kind!r}, num_points={self.num_points}, {{{pairs}}})"


def _inside_regions(regions: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Whether y[i] lies in the union of intervals regions[i] (rows [lower, upper])."""
    counts = np.array([len(region) for region in regions])
    bounds = np.concatenate([np.asarray(region, np.float64).reshape(-1, 2)
                             for region in regions])
    owner = np.repeat(np.arange(len(regions)), counts)
    hit = (y[owner] >= bounds[:, 0]) & (y[owner] <= bounds[:, 1])
    return np.bincount(owner[hit], minlength=len(regions)) > 0


def coverage(
    pred: PredictiveMixture,
    y: Any,
    levels: Any = DEFAULT_LEVELS,
    *,
    kind: str = "central",
    grid_size: int = 2048,
) -> Coverage:
    """Fraction of targets inside the predictive's regions of given probability.

    A calibrated predictive covers about a fraction `level` of the targets (within the
    binomial error ``sqrt(level (1 - level) / N)``, :attr:`Coverage.standard_error`).
    Intervals include their ends, so for a discrete family a calibrated predictive covers
    at least `level` (each interval holds at least its nominal mass); use :func:`pit` for
    an exact check there.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
        Targets observed at those inputs.
    levels : float or sequence of float, shape (L,)
        Probabilities strictly between 0 and 1, without repeats.
    kind : {"central", "hdr"}
        ``"central"``: the interval between each output's marginal quantiles
        ``(1 - level) / 2`` and ``(1 + level) / 2``. ``"hdr"`` (D = 1 only): the
        highest-density region from :meth:`PredictiveMixture.hdr`, which may be a union of
        intervals for a multimodal predictive.
    grid_size : int
        Grid points per input for ``kind="hdr"``.

    Returns
    -------
    Coverage
        A mapping level -> coverage (float), with ``per_output`` of shape (L, D).
    """
    pred = _check_predictive(pred, "coverage")
    kind = check_choice(kind, "kind", ("central", "hdr"))
    levels = _check_levels(levels)
    targets = _check_targets(pred, y).astype(np.float64)
    if kind == "central":
        probabilities = np.concatenate([(1 - levels) / 2, (1 + levels) / 2])
        bounds = pred.quantiles(probabilities).astype(np.float64)  # (2L, N, D)
        lower, upper = bounds[: levels.size], bounds[levels.size:]
        inside = (targets[None] >= lower) & (targets[None] <= upper)  # (L, N, D)
        per_output = inside.mean(axis=1)
    else:
        if pred.num_outputs != 1:
            raise ValueError(f"kind='hdr' needs one output (D = 1); this model has D = "
                             f"{pred.num_outputs}. Use kind='central' for per-output "
                             "intervals.")
        grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        per_output = np.array([[_inside_regions(pred.hdr(float(level), grid_size=grid_size),
                                                targets[:, 0]).mean()] for level in levels])
    return Coverage(levels=levels, per_output=per_output, num_points=pred.num_inputs,
                    kind=kind)


# --------------------------------------------------------------------------- point errors
def _point_prediction(pred: PredictiveMixture, point: str) -> np.ndarray:
    point = check_choice(point, "point", ("mean", "median"))
    if point == "mean":
        return pred.mean().astype(np.float64)
    return pred.quantiles(0.5)[0].astype(np.float64)


def rmse(pred: PredictiveMixture, y: Any, *, point: str = "mean") -> np.ndarray:
    """Root mean squared error of a point prediction, per output.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
    point : {"mean", "median"}
        Which point prediction to score; the predictive mean minimises the expected squared
        error. For a multimodal predictive neither point is a likely value.

    Returns
    -------
    numpy.ndarray, shape (D,)
        ``sqrt(mean_i (y_i - point_i)**2)``, float64, in the units of y.
    """
    pred = _check_predictive(pred, "rmse")
    targets = _check_targets(pred, y).astype(np.float64)
    return np.sqrt(np.mean(np.square(targets - _point_prediction(pred, point)), axis=0))


def mae(pred: PredictiveMixture, y: Any, *, point: str = "median") -> np.ndarray:
    """Mean absolute error of a point prediction, per output.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
    point : {"median", "mean"}
        Which point prediction to score; the default, the predictive median, minimises the
        expected absolute error.

    Returns
    -------
    numpy.ndarray, shape (D,)
        ``mean_i |y_i - point_i|``, float64, in the units of y.
    """
    pred = _check_predictive(pred, "mae")
    targets = _check_targets(pred, y).astype(np.float64)
    return np.mean(np.abs(targets - _point_prediction(pred, point)), axis=0)


# --------------------------------------------------------------------------- report
def calibration_report(
    pred: PredictiveMixture,
    y: Any,
    *,
    levels: Any = DEFAULT_LEVELS,
    key: jax.Array | None = None,
    crps_method: str = "auto",
    num_samples: int = 1000,
    hdr_level: float | None = 0.9,
) -> dict[str, Any]:
    """Scores and calibration checks in one JSON-ready dict.

    Parameters
    ----------
    pred : PredictiveMixture
        Predictive at N inputs.
    y : array-like, shape (N,) or (N, D)
        Targets observed at those inputs.
    levels : sequence of float
        Levels of the central-interval coverage.
    key : PRNG key, optional
        Needed when the CRPS is sampled (non-Normal families) or the PIT randomised
        (discrete families); split once for the two.
    crps_method : str
        ``method`` of :func:`crps`.
    num_samples : int
        Samples per input for a sampled CRPS.
    hdr_level : float or None
        Level of the highest-density regions whose coverage and size are reported (D = 1;
        None skips them, e.g. to save the grid evaluations).

    Returns
    -------
    dict
        ``num_points`` (N), ``num_outputs`` (D), ``log_score`` (float, nats per point),
        ``crps``, ``rmse`` (of the mean), ``mae`` (of the median), ``pit_ks_statistic`` and
        ``pit_ks_pvalue`` (lists of D floats), ``pit_cvm_statistic`` and ``pit_cvm_pvalue``
        (Cramer-von Mises test of PIT uniformity, lists of D floats), ``coverage``
        ({level: coverage pooled over outputs}), ``coverage_per_output`` ({level: list of D
        floats}), ``interval_width`` ({level: list of D mean widths of the central
        intervals}: sharpness beside calibration) and, for D = 1 with `hdr_level`,
        ``hdr_coverage`` and ``hdr_size`` ({level: float}: coverage and mean total length
        of the highest-density regions, a union of intervals where multimodal; for discrete
        families the mean number of integers).
    """
    pred = _check_predictive(pred, "calibration_report")
    levels = _check_levels(levels)
    targets = _check_targets(pred, y)
    crps_key = pit_key = None
    if key is not None:
        crps_key, pit_key = jax.random.split(check_key(key))
    pit_values = pit(pred, targets, key=pit_key)
    statistic, pvalue = ks_uniform(pit_values)
    from scipy.stats import cramervonmises  # scipy comes with jax; imported only here

    cvm = [cramervonmises(column, "uniform") for column in pit_values.T]
    # Central intervals once: coverage and width from the same quantiles.
    bounds = pred.quantiles(np.concatenate([(1 - levels) / 2, (1 + levels) / 2]))
    lower, upper = bounds[: levels.size], bounds[levels.size:]
    inside = (targets[None] >= lower) & (targets[None] <= upper)
    intervals = Coverage(levels=levels, per_output=inside.mean(axis=1),
                         num_points=pred.num_inputs, kind="central")
    widths = np.mean(upper - lower, axis=1)  # (L, D)
    extra: dict[str, Any] = {}
    if hdr_level is not None and pred.num_outputs == 1:
        regions = pred.hdr(hdr_level)
        offset = 1.0 if _is_discrete(pred) else 0.0
        extra["hdr_coverage"] = {float(hdr_level): float(
            _inside_regions(regions, np.asarray(targets, np.float64)[:, 0]).mean())}
        extra["hdr_size"] = {float(hdr_level): float(np.mean(
            [np.sum(region[:, 1] - region[:, 0] + offset) for region in regions]))}
    return {
        "num_points": pred.num_inputs,
        "num_outputs": pred.num_outputs,
        "log_score": log_score(pred, targets),
        "crps": crps(pred, targets, method=crps_method, key=crps_key,
                     num_samples=num_samples).tolist(),
        "rmse": rmse(pred, targets).tolist(),
        "mae": mae(pred, targets).tolist(),
        "pit_ks_statistic": statistic.tolist(),
        "pit_ks_pvalue": pvalue.tolist(),
        "coverage": intervals.as_dict(),
        "coverage_per_output": {float(level): row.tolist()
                                for level, row in zip(levels, intervals.per_output,
                                                      strict=True)},
        "pit_cvm_statistic": [float(result.statistic) for result in cvm],
        "pit_cvm_pvalue": [float(result.pvalue) for result in cvm],
        "interval_width": {float(level): row.tolist()
                           for level, row in zip(levels, widths, strict=True)},
        **extra,
    }
