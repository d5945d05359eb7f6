"""The photometric-redshift (photo-z) field's metrics: point errors, PIT tests, CDE loss.

Re-exported from :mod:`bayes_mdn.metrics`. Point metrics score a point estimate ``z_phot``
(usually the mode of p(z)) against the true (spectroscopic) redshift ``z_spec`` through
the scaled error ``dz = (z_phot - z_spec) / (1 + z_spec)``; density metrics score the whole
p(z), given either as a :class:`~bayes_mdn.PredictiveMixture` or as densities on a grid of
redshifts (how the field's estimators and the ``qp`` package store them). The conventions
are those of LSST DESC's RAIL and ``qp`` (Schmidt et al. 2020, MNRAS 499, 1587,
"Evaluation of probabilistic photometric redshift estimation approaches for LSST").

All functions are vectorised NumPy on the host, in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bayes_mdn._validation import check_choice, check_positive_float
from bayes_mdn.predictive import PredictiveMixture

__all__ = [
    "DEFAULT_REDSHIFT_GRID",
    "anderson_darling_uniform",
    "cde_loss",
    "gridded_cdf",
    "gridded_crps",
    "gridded_density",
    "median_bias",
    "outlier_rate",
    "photoz_dz",
    "photoz_report",
    "pit_tests",
    "sigma_iqr",
    "sigma_nmad",
]

#: RAIL's default redshift grid: 301 points from 0 to 3 (spacing 0.01).
DEFAULT_REDSHIFT_GRID = np.linspace(0.0, 3.0, 301)
#: Floor (per unit redshift) of a gridded density in :func:`photoz_report`'s log score, so
#: that a p(z) that is exactly zero at the true redshift costs ``log(1e-4) = -9.2`` nats
#: instead of ``-inf``; how many galaxies hit it is reported beside the score.
DEFAULT_MIN_DENSITY = 1e-4
#: IQR of a standard Normal, 2 Phi^-1(0.75): sigma_IQR = IQR / 1.349 estimates sigma.
_IQR_TO_SIGMA = 1.349
#: 1 / Phi^-1(0.75): sigma_NMAD = 1.4826 MAD estimates sigma of a Normal.
_MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------- validation
def _as_redshifts(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 array of finite values (an (N, 1) column is accepted)."""
    if hasattr(values, "to_numpy") and callable(values.to_numpy):
        values = values.to_numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a 1-D array of numbers (redshifts); got "
                        f"{type(values).__name__}.") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of shape (N,); got shape "
                         f"{array.shape}. Use z.reshape(-1) for a column.")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains {int((~np.isfinite(array)).sum())} NaN or "
                         "infinite values; drop those galaxies first.")
    return array


def _as_pair(z_phot: Any, z_spec: Any) -> tuple[np.ndarray, np.ndarray]:
    z_phot = _as_redshifts(z_phot, "z_phot")
    z_spec = _as_redshifts(z_spec, "z_spec")
    if z_phot.shape != z_spec.shape:
        raise ValueError(f"`z_phot` and `z_spec` must have the same length; got "
                         f"{z_phot.size} and {z_spec.size}.")
    if np.any(z_spec <= -1):
        raise ValueError("`z_spec` must be greater than -1 (dz divides by 1 + z_spec); got "
                         f"a minimum of {z_spec.min():.4g}.")
    return z_phot, z_spec


def _as_grid(grid: Any) -> np.ndarray:
    values = _as_redshifts(grid, "grid")
    if values.size < 2 or np.any(np.diff(values) <= 0):
        raise ValueError("`grid` must hold at least 2 strictly increasing redshifts, e.g. "
                         "np.linspace(0, 3, 301).")
    return values


def _as_gridded(pdf: Any, grid: Any, z_true: Any | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Densities (N, G) >= 0 normalised to integrate to 1 on `grid` (G,), and z_true (N,)
    inside the grid."""
    grid = _as_grid(grid)
    try:
        values = np.asarray(pdf, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`pdf` must be an array of densities of shape (N, G); got "
                        f"{type(pdf).__name__}.") from None
    if values.ndim != 2 or values.shape[1] != grid.size or values.shape[0] == 0:
        raise ValueError(f"`pdf` must have shape (N, {grid.size}): one row of densities per "
                         f"galaxy on the {grid.size} grid points; got shape {values.shape}.")
    if not np.isfinite(values).all() or np.any(values < 0):
        raise ValueError("`pdf` must hold finite, non-negative densities.")
    norm = np.trapezoid(values, grid, axis=1)
    if np.any(norm <= 0):
        raise ValueError(f"`pdf` has {int((norm <= 0).sum())} rows with no mass on the grid "
                         f"[{grid[0]:g}, {grid[-1]:g}]; every p(z) needs some.")
    values = values / norm[:, None]
    if z_true is not None:
        z_true = _as_redshifts(z_true, "z_true")
        if z_true.size != values.shape[0]:
            raise ValueError(f"`z_true` must have one value per row of `pdf` "
                             f"({values.shape[0]}); got {z_true.size}.")
        if z_true.min() < grid[0] or z_true.max() > grid[-1]:
            raise ValueError(f"`z_true` must lie inside the grid [{grid[0]:g}, "
                             f"{grid[-1]:g}]; got values from {z_true.min():.4g} to "
                             f"{z_true.max():.4g}. Widen the grid.")
    return values, grid, z_true


# --------------------------------------------------------------------------- point metrics
def photoz_dz(z_phot: Any, z_spec: Any) -> np.ndarray:
    """Scaled redshift error ``dz = (z_phot - z_spec) / (1 + z_spec)`` per galaxy.

    Parameters
    ----------
    z_phot : array-like, shape (N,)
        Point estimates (e.g. the mode of each p(z)).
    z_spec : array-like, shape (N,)
        True (spectroscopic) redshifts, each greater than -1.

    Returns
    -------
    numpy.ndarray, shape (N,), float64

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587, section 4.
    """
    z_phot, z_spec = _as_pair(z_phot, z_spec)
    return (z_phot - z_spec) / (1.0 + z_spec)


def sigma_iqr(z_phot: Any, z_spec: Any) -> float:
    """Robust scatter ``sigma_IQR = IQR(dz) / 1.349`` of the scaled error ``dz``.

    IQR is the interquartile range (75th minus 25th percentile, linear interpolation);
    1.349 is the IQR of a standard Normal, so sigma_IQR estimates the standard deviation
    of Normal errors while ignoring outliers.

    Parameters
    ----------
    z_phot, z_spec : array-like, shape (N,)
        Point estimates and true redshifts.

    Returns
    -------
    float

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587 (RAIL's ``PointSigmaIQR``).
    """
    q25, q75 = np.percentile(photoz_dz(z_phot, z_spec), [25.0, 75.0])
    return float((q75 - q25) / _IQR_TO_SIGMA)


def sigma_nmad(z_phot: Any, z_spec: Any) -> float:
    """Normalised median absolute deviation ``1.4826 median(|dz - median(dz)|)``.

    Parameters
    ----------
    z_phot, z_spec : array-like, shape (N,)
        Point estimates and true redshifts.

    Returns
    -------
    float

    References
    ----------
    Brammer, van Dokkum & Coppi 2008, ApJ 686, 1503 (EAZY), eq. 6; Ilbert et al. 2006,
    A&A 457, 841.
    """
    dz = photoz_dz(z_phot, z_spec)
    return float(_MAD_TO_SIGMA * np.median(np.abs(dz - np.median(dz))))


def median_bias(z_phot: Any, z_spec: Any) -> float:
    """Median of the scaled error ``dz`` (the field's robust bias).

    Parameters
    ----------
    z_phot, z_spec : array-like, shape (N,)
        Point estimates and true redshifts.

    Returns
    -------
    float

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587 (RAIL's ``PointBias``).
    """
    return float(np.median(photoz_dz(z_phot, z_spec)))


def outlier_rate(z_phot: Any, z_spec: Any, *, threshold: str | float = "rail") -> float:
    """Fraction of catastrophic outliers, ``|dz| > threshold``.

    Parameters
    ----------
    z_phot, z_spec : array-like, shape (N,)
        Point estimates and true redshifts.
    threshold : {"rail", "classic"} or float
        ``"rail"``: ``max(0.06, 3 sigma_IQR)`` (LSST Science Requirements Document, as in
        RAIL's ``PointOutlierRate``); ``"classic"``: 0.15 (Hildebrandt et al. 2010,
        A&A 523, A31); or a positive number.

    Returns
    -------
    float
        In [0, 1].

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587; Hildebrandt et al. 2010, A&A 523, A31.
    """
    dz = photoz_dz(z_phot, z_spec)
    if isinstance(threshold, str):
        rule = check_choice(threshold, "threshold", ("rail", "classic"))
        cut = max(0.06, 3.0 * sigma_iqr(z_phot, z_spec)) if rule == "rail" else 0.15
    else:
        cut = check_positive_float(threshold, "threshold")
    return float(np.mean(np.abs(dz) > cut))


# --------------------------------------------------------------------------- PIT tests
def _adinf(z: np.ndarray) -> np.ndarray:
    """Limiting cdf of the Anderson-Darling statistic (Marsaglia & Marsaglia 2004)."""
    z = np.asarray(z, np.float64)
    small = np.exp(-1.2337141 / np.maximum(z, 1e-300)) / np.sqrt(np.maximum(z, 1e-300)) * (
        2.00012 + (0.247105 - (0.0649821 - (0.0347962 - (0.011672 - 0.00168691 * z) * z)
                               * z) * z) * z)
    large = np.exp(-np.exp(1.0776 - (2.30695 - (0.43424 - (0.082433 - (
        0.008056 - 0.0003146 * z) * z) * z) * z) * z))
    return np.where(z <= 0, 0.0, np.where(z < 2, small, large))


def _aderrfix(n: int, x: float) -> float:
    """Finite-n correction of :func:`_adinf` (Marsaglia & Marsaglia 2004)."""
    c = 0.01265 + 0.1757 / n
    if x < c:
        t = x / c
        t = math.sqrt(t) * (1 - t) * (49 * t - 102)
        return t * (0.0037 / (n * n) + 0.00078 / n + 0.00006) / n
    if x < 0.8:
        t = (x - c) / (0.8 - c)
        t = -0.00022633 + (6.54034 - (14.6538 - (14.458 - (8.259 - 1.91864 * t) * t) * t)
                           * t) * t
        return t * (0.04213 / n + 0.01365 / (n * n)) / n
    return (-130.2137 + (745.2337 - (1705.091 - (1950.646 - (1116.360 - 255.7844 * x) * x)
                                     * x) * x) * x) / n


def anderson_darling_uniform(values: Any) -> tuple[float, float]:
    """Anderson-Darling test that `values` are Uniform(0, 1) (no parameters estimated).

    ``A^2 = -N - (1/N) sum_i (2i - 1) [ln u_(i) + ln(1 - u_(N+1-i))]`` over the sorted
    values u_(1) <= ... <= u_(N); it weights the tails more than Kolmogorov-Smirnov.
    Values are clipped to [1e-12, 1 - 1e-12] so that a PIT of exactly 0 or 1 gives a large
    finite statistic.

    Parameters
    ----------
    values : array-like, shape (N,)
        Values in [0, 1], e.g. PIT values.

    Returns
    -------
    statistic : float
        A^2.
    pvalue : float
        ``P(A^2 >= statistic)`` under uniformity, from Marsaglia & Marsaglia's (2004)
        approximation of the exact distribution (absolute error below about 1e-5 for
        N >= 5; 0.0 below 1e-300).

    References
    ----------
    Anderson & Darling 1954, JASA 49, 765; Marsaglia & Marsaglia 2004, J. Stat. Softw.
    9(2), "Evaluating the Anderson-Darling distribution".
    """
    u = _as_unit(values, "values")
    n = u.size
    ordered = np.clip(np.sort(u), 1e-12, 1.0 - 1e-12)
    weights = 2.0 * np.arange(1, n + 1) - 1.0
    statistic = float(-n - np.sum(weights * (np.log(ordered) + np.log1p(-ordered[::-1]))) / n)
    cdf = float(_adinf(statistic))
    cdf = cdf + _aderrfix(n, cdf)
    return statistic, float(min(1.0, max(0.0, 1.0 - cdf)))


def _as_unit(values: Any, name: str) -> np.ndarray:
    array = _as_redshifts(values, name)
    if np.any((array < 0) | (array > 1)):
        raise ValueError(f"`{name}` must lie in [0, 1] (PIT values); got values from "
                         f"{array.min():.4g} to {array.max():.4g}.")
    return array


def pit_tests(pit_values: Any) -> dict[str, float]:
    """Kolmogorov-Smirnov, Cramér-von Mises and Anderson-Darling tests of uniform PIT.

    Under calibration the PIT values ``u_i = F_i(z_i)`` are Uniform(0, 1). The three
    statistics measure the distance between their empirical cdf F_N and the diagonal:
    KS the largest gap ``sup |F_N(u) - u|`` (:func:`bayes_mdn.metrics.ks_uniform`),
    CvM the integrated squared gap ``N integral (F_N(u) - u)^2 du``
    (``scipy.stats.cramervonmises``), AD the same weighted by ``1 / (u (1 - u))``, so
    sensitive to the tails (catastrophic outliers), :func:`anderson_darling_uniform`. With
    tens of thousands of galaxies every p-value is tiny; compare the statistics.

    Parameters
    ----------
    pit_values : array-like, shape (N,)
        PIT values in [0, 1] (:func:`bayes_mdn.metrics.pit` or :func:`gridded_cdf`).

    Returns
    -------
    dict
        ``ks_statistic``, ``ks_pvalue``, ``cvm_statistic``, ``cvm_pvalue``,
        ``ad_statistic``, ``ad_pvalue`` (floats).

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587, section 4.1 (the PIT and its KS, CvM and AD
    statistics as used by RAIL and qp); Anderson & Darling 1954, JASA 49, 765.
    """
    from scipy.stats import cramervonmises

    from bayes_mdn.metrics import ks_uniform

    u = _as_unit(pit_values, "pit_values")
    ks_statistic, ks_pvalue = ks_uniform(u)
    cvm = cramervonmises(u, "uniform")
    ad_statistic, ad_pvalue = anderson_darling_uniform(u)
    return {"ks_statistic": float(ks_statistic[0]), "ks_pvalue": float(ks_pvalue[0]),
            "cvm_statistic": float(cvm.statistic), "cvm_pvalue": float(cvm.pvalue),
            "ad_statistic": ad_statistic, "ad_pvalue": ad_pvalue}


# --------------------------------------------------------------------------- gridded p(z)
def _locate(grid: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval index j (grid[j] <= z <= grid[j + 1]) and offset z - grid[j]."""
    index = np.clip(np.searchsorted(grid, z, side="right") - 1, 0, grid.size - 2)
    return index, z - grid[index]


def gridded_density(pdf: Any, grid: Any, z: Any) -> np.ndarray:
    """Density of each galaxy's gridded p(z) at one redshift, by linear interpolation.

    Parameters
    ----------
    pdf : array-like, shape (N, G)
        Densities on `grid` (normalised here to integrate to 1 by the trapezoid rule).
    grid : array-like, shape (G,)
        Strictly increasing redshifts.
    z : array-like, shape (N,)
        One redshift per galaxy, inside the grid.

    Returns
    -------
    numpy.ndarray, shape (N,)
    """
    return _density_at(*_as_gridded(pdf, grid, z))


def _density_at(values: np.ndarray, grid: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`gridded_density` of arguments already checked by :func:`_as_gridded`."""
    index, offset = _locate(grid, z)
    rows = np.arange(values.shape[0])
    slope = (values[rows, index + 1] - values[rows, index]) / np.diff(grid)[index]
    return values[rows, index] + slope * offset


def gridded_cdf(pdf: Any, grid: Any, z: Any) -> np.ndarray:
    """Cdf of each galaxy's gridded p(z) at one redshift (the PIT when z is the truth).

    Exact for the piecewise-linear density through the grid values:
    ``F(z) = C_j + (z - g_j) (p_j + p(z)) / 2`` with C the cumulative trapezoid integral.

    Parameters
    ----------
    pdf : array-like, shape (N, G)
        Densities on `grid` (normalised here).
    grid : array-like, shape (G,)
    z : array-like, shape (N,)
        Inside the grid.

    Returns
    -------
    numpy.ndarray, shape (N,), in [0, 1]
    """
    return _cdf_at(*_as_gridded(pdf, grid, z))


def _cdf_at(values: np.ndarray, grid: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`gridded_cdf` of arguments already checked by :func:`_as_gridded`."""
    cumulative = _cumulative(values, grid)
    index, offset = _locate(grid, z)
    rows = np.arange(values.shape[0])
    at_z = _density_at(values, grid, z)
    return np.clip(cumulative[rows, index] + offset * (values[rows, index] + at_z) / 2, 0, 1)


def _cumulative(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral (N, G), starting at 0."""
    steps = 0.5 * (values[:, 1:] + values[:, :-1]) * np.diff(grid)
    return np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(steps, axis=1)], axis=1)


def gridded_crps(pdf: Any, grid: Any, z_true: Any) -> np.ndarray:
    """CRPS of each galaxy's gridded p(z): ``integral (F(z) - 1{z >= z_true})^2 dz``.

    Over the grid, with F the cumulative trapezoid integral of the normalised density at
    the grid points, linear between them, and ``(F - H)^2 = F^2 - 2 F H + H``: every term
    is integrated exactly for that piecewise-linear F, ``integral_{z_true} F`` split at
    z_true.

    Parameters
    ----------
    pdf : array-like, shape (N, G)
    grid : array-like, shape (G,)
    z_true : array-like, shape (N,)
        Inside the grid.

    Returns
    -------
    numpy.ndarray, shape (N,)
        In units of redshift (lower is better).

    References
    ----------
    Gneiting & Raftery 2007, JASA 102, 359; Polsterer, D'Isanto & Gieseke 2016
    (CRPS for photo-z), arXiv:1608.08016.
    """
    return _crps_at(*_as_gridded(pdf, grid, z_true))


def _crps_at(values: np.ndarray, grid: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """:func:`gridded_crps` of arguments already checked by :func:`_as_gridded`."""
    cdf = np.clip(_cumulative(values, grid), 0.0, 1.0)
    index, offset = _locate(grid, z_true)
    rows = np.arange(values.shape[0])
    spacing = np.diff(grid)
    cdf_at = cdf[rows, index] + (cdf[rows, index + 1] - cdf[rows, index]) * offset / spacing[
        index]
    integral_cdf = _cumulative(cdf, grid)  # integral of the linear interpolant of F
    below = integral_cdf[rows, index] + offset * (cdf[rows, index] + cdf_at) / 2
    above = integral_cdf[:, -1] - below
    left, right = cdf[:, :-1], cdf[:, 1:]  # F linear on each interval: integral of F^2 exact
    squared = np.sum(spacing * (left * left + left * right + right * right) / 3.0, axis=1)
    return np.maximum(squared - 2.0 * above + (grid[-1] - z_true), 0.0)


def cde_loss(pdf: Any, grid: Any, z_true: Any) -> float:
    """Conditional density estimation loss ``E[integral p(z)^2 dz] - 2 E[p(z_true)]``.

    Up to a constant that does not depend on the estimate, the integrated squared error
    between the estimated and true conditional densities (lower is better; can be
    negative). Both terms are averaged over galaxies; the first by the trapezoid rule on
    the grid, the second by linear interpolation at each true redshift.

    Parameters
    ----------
    pdf : array-like, shape (N, G)
        Densities on `grid` (normalised here to integrate to 1).
    grid : array-like, shape (G,)
    z_true : array-like, shape (N,)
        Inside the grid.

    Returns
    -------
    float

    References
    ----------
    Izbicki & Lee 2017, Electron. J. Statist. 11, 2800, "Converting high-dimensional
    regression to high-dimensional conditional density estimation", eq. 3.
    """
    return _cde_loss_at(*_as_gridded(pdf, grid, z_true))


def _cde_loss_at(values: np.ndarray, grid: np.ndarray, z_true: np.ndarray) -> float:
    """:func:`cde_loss` of arguments already checked by :func:`_as_gridded`."""
    square = np.trapezoid(np.square(values), grid, axis=1)
    return float(np.mean(square) - 2.0 * np.mean(_density_at(values, grid, z_true)))


# --------------------------------------------------------------------------- report
def photoz_report(
    pred: Any,
    z_true: Any,
    *,
    grid: Any = None,
    z_phot: Any = None,
    min_density: float = DEFAULT_MIN_DENSITY,
) -> dict[str, Any]:
    """The field's point and density metrics of photo-z estimates in one JSON-ready dict.

    Parameters
    ----------
    pred : PredictiveMixture or array-like of shape (N, G)
        Either a bayes_mdn predictive with one output (the redshift) at N galaxies, or each
        galaxy's p(z) as densities on `grid` (how other estimators and ``qp`` store them;
        normalised here on the grid).
    z_true : array-like, shape (N,)
        True redshifts.
    grid : array-like, shape (G,), optional
        Redshift grid (default :data:`DEFAULT_REDSHIFT_GRID`, 0 to 3 by 0.01). For a
        predictive it is where the mode and the CDE loss are evaluated.
    z_phot : array-like, shape (N,), optional
        Point estimates for the point metrics; default the mode of each p(z) on the grid
        (the grid point of highest density, RAIL's ``zmode``).
    min_density : float
        Floor of a gridded density in the log score (see
        :data:`DEFAULT_MIN_DENSITY`); unused for a predictive, whose log score is exact.

    Returns
    -------
    dict
        ``num_galaxies``; ``density``: ``"exact"`` (a predictive: log score, CRPS and PIT
        from :func:`bayes_mdn.metrics.log_score`, :func:`bayes_mdn.metrics.crps`,
        :func:`bayes_mdn.metrics.pit`) or ``"grid"`` (log of the interpolated density
        floored at `min_density`, :func:`gridded_crps`, :func:`gridded_cdf`);
        ``sigma_iqr``, ``sigma_nmad``, ``bias``, ``outlier_rate`` (RAIL rule),
        ``outlier_threshold``, ``outlier_rate_0.15``; ``log_score`` (nats per galaxy, higher
        is better), ``crps`` (lower is better), ``cde_loss`` (lower is better),
        ``num_below_floor``; and the PIT tests of :func:`pit_tests` prefixed ``pit_``.

    References
    ----------
    Schmidt et al. 2020, MNRAS 499, 1587.
    """
    from bayes_mdn import metrics

    grid = _as_grid(DEFAULT_REDSHIFT_GRID if grid is None else grid)
    min_density = check_positive_float(min_density, "min_density")
    z_true = _as_redshifts(z_true, "z_true")
    if isinstance(pred, PredictiveMixture):
        if pred.num_outputs != 1:
            raise ValueError(f"photoz_report() needs a predictive of one output (the "
                             f"redshift); this one has D = {pred.num_outputs}.")
        if z_true.size != pred.num_inputs:
            raise ValueError(f"`z_true` must have one value per input of the predictive "
                             f"({pred.num_inputs}); got {z_true.size}.")
        pdf = np.exp(pred.log_prob_grid(grid))
        log_density = metrics.log_score(pred, z_true, pointwise=True)
        log_score = float(np.mean(log_density))
        cde = _cde_loss_exact(pdf, grid, log_density)
        crps = float(metrics.crps(pred, z_true)[0])
        pit_values = metrics.pit(pred, z_true)[:, 0]
        density, below = "exact", 0
    else:
        pdf, grid, z_true = _as_gridded(pred, grid, z_true)
        at_true = _density_at(pdf, grid, z_true)
        below = int(np.sum(at_true < min_density))
        log_score = float(np.mean(np.log(np.maximum(at_true, min_density))))
        crps = float(np.mean(_crps_at(pdf, grid, z_true)))
        pit_values = _cdf_at(pdf, grid, z_true)
        cde = _cde_loss_at(pdf, grid, z_true)
        density = "grid"
    if z_phot is None:
        z_phot = grid[np.argmax(pdf, axis=1)]
    z_phot, _ = _as_pair(z_phot, z_true)
    scatter = sigma_iqr(z_phot, z_true)
    return {
        "num_galaxies": int(z_true.size),
        "density": density,
        "sigma_iqr": scatter,
        "sigma_nmad": sigma_nmad(z_phot, z_true),
        "bias": median_bias(z_phot, z_true),
        "outlier_rate": outlier_rate(z_phot, z_true, threshold="rail"),
        "outlier_threshold": max(0.06, 3.0 * scatter),
        "outlier_rate_0.15": outlier_rate(z_phot, z_true, threshold="classic"),
        "log_score": log_score,
        "crps": crps,
        "cde_loss": cde,
        "num_below_floor": below,
        **{f"pit_{name}": value for name, value in pit_tests(pit_values).items()},
    }


def _cde_loss_exact(pdf: np.ndarray, grid: np.ndarray, log_density: np.ndarray) -> float:
    """CDE loss of a predictive: ``integral p^2`` on the grid, ``p(z_true)`` exact."""
    square = np.trapezoid(np.square(pdf), grid, axis=1)
    return float(np.mean(square) - 2.0 * np.mean(np.exp(log_density)))
