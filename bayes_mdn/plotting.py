"""Matplotlib figures. Each function takes ``ax=None`` (a new figure) and returns the Axes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._validation import as_features, as_targets, check_key, check_positive_int

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bayes_mdn.posterior import Posterior
    from bayes_mdn.predictive import PredictiveMixture

__all__ = [
    "plot_conditional_density",
    "plot_mixture",
    "plot_predictive_samples",
    "plot_training_curves",
]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


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
    ax.set_xlabel("x")
    ax.set_ylabel("sampled y")
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
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return ax

