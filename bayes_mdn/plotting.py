"""Matplotlib figures. Each function takes ``ax=None`` (a new figure) and returns the Axes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn import metrics
from bayes_mdn._photoz_plots import plot_nz, plot_pdz, plot_zphot_zspec
from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_choice,
    check_key,
    check_positive_int,
)
from bayes_mdn.diagnostics import QUANTILE_LEVELS, function_space_draws
from bayes_mdn.numerics import rhat_ess
from bayes_mdn.predictive import PredictiveMixture

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bayes_mdn.posterior import Posterior

__all__ = [
    "plot_conditional_density",
    "plot_coverage",
    "plot_elbo",
    "plot_mixture",
    "plot_nz",
    "plot_pdz",
    "plot_pit",
    "plot_predictive_samples",
    "plot_rank",
    "plot_training_curves",
    "plot_zphot_zspec",
]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _axis_names(posterior: Posterior) -> tuple[str, str]:
    """Labels of the first input and output: the pandas column names seen at fit time
    (``info["feature_names"]``, ``info["target_names"]``), else "x" and "y"."""
    features = posterior.info.get("feature_names") or ["x"]
    targets = posterior.info.get("target_names") or ["y"]
    return str(features[0]), str(targets[0])


def _require_one_output(num_outputs: int, what: str) -> None:
    if num_outputs != 1:
        raise ValueError(f"{what} draws one output (D = 1); this model has D = {num_outputs}.")


def plot_training_curves(posterior: Posterior, *, optimal: float | None = None,
                         ax: Axes | None = None) -> Axes:
    """Train (and held-out) log-likelihood per point against the optimisation step.

    Parameters
    ----------
    posterior : Posterior
        A fit that recorded ``history["train_log_likelihood"]`` (e.g. ``method="map"``).
    optimal : float, optional
        A reference value drawn as a dashed line (e.g. the Bayes-optimal log-likelihood).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    history = posterior.history
    if "train_log_likelihood" not in history:
        raise ValueError(f"This {posterior.method!r} fit recorded no log-likelihood history.")
    ax = _axes(ax)
    steps = history["eval_step"]
    ax.plot(steps, history["train_log_likelihood"], label="train")
    if "test_log_likelihood" in history:
        ax.plot(steps, history["test_log_likelihood"], label="test")
    if optimal is not None:
        ax.axhline(optimal, color="k", linestyle="--", linewidth=1, label="optimal")
    ax.set_xlabel("step")
    ax.set_ylabel("log-likelihood per point (nats)")
    ax.legend()
    return ax


def plot_mixture(predictive: PredictiveMixture, index: int = 0, *, y_grid: Any = None,
                 show_components: bool = True, true_value: float | None = None,
                 max_components: int = 60, ax: Axes | None = None) -> Axes:
    """The predictive density at one input with its weighted components (the seed's
    ``plot_normal_mix``).

    Parameters
    ----------
    predictive : PredictiveMixture
        With one output (D = 1).
    index : int
        Which input to draw.
    y_grid : array-like, shape (G,), optional
        Where to evaluate; defaults to 400 points over the 0.001-0.999 quantiles, widened 10 %.
    show_components : bool
        Draw each weighted component ``w_k p_k(y)``. With many draws only the
        `max_components` heaviest are drawn.
    true_value : float, optional
        Marked with a vertical line (e.g. the held-out y).
    max_components : int
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    _require_one_output(predictive.num_outputs, "plot_mixture")
    single = predictive[int(index)]
    if y_grid is None:
        low, high = single.quantiles(np.array([1e-3, 1 - 1e-3]))[:, 0, 0]
        pad = 0.1 * (high - low)
        y_grid = np.linspace(low - pad, high + pad, 400)
    grid = np.asarray(y_grid, dtype=np.float64).reshape(-1)
    ax = _axes(ax)
    if show_components:
        log_weights, params = single.mixture_parameters()
        heaviest = np.argsort(-log_weights[0])[:check_positive_int(max_components,
                                                                     "max_components")]
        component_params = {name: value[0, heaviest] for name, value in params.items()}
        distribution = predictive.model.family.distribution(component_params)
        component_lp = np.asarray(distribution.log_prob(grid[:, None, None]))  # (G, k)
        ax.plot(grid, np.exp(component_lp + log_weights[0, heaviest]), color="0.6",
                linewidth=0.8, alpha=0.8)
    density = np.exp(single.log_prob_grid(grid)[0])
    ax.plot(grid, density, color="C0", linewidth=2, label="predictive density")
    if true_value is not None:
        ax.axvline(true_value, color="C3", linestyle="--", label="true value")
    ax.set_xlabel("y")
    ax.set_ylabel("density")
    ax.legend()
    return ax


def plot_predictive_samples(posterior: Posterior, X: Any, *, key: jax.Array,
                            num_samples: int = 1, gridsize: int = 50,
                            ax: Axes | None = None) -> Axes:
    """Hexbin of samples from the predictive over a single input feature (the seed's joint
    plot of x against sampled y).

    Parameters
    ----------
    posterior : Posterior
        Fitted on one feature and one output.
    X : array-like, shape (M, 1)
        Inputs at which to sample.
    key : PRNG key
    num_samples : int
        Samples per input.
    gridsize : int
        Hexagons across the x axis.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    key = check_key(key)
    _require_one_output(posterior.num_outputs, "plot_predictive_samples")
    inputs = as_features(X, "X", num_features=posterior.num_features)
    if inputs.shape[1] != 1:
        raise ValueError("plot_predictive_samples draws one input feature (P = 1).")
    samples = posterior.predictive(inputs).sample(key, num_samples=num_samples)  # (n, M, 1)
    x = np.broadcast_to(inputs[:, 0], samples.shape[:2]).reshape(-1)
    ax = _axes(ax)
    ax.hexbin(x, samples[..., 0].reshape(-1), gridsize=gridsize, cmap="Blues", mincnt=1)
    x_name, y_name = _axis_names(posterior)
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"sampled {y_name}")
    return ax


def plot_conditional_density(posterior: Posterior, *, x_range: tuple[float, float],
                             y_range: tuple[float, float], data: tuple[Any, Any] | None = None,
                             resolution: tuple[int, int] = (200, 200),
                             max_points: int = 2000, ax: Axes | None = None) -> Axes:
    """The predictive density p(y | x) as an image over a box, with data on top.

    Each column is normalised to its maximum so that multimodal regions stay visible where
    the density is spread out.

    Parameters
    ----------
    posterior : Posterior
        Fitted on one feature and one output.
    x_range, y_range : (float, float)
        The box to draw.
    data : (X, y), optional
        Points scattered on top (at most `max_points`, evenly thinned).
    resolution : (int, int)
        Grid points along x and y.
    max_points : int
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    _require_one_output(posterior.num_outputs, "plot_conditional_density")
    if posterior.num_features != 1:
        raise ValueError("plot_conditional_density draws one input feature (P = 1).")
    num_x = check_positive_int(resolution[0], "resolution[0]", minimum=2)
    num_y = check_positive_int(resolution[1], "resolution[1]", minimum=2)
    x_grid = np.linspace(*x_range, num_x)
    y_grid = np.linspace(*y_range, num_y)
    log_density = posterior.predictive(x_grid[:, None]).log_prob_grid(y_grid)  # (nx, ny)
    relative = np.exp(log_density - log_density.max(axis=1, keepdims=True))
    ax = _axes(ax)
    ax.imshow(relative.T, origin="lower", aspect="auto", cmap="magma",
              extent=(x_range[0], x_range[1], y_range[0], y_range[1]))
    if data is not None:
        X_data = as_features(data[0], "data[0]", num_features=1)[:, 0]
        y_data = as_targets(data[1], "data[1]", num_outputs=1)[:, 0]
        step = max(1, X_data.size // check_positive_int(max_points, "max_points"))
        ax.scatter(X_data[::step], y_data[::step], s=3, color="cyan", alpha=0.5,
                   label="data")
        ax.legend(loc="upper left")
    x_name, y_name = _axis_names(posterior)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    return ax



def _binomial_interval(num_trials: int, probability: float, level: float
                       ) -> tuple[int, int]:
    """Central `level` interval of Binomial(num_trials, probability) counts (exact)."""
    counts = np.arange(num_trials + 1, dtype=np.float64)
    log_choose = np.concatenate(
        [[0.0], np.cumsum(np.log((num_trials - counts[1:] + 1) / counts[1:]))])
    log_pmf = (log_choose + counts * np.log(probability)
               + (num_trials - counts) * np.log1p(-probability))
    cdf = np.cumsum(np.exp(log_pmf - log_pmf.max()))
    cdf /= cdf[-1]
    lower = int(np.searchsorted(cdf, (1 - level) / 2))
    upper = int(np.searchsorted(cdf, (1 + level) / 2))
    return lower, min(upper, num_trials)


def plot_pit(pred_or_pit_values: PredictiveMixture | Any, y: Any = None, *, bins: int = 20,
             output: int | None = None, key: jax.Array | None = None, band: float = 0.99,
             ax: Axes | None = None) -> Axes:
    """Histogram of PIT values with the band a uniform sample would stay inside.

    Under calibration the PIT values (:func:`bayes_mdn.metrics.pit`) are uniform, so every
    bar should lie near 1 (the dashed line): a U shape means an over-confident
    (too narrow) predictive, a hump an under-confident one, a slope a biased one. The grey
    band holds each bar's height with probability `band` under uniformity (exact binomial
    quantiles of one bin's count; with many bins a few bars outside it are expected).

    Parameters
    ----------
    pred_or_pit_values : PredictiveMixture or array-like of shape (N,) or (N, D)
        A predictive (then pass `y`) or PIT values in [0, 1].
    y : array-like, shape (N,) or (N, D), optional
        Targets, required with a predictive.
    bins : int
        Equal-width bins on [0, 1] (at least 2).
    output : int, optional
        Which output's PIT values to draw; default all outputs pooled.
    key : PRNG key, optional
        For the randomised PIT of a discrete family.
    band : float
        Probability of the uniform band, strictly between 0 and 1.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    if isinstance(pred_or_pit_values, PredictiveMixture):
        if y is None:
            raise ValueError("plot_pit() needs the targets `y` when given a PredictiveMixture; "
                             "pass plot_pit(pred, y_test).")
        values = metrics.pit(pred_or_pit_values, y, key=key)
    else:
        if y is not None:
            raise ValueError("`y` is used only with a PredictiveMixture; PIT values need no "
                             "targets. Pass plot_pit(pit_values) or plot_pit(pred, y).")
        values = as_targets(pred_or_pit_values, "pit_values")
        if np.any((values < 0) | (values > 1)):
            raise ValueError("PIT values must lie in [0, 1]; compute them with "
                             "bayes_mdn.metrics.pit(pred, y).")
    bins = check_positive_int(bins, "bins", minimum=2)
    if isinstance(band, bool) or not isinstance(band, (float, int, np.floating)) or not (
            0 < band < 1):
        raise ValueError(f"`band` must be a probability strictly between 0 and 1, e.g. 0.99; "
                         f"got {band!r}.")
    if output is None:
        selected = values.reshape(-1)
    else:
        if isinstance(output, bool) or not isinstance(output, (int, np.integer)) or not (
                0 <= output < values.shape[1]):
            raise ValueError(f"`output` must be an integer in [0, {values.shape[1] - 1}] or "
                             f"None (all outputs pooled); got {output!r}.")
        selected = values[:, int(output)]
    num_values = selected.size
    low, high = _binomial_interval(num_values, 1.0 / bins, float(band))
    ax = _axes(ax)
    ax.hist(selected, bins=np.linspace(0.0, 1.0, bins + 1), density=True, color="C0",
            alpha=0.85, edgecolor="white", label="PIT")
    ax.axhspan(low * bins / num_values, high * bins / num_values, color="0.5", alpha=0.3,
               label=f"{band:.0%} band if uniform")
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="uniform")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("PIT value")
    ax.set_ylabel("density")
    ax.legend()
    return ax


#: Default levels of :func:`plot_coverage`: 0.05, 0.10, ..., 0.95.
_RELIABILITY_LEVELS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())


def plot_coverage(pred_or_coverage: PredictiveMixture | Any, y: Any = None,
                  levels: Any = _RELIABILITY_LEVELS, *, kind: str = "central",
                  ax: Axes | None = None) -> Axes:
    """Reliability curve: empirical coverage of the predictive regions against their level.

    A calibrated predictive follows the diagonal, within the shaded band of two binomial
    standard errors; below it the regions are too narrow (over-confident), above it too
    wide.

    Parameters
    ----------
    pred_or_coverage : PredictiveMixture or bayes_mdn.metrics.Coverage
        A predictive (then pass `y`), or a result of :func:`bayes_mdn.metrics.coverage`.
    y : array-like, shape (N,) or (N, D), optional
        Targets, required with a predictive.
    levels : array-like, shape (L,)
        Nominal levels strictly between 0 and 1 (ignored for a Coverage); default 0.05,
        0.10, ..., 0.95.
    kind : {"central", "hdr"}
        Region type (see :func:`bayes_mdn.metrics.coverage`; ignored for a Coverage).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One line per output (D > 1) or a single "empirical" line, plus the diagonal.
    """
    if isinstance(pred_or_coverage, metrics.Coverage):
        if y is not None:
            raise ValueError("`y` is used only with a PredictiveMixture; a Coverage result "
                             "already holds the empirical coverage.")
        result = pred_or_coverage
    elif isinstance(pred_or_coverage, PredictiveMixture):
        if y is None:
            raise ValueError("plot_coverage() needs the targets `y` when given a "
                             "PredictiveMixture; pass plot_coverage(pred, y_test).")
        result = metrics.coverage(pred_or_coverage, y, levels, kind=kind)
    else:
        raise TypeError(f"plot_coverage() takes a PredictiveMixture or a "
                        f"bayes_mdn.metrics.Coverage; got {type(pred_or_coverage).__name__}.")
    order = np.argsort(result.levels)
    nominal = result.levels[order]
    spread = 2 * result.standard_error[order]
    ax = _axes(ax, figsize=(4.5, 4.5))
    ax.fill_between(nominal, np.clip(nominal - spread, 0, 1), np.clip(nominal + spread, 0, 1),
                    color="0.5", alpha=0.3, label="±2 s.e. if calibrated")
    ax.plot([0.0, 1.0], [0.0, 1.0], color="k", linestyle="--", linewidth=1, label="ideal")
    if result.per_output.shape[1] == 1:
        ax.plot(nominal, result.per_output[order, 0], "o-", color="C0", label="empirical")
    else:
        for column in range(result.per_output.shape[1]):
            ax.plot(nominal, result.per_output[order, column], "o-", label=f"output {column}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel(f"nominal level ({result.kind} regions)")
    ax.set_ylabel("empirical coverage")
    ax.legend(loc="upper left")
    return ax


RANK_QUANTITIES = ("log_density", "median", "effective_components")


def plot_rank(posterior: Posterior, quantity: str = "log_density", *, X: Any = None,
              y: Any = None, point: int | None = None, num_bins: int | None = None,
              ax: Axes | None = None) -> Axes:
    """Rank plot of a function-space quantity: one rank histogram per chain.

    All C x S draws are ranked together; if the chains sample the same distribution, every
    chain's ranks are uniform (flat bars at the dashed line). A chain stuck in its own mode
    piles its ranks at one end. Unlike rank plots of raw weights, this is not fooled by
    permuted hidden units or components (see :mod:`bayes_mdn.diagnostics`).

    Parameters
    ----------
    posterior : Posterior
    quantity : str
        ``"log_density"`` (log density of the reference targets, summed over the reference
        points, or at `point`), ``"median"`` (each draw's predictive median of the first
        output, averaged over the reference inputs, or at `point`) or
        ``"effective_components"``.
    X, y : array-like, optional
        Reference data, shapes (N, P) and (N,) or (N, D); default the training rows stored at
        fit time (see :func:`bayes_mdn.diagnostics.function_space_draws`).
    point : int, optional
        Index of one reference point instead of the sum or average.
    num_bins : int, optional
        Histogram bins (default: about one per 5 draws per chain, at most 20).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    quantity = check_choice(quantity, "quantity", RANK_QUANTITIES)
    values = function_space_draws(posterior, X, y)
    if quantity == "log_density":
        if "log_density" not in values:
            raise ValueError("plot_rank(quantity='log_density') needs reference targets: pass "
                             "X and y, or use quantity='median'.")
        per_point = values["log_density"]  # (C, S, M)
    elif quantity == "median":
        per_point = values["quantiles"][:, :, QUANTILE_LEVELS.index(0.5), :, 0]  # (C, S, M)
    else:
        per_point = values["effective_components"][..., None]
    num_points = per_point.shape[-1]
    if point is not None:
        if isinstance(point, bool) or not isinstance(point, (int, np.integer)):
            raise TypeError(f"`point` must be an integer index; got {point!r}.")
        if not -num_points <= point < num_points:
            raise ValueError(f"`point`={point} is out of range for {num_points} reference "
                             f"points; pass 0 to {num_points - 1}.")
        scalar = per_point[..., point]
    elif quantity == "log_density":
        scalar = per_point.sum(axis=-1)
    else:
        scalar = per_point.mean(axis=-1)
    chains, draws = scalar.shape
    if num_bins is None:
        num_bins = max(1, min(20, draws // 5))
    num_bins = check_positive_int(num_bins, "num_bins")
    flat = scalar.reshape(-1)
    ranks = np.empty(flat.size)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    ranks = ranks.reshape(chains, draws)
    edges = np.linspace(0, flat.size, num_bins + 1)
    ax = _axes(ax)
    expected = draws / num_bins
    height = 0.9 / max(expected, 1e-12)
    for chain in range(chains):
        counts, _ = np.histogram(ranks[chain], bins=edges)
        ax.bar(edges[:-1], counts * height / 2, width=np.diff(edges), bottom=chain,
               align="edge", color=f"C{chain % 10}", alpha=0.8, edgecolor="white")
        ax.axhline(chain + expected * height / 2, color="k", linestyle="--", linewidth=0.8)
    ax.set_yticks(np.arange(chains))
    ax.set_yticklabels([str(chain) for chain in range(chains)])
    ax.set_ylabel("chain")
    ax.set_xlabel(f"rank of {quantity} among all {flat.size} draws")
    title = f"Rank plot: {quantity}" + ("" if point is None else f" at point {point}")
    if chains >= 2 and draws >= 4:
        rhat = float(rhat_ess({"q": scalar})["rhat"]["q"])
        if np.isfinite(rhat):
            title += f" (R-hat {rhat:.3f})"
    ax.set_title(title)
    return ax


def plot_elbo(posterior: Posterior, *, start: int | None = None, ax: Axes | None = None
              ) -> Axes:
    """The optimisation objective against the step: the ELBO of an SVI fit, minus the loss of
    a MAP or ensemble fit (of the MAP stage for Laplace), with its running mean.

    The last 10 % of the steps is shaded: :func:`bayes_mdn.diagnostics.objective_trend`
    compares its two halves to decide whether the objective is still improving.

    Parameters
    ----------
    posterior : Posterior
    start : int, optional
        First step drawn; default skips the first 5 % of the steps, whose much lower values
        would squash the rest of the curve.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    history = posterior.history
    if "elbo" in history:
        label, trace = "ELBO", np.asarray(history["elbo"], np.float64)
    elif "loss" in history:
        label, trace = "-loss", -np.asarray(history["loss"], np.float64)
    elif "map_loss" in history:
        label, trace = "-loss (MAP stage)", -np.asarray(history["map_loss"], np.float64)
    else:
        raise ValueError(f"This {posterior.method!r} fit recorded no optimisation trace; "
                         "plot_elbo shows fits with method='svi' (ELBO) or 'map', 'ensemble' "
                         "or 'laplace' (minus the loss).")
    if trace.ndim > 1:
        trace = trace.mean(axis=tuple(range(trace.ndim - 1)))
    num_steps = trace.size
    if start is None:
        start = num_steps // 20
    start = check_positive_int(start, "start", minimum=0)
    if start >= num_steps:
        raise ValueError(f"`start`={start} leaves nothing to draw: the fit ran {num_steps} "
                         "steps.")
    steps = np.arange(1, num_steps + 1)
    window = max(1, num_steps // 100)
    smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
    ax = _axes(ax)
    ax.plot(steps[start:], trace[start:], color="C0", alpha=0.3, linewidth=0.8, label=label)
    smooth_steps = steps[window - 1:]
    shown = smooth_steps > start
    ax.plot(smooth_steps[shown], smooth[shown], color="C0",
            label=f"running mean ({window} steps)")
    ax.axvspan(num_steps - num_steps // 10, num_steps, color="0.5", alpha=0.2,
               label="last 10 %")
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.legend(loc="lower right")
    return ax
