"""The photo-z field's figures: p(z) of chosen galaxies, z_phot against z_spec, stacked n(z).

Re-exported from :mod:`bayes_mdn.plotting`. Each function takes ``ax=None`` (a new figure)
and returns the Axes. A p(z) is given either as a :class:`~bayes_mdn.PredictiveMixture`
with one output (the redshift) or as densities (N, G) on a redshift grid (G,), how the
field's estimators and ``qp`` store them. The PIT histogram with its uniform band is
:func:`bayes_mdn.plotting.plot_pit` (pass it PIT values, e.g. from
:func:`bayes_mdn.metrics.gridded_cdf`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bayes_mdn._photoz_metrics import (
    DEFAULT_REDSHIFT_GRID,
    _as_grid,
    _as_pair,
    _as_redshifts,
    outlier_rate,
    sigma_nmad,
)
from bayes_mdn._validation import check_positive_float, check_positive_int
from bayes_mdn.predictive import PredictiveMixture

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_nz", "plot_pdz", "plot_zphot_zspec"]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _densities(source: Any, grid: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Densities (n, G) of a predictive or a gridded p(z) array at `rows` (all if None)."""

    if isinstance(source, PredictiveMixture):
        if source.num_outputs != 1:
            raise ValueError(f"a p(z) predictive must have one output (the redshift); this "
                             f"one has D = {source.num_outputs}.")
        part = source if rows is None else source[rows]
        return np.exp(part.log_prob_grid(grid))
    try:
        values = np.asarray(source, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"a p(z) must be a PredictiveMixture or an array of densities (N, G); "
                        f"got {type(source).__name__}.") from None
    if values.ndim != 2 or values.shape[1] != grid.size:
        raise ValueError(f"a gridded p(z) must have shape (N, {grid.size}) to match `grid`; "
                         f"got shape {values.shape}.")
    if not np.isfinite(values).all() or np.any(values < 0):
        raise ValueError("a gridded p(z) must hold finite, non-negative densities.")
    return values if rows is None else values[rows]


def _num_rows(source: Any) -> int:

    if isinstance(source, PredictiveMixture):
        return source.num_inputs
    return int(np.shape(source)[0])


def plot_pdz(pdz: Any, index: int, *, grid: Any = None, z_true: float | None = None,
             ax: Axes | None = None) -> Axes:
    """The p(z) of one galaxy, from one or several estimators, with its true redshift.

    Parameters
    ----------
    pdz : PredictiveMixture, array-like of shape (N, G), or mapping of str to either
        The p(z) of N galaxies; a mapping overlays several estimators (its keys label the
        curves). Gridded densities are drawn as given (not renormalised).
    index : int
        Which galaxy.
    grid : array-like, shape (G,), optional
        Redshift grid of gridded densities, and where a predictive is evaluated (default
        0 to 3 by 0.01).
    z_true : float, optional
        The galaxy's true redshift, marked with a vertical line.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    grid = _as_grid(DEFAULT_REDSHIFT_GRID if grid is None else grid)
    sources = dict(pdz) if isinstance(pdz, Mapping) else {"p(z)": pdz}
    if not sources:
        raise ValueError("`pdz` is an empty mapping; give at least one estimator's p(z).")
    ax = _axes(ax)
    for label, source in sources.items():
        num = _num_rows(source)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (
                0 <= index < num):
            raise ValueError(f"`index` must be an integer in [0, {num - 1}]; got {index!r}.")
        ax.plot(grid, _densities(source, grid, np.array([int(index)]))[0], label=str(label))
    if z_true is not None:
        ax.axvline(float(z_true), color="k", linestyle="--", linewidth=1, label="true z")
    ax.set_xlabel("redshift z")
    ax.set_ylabel("p(z)")
    ax.legend(fontsize=8)
    return ax


def plot_zphot_zspec(z_phot: Any, z_spec: Any, *, bins: int = 150,
                     outlier_cut: float | None = 0.15, ax: Axes | None = None) -> Axes:
    """Density of point estimates against true redshifts, with the 1:1 line.

    A 2-D histogram on a logarithmic colour scale (most galaxies sit on the diagonal; the
    outliers are a few per cent), with the lines ``|dz| = outlier_cut``, that is
    ``z_phot = z_spec +- outlier_cut (1 + z_spec)``. The title gives sigma_NMAD and the
    fraction outside the lines.

    Parameters
    ----------
    z_phot, z_spec : array-like, shape (N,)
        Point estimates (e.g. modes of p(z)) and true redshifts.
    bins : int
        Histogram bins per axis.
    outlier_cut : float or None
        Where to draw the outlier lines (0.15: the classic cut); None draws none.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.colors import LogNorm


    z_phot, z_spec = _as_pair(z_phot, z_spec)
    bins = check_positive_int(bins, "bins", minimum=2)
    if outlier_cut is not None:
        outlier_cut = check_positive_float(outlier_cut, "outlier_cut")
    ax = _axes(ax, (5.0, 4.5))
    high = float(max(z_phot.max(), z_spec.max()))
    low = float(min(z_phot.min(), z_spec.min(), 0.0))
    edges = np.linspace(low, high, bins + 1)
    *_, image = ax.hist2d(z_spec, z_phot, bins=[edges, edges], norm=LogNorm(), cmap="viridis",
                          cmin=1)
    ax.figure.colorbar(image, ax=ax, label="galaxies per bin")
    line = np.array([low, high])
    ax.plot(line, line, color="k", linewidth=0.8)
    title = f"sigma_NMAD {sigma_nmad(z_phot, z_spec):.4f}"
    if outlier_cut is not None:
        for sign in (-1, 1):
            ax.plot(line, line + sign * outlier_cut * (1 + line), color="C3", linestyle="--",
                    linewidth=0.8)
        rate = outlier_rate(z_phot, z_spec, threshold=outlier_cut)
        title += f", |dz| > {outlier_cut:g}: {rate:.1%}"
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="true z (z_spec)",
           ylabel="point estimate (z_phot)", title=title)
    return ax


def plot_nz(pdz: Any, z_true: Any = None, *, grid: Any = None, bins: int = 60,
            ax: Axes | None = None) -> Axes:
    """Stacked redshift distribution n(z) = mean of the p(z), against the true histogram.

    Stacking (averaging) every galaxy's p(z) estimates the sample's redshift distribution,
    the quantity weak-lensing analyses need; the histogram of the true redshifts is what
    it should match.

    Parameters
    ----------
    pdz : PredictiveMixture, array-like of shape (N, G), or mapping of str to either
        The p(z) of N galaxies; a mapping overlays several estimators.
    z_true : array-like, shape (N,), optional
        True redshifts, drawn as a density histogram.
    grid : array-like, shape (G,), optional
        Redshift grid (default 0 to 3 by 0.01).
    bins : int
        Histogram bins of the true redshifts.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    grid = _as_grid(DEFAULT_REDSHIFT_GRID if grid is None else grid)
    sources = dict(pdz) if isinstance(pdz, Mapping) else {"stacked p(z)": pdz}
    if not sources:
        raise ValueError("`pdz` is an empty mapping; give at least one estimator's p(z).")
    bins = check_positive_int(bins, "bins", minimum=2)
    ax = _axes(ax)
    if z_true is not None:
        z_true = _as_redshifts(z_true, "z_true")
        ax.hist(z_true, bins=np.linspace(grid[0], grid[-1], bins + 1), density=True,
                color="0.75", label="true z")
    for label, source in sources.items():
        if z_true is not None and _num_rows(source) != z_true.size:
            raise ValueError(f"`z_true` must have one value per galaxy of the p(z) "
                             f"({_num_rows(source)}); got {z_true.size}.")
        stacked = _densities(source, grid).mean(axis=0)
        stacked = stacked / np.trapezoid(stacked, grid)
        ax.plot(grid, stacked, label=str(label))
    ax.set_xlabel("redshift z")
    ax.set_ylabel("n(z)")
    ax.legend(fontsize=8)
    return ax
