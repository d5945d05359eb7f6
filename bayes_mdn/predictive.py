"""The posterior predictive at new inputs: a mixture over S draws x K components.

For draw s the network gives mixing weights w_sk(x) and component parameters; the posterior
predictive is the uniform average over draws,

    p(y | x) = (1 / S) sum_s sum_k w_sk(x) p_k(y | theta_sk(x)),

i.e. one mixture of S * K components with log-weights ``log w_sk - log S``. Nothing of size
M x S x K is ever held in memory: every query runs a compiled kernel over fixed-size chunks
of inputs (padded to a power of two, so a new M rarely recompiles), with all draws of a chunk
evaluated at once and the chunk size chosen so that chunk x S x K stays under a budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bayes_mdn._validation import as_targets, check_key, check_positive_int
from bayes_mdn.scaling import Standardizer, to_compute

if TYPE_CHECKING:
    from bayes_mdn.model import MDN

__all__ = ["PredictiveMixture"]

#: Default bound on the number of (input, draw, component[, quantile or grid point]) terms
#: evaluated at once; 2**22 float32 terms are 16 MiB per intermediate array.
DEFAULT_MAX_ELEMENTS = 2**22


# --------------------------------------------------------------------------- compiled kernels
def _flat_mixture(model: MDN, draws, y_shift, y_scale, X_std):
    """Log-weights (m, S*K) and component params (m, S*K, d) in original units of y."""

    def one_draw(params):
        return model.mixture(params, X_std, y_scale)

    log_weights, params = jax.vmap(one_draw)(draws)  # (S, m, K), (S, m, K, d)
    num_draws, num_inputs = log_weights.shape[:2]
    log_weights = jnp.swapaxes(log_weights, 0, 1).reshape(num_inputs, -1) - jnp.log(num_draws)
    params = {
        name: jnp.swapaxes(value, 0, 1).reshape(num_inputs, -1, value.shape[-1])
        for name, value in params.items()
    }
    return log_weights, model.family.to_original_units(params, y_shift, y_scale)


_mixture_kernel = jax.jit(_flat_mixture, static_argnames="model")


@partial(jax.jit, static_argnames="model")
def _log_prob_kernel(model, draws, y_shift, y_scale, X_std, y):
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    component_lp = model.family.distribution(params).log_prob(y[:, None, :])  # (m, S*K)
    return logsumexp(log_weights + component_lp, axis=-1)


@partial(jax.jit, static_argnames="model")
def _cdf_kernel(model, draws, y_shift, y_scale, X_std, y):
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    weights = jnp.exp(log_weights)[..., None]
    cdf = jnp.sum(weights * model.family.marginal_cdf(params, y[:, None, :]), axis=1)
    return jnp.clip(cdf, 0.0, 1.0)


@partial(jax.jit, static_argnames="model")
def _moments_kernel(model, draws, y_shift, y_scale, X_std):
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    weights = jnp.exp(log_weights)[..., None]  # (m, S*K, 1)
    component_mean = model.family.mean(params)
    mean = jnp.sum(weights * component_mean, axis=1)
    # Law of total variance, written with centred terms to avoid cancellation.
    spread = jnp.square(component_mean - mean[:, None, :])
    variance = jnp.sum(weights * (model.family.variance(params) + spread), axis=1)
    return mean, variance


@partial(jax.jit, static_argnames="model")
def _variance_split_kernel(model, draws, y_shift, y_scale, X_std):
    """Per-draw mixture mean and variance, reduced over draws: (aleatoric, epistemic)."""
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    num_draws = next(iter(draws.values())).shape[0]
    per_draw = (X_std.shape[0], num_draws, model.num_components, -1)
    weights = jnp.exp(log_weights).reshape(per_draw) * num_draws  # sums to 1 within a draw
    component_mean = model.family.mean(params).reshape(per_draw)
    draw_mean = jnp.sum(weights * component_mean, axis=2)  # (m, S, D)
    spread = jnp.square(component_mean - draw_mean[:, :, None, :])
    draw_variance = jnp.sum(weights * (model.family.variance(params).reshape(per_draw) + spread),
                            axis=2)
    return jnp.mean(draw_variance, axis=1), jnp.var(draw_mean, axis=1)


@partial(jax.jit, static_argnames=("model", "num_iterations"))
def _quantile_kernel(model, num_iterations, draws, y_shift, y_scale, X_std, q):
    """Bisection on the mixture cdf; returns (Q, m, D).

    The bracket [min_k Q_k(q_min), max_k Q_k(q_max)] over component quantiles provably
    contains every requested mixture quantile, and is shared by all q, so the results are
    monotone in q.
    """
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    weights = jnp.exp(log_weights)[..., None]
    lower = jnp.min(model.family.marginal_icdf(params, jnp.min(q)), axis=1)  # (m, D)
    upper = jnp.max(model.family.marginal_icdf(params, jnp.max(q)), axis=1)
    q_column = q[:, None, None]  # (Q, 1, 1)
    lower = jnp.broadcast_to(lower, (q.shape[0], *lower.shape))
    upper = jnp.broadcast_to(upper, (q.shape[0], *upper.shape))

    def mixture_cdf(y):  # (Q, m, D) -> (Q, m, D)
        component_cdf = jax.vmap(lambda yq: model.family.marginal_cdf(params, yq[:, None, :]))(y)
        return jnp.sum(weights[None] * component_cdf, axis=2)

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = mixture_cdf(mid) < q_column
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lower, upper = jax.lax.fori_loop(0, num_iterations, step, (lower, upper))
    return 0.5 * (lower + upper)


@partial(jax.jit, static_argnames=("model", "num_samples"))
def _sample_kernel(model, num_samples, draws, y_shift, y_scale, X_std, key):
    """Ancestral sampling: pick a (draw, component) by inverse cdf of the weights, then y."""
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    choice_key, value_key = jax.random.split(key)
    cumulative = jnp.cumsum(jnp.exp(log_weights - jnp.max(log_weights, -1, keepdims=True)), -1)
    cumulative = cumulative / cumulative[:, -1:]
    uniforms = jax.random.uniform(choice_key, (X_std.shape[0], num_samples), cumulative.dtype)
    index = jax.vmap(lambda c, u: jnp.searchsorted(c, u, side="right"))(cumulative, uniforms)
    index = jnp.minimum(index, cumulative.shape[-1] - 1).T  # (n, m)
    rows = jnp.arange(X_std.shape[0])[None, :]
    chosen = {name: value[rows, index] for name, value in params.items()}  # (n, m, d)
    return model.family.distribution(chosen).sample(value_key)  # (n, m, D)


@partial(jax.jit, static_argnames="model")
def _log_prob_grid_kernel(model, draws, y_shift, y_scale, X_std, grid):
    """Log-density of a 1-D mixture on a per-input grid (m, G) -> (m, G)."""
    log_weights, params = _flat_mixture(model, draws, y_shift, y_scale, X_std)
    distribution = model.family.distribution(
        {name: value[:, None] for name, value in params.items()}
    )  # batch (m, 1, S*K)
    component_lp = distribution.log_prob(grid[..., None, None])  # (m, G, S*K)
    return logsumexp(log_weights[:, None, :] + component_lp, axis=-1)


# --------------------------------------------------------------------------- chunked driver
def _next_power_of_two(value: int) -> int:
    return 1 << max(0, int(value - 1).bit_length())


def _chunk_size(num_inputs: int, elements_per_input: int, max_elements: int) -> int:
    """Largest power of two <= the budget, and no larger than needed for `num_inputs`."""
    fitting = max(1, max_elements // max(1, elements_per_input))
    size = 1 << (fitting.bit_length() - 1)
    return max(1, min(size, _next_power_of_two(num_inputs)))


def _pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    missing = size - array.shape[0]
    if missing == 0:
        return array
    return np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)], axis=0)


def _map_chunks(
    kernel: Callable[..., Any],
    row_arrays: tuple[np.ndarray, ...],
    chunk: int,
    *,
    batch_axis: int = 0,
) -> Any:
    """Run `kernel(*row_chunks, chunk_index)` over row chunks of host arrays and concatenate
    the (host) outputs along `batch_axis`. Padding and concatenation stay in NumPy so that no
    shape-specific eager JAX op is compiled per call."""
    num_rows = row_arrays[0].shape[0]
    outputs = []
    for start in range(0, num_rows, chunk):
        stop = min(start + chunk, num_rows)
        pieces = tuple(_pad_rows(a[start:stop], chunk) for a in row_arrays)
        result = jax.device_get(kernel(*pieces, start // chunk))
        trim = (slice(None),) * batch_axis + (slice(0, stop - start),)
        outputs.append(jax.tree.map(lambda value, trim=trim: value[trim], result))
    if len(outputs) == 1:
        return outputs[0]
    return jax.tree.map(lambda *parts: np.concatenate(parts, axis=batch_axis), *outputs)


# --------------------------------------------------------------------------- public class
@dataclass(frozen=True, eq=False)
class PredictiveMixture:
    """Posterior predictive distribution at M inputs: batch shape (M,), event shape (D,).

    Created by :meth:`bayes_mdn.Posterior.predictive`; every result is in the original units
    of y. All queries are evaluated in bounded memory (see ``max_elements``).

    Attributes
    ----------
    model : MDN
    draws : mapping of str to Array
        Network parameters with a leading draw axis S.
    standardizer : Standardizer
    X_std : numpy.ndarray, shape (M, P)
        Standardised inputs in the compute dtype (kept on the host; moved chunk by chunk).
    max_elements : int
        Budget on terms evaluated at once (inputs x draws x components x extra axis).
    """

    model: MDN
    draws: Mapping[str, jax.Array]
    standardizer: Standardizer
    X_std: np.ndarray
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def __post_init__(self) -> None:
        X_std = np.array(self.X_std)
        X_std.setflags(write=False)
        object.__setattr__(self, "X_std", X_std)

    # ----------------------------------------------------------------------- shapes
    @property
    def num_inputs(self) -> int:
        """M, the number of inputs."""
        return int(self.X_std.shape[0])

    @property
    def num_outputs(self) -> int:
        """D, the dimension of y."""
        return int(self.standardizer.y_scale.shape[0])

    @property
    def num_draws(self) -> int:
        """S, the number of posterior draws mixed over."""
        return int(next(iter(self.draws.values())).shape[0])

    @property
    def num_components(self) -> int:
        """K, the number of components per draw."""
        return self.model.num_components

    @property
    def batch_shape(self) -> tuple[int]:
        return (self.num_inputs,)

    @property
    def event_shape(self) -> tuple[int]:
        return (self.num_outputs,)

    def __repr__(self) -> str:
        return (
            f"PredictiveMixture(inputs={self.num_inputs}, outputs={self.num_outputs}, "
            f"draws={self.num_draws}, components={self.num_components})"
        )

    def __len__(self) -> int:
        return self.num_inputs

    def __getitem__(self, index: Any) -> PredictiveMixture:
        """The predictive at a subset of the inputs (int, slice, or integer/boolean array).

        An integer keeps the batch axis: ``pred[3]`` has batch shape (1,).
        """
        if isinstance(index, (int, np.integer)):
            if not -self.num_inputs <= index < self.num_inputs:
                raise IndexError(f"Input index {index} is out of range for {self.num_inputs} "
                                 "inputs.")
            index = [int(index)]
        try:
            subset = self.X_std[index]
        except IndexError as error:
            raise IndexError(f"Invalid input index {index!r}: {error}") from None
        if subset.ndim != 2 or subset.shape[0] == 0:
            raise IndexError(f"Index {index!r} selects no inputs; select at least one.")
        return dataclasses.replace(self, X_std=subset)

    # ----------------------------------------------------------------------- helpers
    def _scalers(self) -> tuple[jax.Array, jax.Array]:
        return to_compute(self.standardizer.y_shift), to_compute(self.standardizer.y_scale)

    def _terms_per_input(self, extra: int = 1) -> int:
        return self.num_draws * self.num_components * self.num_outputs * extra

    def _run(self, kernel, row_arrays=(), *, extra: int = 1, batch_axis: int = 0,
             static=(), trailing=(), chunk_key=None):
        """Call ``kernel(model, *static, draws, y_shift, y_scale, X, *rows, *trailing[, key])``
        chunk by chunk; a `chunk_key` is folded with the chunk index for each chunk."""
        chunk = _chunk_size(self.num_inputs, self._terms_per_input(extra), self.max_elements)
        y_shift, y_scale = self._scalers()

        def call(X_chunk, *rest):
            *chunk_rows, index = rest
            key_args = () if chunk_key is None else (jax.random.fold_in(chunk_key, index),)
            return kernel(self.model, *static, self.draws, y_shift, y_scale, X_chunk,
                          *chunk_rows, *trailing, *key_args)

        return _map_chunks(call, (self.X_std, *row_arrays), chunk, batch_axis=batch_axis)

    def _targets(self, y: Any) -> np.ndarray:
        values = as_targets(y, "y", num_outputs=self.num_outputs)
        if values.shape[0] != self.num_inputs:
            raise ValueError(
                f"`y` must have one row per input ({self.num_inputs}); got {values.shape[0]} rows."
            )
        return values.astype(self.X_std.dtype)

    # ----------------------------------------------------------------------- queries
    def log_prob(self, y: Any) -> np.ndarray:
        """Log posterior-predictive density at `y`, in original units.

        Parameters
        ----------
        y : array-like, shape (M,) or (M, D)

        Returns
        -------
        numpy.ndarray, shape (M,)
        """
        return self._run(_log_prob_kernel, (self._targets(y),))

    def cdf(self, y: Any) -> np.ndarray:
        """Marginal cdf of each output dimension at `y`.

        Parameters
        ----------
        y : array-like, shape (M,) or (M, D)

        Returns
        -------
        numpy.ndarray, shape (M, D)
        """
        return self._run(_cdf_kernel, (self._targets(y),))

    def mean(self) -> np.ndarray:
        """Predictive mean, a numpy.ndarray of shape (M, D)."""
        return self._run(_moments_kernel)[0]

    def variance(self) -> np.ndarray:
        """Predictive marginal variance (aleatoric + epistemic), a numpy.ndarray (M, D)."""
        return self._run(_moments_kernel)[1]

    def variance_decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        """Split the predictive variance by the law of total variance over posterior draws.

        Returns
        -------
        aleatoric : numpy.ndarray, shape (M, D)
            ``E_s[Var(y | x, theta_s)]``: noise the model expects even with known weights.
        epistemic : numpy.ndarray, shape (M, D)
            ``Var_s[E(y | x, theta_s)]``: disagreement between draws; zero for MAP.
            ``aleatoric + epistemic`` equals :meth:`variance`.
        """
        return self._run(_variance_split_kernel)

    def quantiles(self, q: Any, *, num_iterations: int | None = None) -> np.ndarray:
        """Marginal quantiles by bisection on the mixture cdf (monotone in `q`).

        Parameters
        ----------
        q : float or array-like, shape (Q,)
            Probabilities strictly between 0 and 1.
        num_iterations : int, optional
            Bisection steps; the default (40 in float32, 64 in float64) reaches the
            dtype's resolution.

        Returns
        -------
        numpy.ndarray, shape (Q, M, D)
        """
        levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if levels.ndim != 1 or levels.size == 0:
            raise ValueError(f"`q` must be a scalar or a 1-D array of probabilities; got {q!r}.")
        if not np.all((levels > 0) & (levels < 1)):
            raise ValueError(
                f"`q` must lie strictly between 0 and 1; got {levels.tolist()}."
            )
        if num_iterations is None:
            num_iterations = 64 if to_compute(0.0).dtype == np.float64 else 40
        num_iterations = check_positive_int(num_iterations, "num_iterations")
        return self._run(_quantile_kernel, extra=levels.size, batch_axis=1,
                         static=(num_iterations,), trailing=(to_compute(levels),))

    def sample(self, key: jax.Array, num_samples: int = 1) -> np.ndarray:
        """Draw from the posterior predictive.

        Parameters
        ----------
        key : PRNG key
        num_samples : int
            Samples per input.

        Returns
        -------
        numpy.ndarray, shape (num_samples, M, D)
        """
        key = check_key(key)
        num_samples = check_positive_int(num_samples, "num_samples")
        return self._run(_sample_kernel, batch_axis=1, static=(num_samples,), chunk_key=key,
                         extra=max(1, num_samples // max(1, self.num_components)))

    def modes(self, *, grid_size: int = 512, min_relative_density: float = 1e-3
              ) -> list[np.ndarray]:
        """Local maxima of the predictive density (D = 1), highest first.

        The density is evaluated on a grid spanning the 0.0005-0.9995 quantiles, local maxima
        are found on it and refined by parabolic interpolation of the log-density.

        Parameters
        ----------
        grid_size : int
            Grid points per input; modes closer than the spacing may merge.
        min_relative_density : float
            Drop maxima whose density is below this fraction of the highest one (numerical
            ripples between heavily overlapping components).

        Returns
        -------
        list of numpy.ndarray
            One array of shape (num_modes_i, 1) per input, sorted by density, descending.
        """
        if self.num_outputs != 1:
            raise ValueError(
                f"modes() is defined here for one output (D = 1); this model has D = "
                f"{self.num_outputs}. Query each output's marginal via quantiles() instead."
            )
        grid_size = check_positive_int(grid_size, "grid_size", minimum=3)
        bounds = self.quantiles(np.array([5e-4, 1 - 5e-4]))[:, :, 0]  # (2, M)
        fractions = np.linspace(0.0, 1.0, grid_size)
        grid = bounds[0][:, None] + (bounds[1] - bounds[0])[:, None] * fractions  # (M, G)
        log_density = self.log_prob_grid(grid)
        return _refine_modes(grid.astype(np.float64), log_density.astype(np.float64),
                             min_relative_density)

    def log_prob_grid(self, grid: Any) -> np.ndarray:
        """Log-density on a grid of y values per input (D = 1), e.g. for plotting.

        Parameters
        ----------
        grid : array-like, shape (G,) or (M, G)
            y values; a 1-D grid is shared by all inputs.

        Returns
        -------
        numpy.ndarray, shape (M, G)
        """
        if self.num_outputs != 1:
            raise ValueError(f"log_prob_grid() needs one output (D = 1); this model has D = "
                             f"{self.num_outputs}. Use log_prob() with (M, D) points instead.")
        values = np.asarray(grid, dtype=np.float64)
        if values.ndim == 1:
            values = np.broadcast_to(values, (self.num_inputs, values.shape[0]))
        if values.ndim != 2 or values.shape[0] != self.num_inputs or values.shape[1] == 0:
            raise ValueError(f"`grid` must have shape (G,) or ({self.num_inputs}, G); got "
                             f"{np.shape(grid)}.")
        if not np.isfinite(values).all():
            raise ValueError("`grid` must hold finite values only.")
        return self._run(_log_prob_grid_kernel, (values.astype(self.X_std.dtype),),
                         extra=values.shape[1])

    def mixture_parameters(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The flattened S x K mixture at every input, in original units.

        Memory is M x S x K per parameter: select inputs first, e.g.
        ``pred[[0, 5]].mixture_parameters()``.

        Returns
        -------
        log_weights : numpy.ndarray, shape (M, S * K)
            Log mixing weights including the 1/S draw weight; ``logsumexp`` over the last
            axis is 0.
        params : dict of str to numpy.ndarray
            Component parameters, each (M, S * K, d), e.g. ``loc`` and ``scale``.
        """
        return self._run(_mixture_kernel)


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
