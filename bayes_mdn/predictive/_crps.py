"""The continuous ranked probability score of the predictive's marginals, in three ways.

``CRPS(F, y) = E|X - y| - 1/2 E|X - X'|`` (X, X' independent draws from F), each output's
marginal on its own, in standardised units of y (the caller multiplies by ``y_scale``):

* closed form for families that declare it (``family.closed_form_crps``, Normal
  components): all (S K)**2 pairs of ``E|X_i - X_j|``, one draw chunk against all terms;
* quadrature: ``E|X - y|`` exact and ``integral F (1 - F)`` by the trapezoid rule on a
  grid covering the support, sized per input from the narrowest heavy component;
* sampling (any family): the unbiased estimator from predictive samples.

:func:`crps_scores` picks the method and runs the kernels through the one evaluator
(:meth:`PredictiveMixture._run <bayes_mdn.PredictiveMixture>`), so the memory model and
chunk plan are those of every other query. :meth:`bayes_mdn.PredictiveMixture.crps` is the
public entry point (and :func:`bayes_mdn.metrics.crps` calls it).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from bayes_mdn.predictive._kernels import (
    _flat,
    _mixture_log_weights,
    _num_draws,
    _reduce_draws,
    _sample_with_draws,
    _stack_draws,
    _support_kernel,
    _trapezoid,
)

if TYPE_CHECKING:
    from bayes_mdn.predictive.mixture import PredictiveMixture

__all__ = ["CLOSED_FORM_MAX_TERMS", "METHODS", "crps_scores", "has_closed_form"]

#: The methods of :func:`crps_scores` (``"auto"`` chooses among the others).
METHODS = ("auto", "closed_form", "quadrature", "sample")
#: Grid points per interquartile range of the narrowest heavy component that the CRPS
#: quadrature needs: spacing 0.9 sigma, where the trapezoid error for a Normal is ~1e-8 sigma.
_CRPS_POINTS_PER_IQR = 1.5
#: Smallest and largest grid of the automatic CRPS quadrature (powers of two).
_CRPS_MIN_GRID, _CRPS_MAX_GRID = 128, 8192
#: Cost of one closed-form pair term relative to one component cdf on the quadrature grid.
_PAIR_COST = 2
#: ``method="auto"`` uses the closed form for every input up to this many mixture terms
#: S * K per input (cheaper than the smallest grid), and above it per input whichever of
#: closed form ((S * K)**2 pairs) and quadrature (grid x S * K) is cheaper.
CLOSED_FORM_MAX_TERMS = _CRPS_MIN_GRID // _PAIR_COST
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------- kernels
def _expected_abs_normal(mean: jax.Array, scale: jax.Array) -> jax.Array:
    """``E|Z|`` for ``Z ~ N(mean, scale**2)``: ``scale sqrt(2/pi) exp(-z**2/2) + mean
    erf(z/sqrt(2))`` with ``z = mean / scale`` (that is ``mean (1 - 2 Phi(-z))``)."""
    z = mean / scale
    return (scale * _SQRT_2_OVER_PI * jnp.exp(-0.5 * jnp.square(z))
            + mean * erf(z / math.sqrt(2.0)))


def _normal_terms(chunk, num_draws: int):
    """Flat weights (m, b*K, 1) (0 for padding), locs and scales (m, b*K, D) of a chunk."""
    weights = jnp.exp(_flat(_mixture_log_weights(chunk, num_draws)))[..., None]
    return weights, _flat(chunk.params["loc"]), _flat(chunk.params["scale"])


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _crps_closed_form_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    """CRPS (m, D) of a Normal mixture: ``sum_i w_i E|X_i - y| - 1/2 sum_ij w_i w_j
    E|X_i - X_j|``, with all (S K)**2 pairs visited one draw chunk against all terms."""
    num_draws = _num_draws(draws)
    stacked = _stack_draws(model, draws, y_shift, y_scale, X_std, draw_chunk)  # (C, m, b, K..)
    log_weights = jnp.where(stacked.valid[:, None, :, None],
                            stacked.log_weights - math.log(num_draws), -jnp.inf)

    def every_term(value):  # (C, m, b, K, ...) -> (m, C*b*K, ...)
        value = jnp.moveaxis(value, 1, 0)
        return value.reshape(value.shape[0], -1, *value.shape[4:])

    all_weights = jnp.exp(every_term(log_weights))[:, None, :, None]  # (m, 1, T, 1)
    all_loc = every_term(stacked.params["loc"])[:, None]  # (m, 1, T, D)
    all_var = jnp.square(every_term(stacked.params["scale"]))[:, None]

    def body(carry, chunk):
        to_target, spread = carry
        weights, loc, scale = _normal_terms(chunk, num_draws)  # (m, bK, 1), (m, bK, D)
        to_target = to_target + jnp.sum(
            weights * _expected_abs_normal(y[:, None, :] - loc, scale), axis=1)
        pair = _expected_abs_normal(loc[:, :, None] - all_loc,
                                    jnp.sqrt(jnp.square(scale)[:, :, None] + all_var))
        spread = spread + jnp.sum(weights[:, :, None] * all_weights * pair, axis=(1, 2))
        return to_target, spread

    zeros = jnp.zeros(y.shape, X_std.dtype)
    to_target, spread = _reduce_draws(body, (zeros, zeros), model, draws, y_shift, y_scale,
                                      X_std, draw_chunk, stacked=stacked)
    return jnp.maximum(to_target - 0.5 * spread, 0.0)


@partial(jax.jit, static_argnames=("model", "draw_chunk", "grid_size"))
def _crps_quadrature_kernel(model, draw_chunk, grid_size, draws, y_shift, y_scale, X_std, y,
                            lower, upper):
    """CRPS (m, D) of a Normal mixture as ``sum_i w_i E|X_i - y| - integral F (1 - F)``.

    The first term is exact; the second (half the mean absolute difference of two
    independent draws from the predictive) is a trapezoid rule on `grid_size` points over
    [lower, upper] (m, D) per input and output.
    """
    num_draws = _num_draws(draws)
    fractions = jnp.linspace(0.0, 1.0, grid_size, dtype=X_std.dtype)
    grid = lower[:, None, :] + (upper - lower)[:, None, :] * fractions[None, :, None]
    spacing = (upper - lower) / (grid_size - 1)  # (m, D)

    def body(carry, chunk):
        to_target, cdf = carry
        weights, loc, scale = _normal_terms(chunk, num_draws)
        to_target = to_target + jnp.sum(
            weights * _expected_abs_normal(y[:, None, :] - loc, scale), axis=1)
        params = {"loc": loc[:, None], "scale": scale[:, None]}  # (m, 1, bK, D)
        component_cdf = model.family.marginal_cdf(params, grid[:, :, None, :])  # (m, G, bK, D)
        return to_target, cdf + jnp.sum(weights[:, None] * component_cdf, axis=2)

    init = (jnp.zeros(y.shape, X_std.dtype), jnp.zeros(grid.shape, X_std.dtype))
    to_target, cdf = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std,
                                   draw_chunk)
    cdf = jnp.clip(cdf, 0.0, 1.0)
    return jnp.maximum(to_target - _trapezoid(cdf * (1.0 - cdf), spacing), 0.0)


def _crps_quadrature(pred: PredictiveMixture, targets: np.ndarray, grid_size: int | None,
                     *, route: bool = False) -> np.ndarray:
    """Run the quadrature kernel, grouping inputs by the grid they need (see
    :meth:`PredictiveMixture.crps <bayes_mdn.PredictiveMixture.crps>`).

    With `route`, inputs whose grid would cost more than the closed form's pairs get the
    closed form instead.
    """
    # The range holding all but about 1e-6 of every significant component's mass, and the
    # narrowest heavy component's interquartile range, (M, D) each.
    lower, upper, narrowest = pred._run(_support_kernel, extra=4)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(narrowest) & (narrowest > 0),
                         (upper - lower).astype(np.float64) / narrowest, 0.0)
    needed = (np.ceil(ratio * _CRPS_POINTS_PER_IQR) + 1).max(axis=1).astype(np.int64)  # (M,)
    if grid_size is None:
        sizes = 2 ** np.ceil(np.log2(np.maximum(needed, 2))).astype(np.int64)
        sizes = np.maximum(sizes, _CRPS_MIN_GRID)
    else:
        sizes = np.full(needed.shape, grid_size, np.int64)
    terms = pred.num_draws * pred.num_components
    closed = (sizes >= _PAIR_COST * terms) if route else np.zeros(sizes.shape, bool)
    sizes = np.minimum(sizes, _CRPS_MAX_GRID) if grid_size is None else sizes
    scores = np.empty(targets.shape, targets.dtype)
    if np.any(closed):
        index = np.flatnonzero(closed)
        part = pred if index.size == pred.num_inputs else pred[index]
        scores[index] = part._run(_crps_closed_form_kernel, (targets[index],), extra=terms)
    for size in np.unique(sizes[~closed]):
        index = np.flatnonzero((sizes == size) & ~closed)
        part = pred if index.size == pred.num_inputs else pred[index]
        scores[index] = part._run(_crps_quadrature_kernel,
                                  (targets[index], lower[index], upper[index]),
                                  extra=int(size), static=(int(size),))
    coarse = (needed > sizes) & ~closed
    if np.any(coarse):
        advice = (f"Pass grid_size={int(needed.max())} or more" if grid_size is not None
                  else f"Grids stop at {_CRPS_MAX_GRID} points")
        warnings.warn(
            f"crps(): the quadrature grid is too coarse to resolve the narrowest heavy "
            f"component at {int(coarse.sum())} of {coarse.size} inputs (it needs up to "
            f"{int(needed.max())} points); scores there may be inaccurate. {advice}, or use "
            "method='closed_form'.", UserWarning, stacklevel=4)
    return scores


@partial(jax.jit, static_argnames=("model", "draw_chunk", "num_samples"))
def _crps_sample_kernel(model, draw_chunk, num_samples, draws, y_shift, y_scale, X_std, y,
                        key, start):
    """Unbiased CRPS estimate (m, D) from `num_samples` predictive draws x_1..x_n per input:
    ``mean_i |x_i - y| - 1/2 mean_{i != j} |x_i - x_j|``; the pair mean over all n (n - 1)
    ordered pairs comes from the sorted sample as ``2 sum_i (2i - n - 1) x_(i) / (n (n-1))``.
    """
    values, _ = _sample_with_draws(model, num_samples, draw_chunk, draws, y_shift, y_scale,
                                   X_std, key, start)  # (n, m, D)
    centred = values - y[None]  # the pair term is shift-invariant; centring keeps precision
    to_target = jnp.mean(jnp.abs(centred), axis=0)
    ordered = jnp.sort(centred, axis=0)
    rank_weight = (2.0 * jnp.arange(1, num_samples + 1) - num_samples - 1).astype(
        X_std.dtype)
    pair_mean = (2.0 * jnp.sum(rank_weight[:, None, None] * ordered, axis=0)
                 / (num_samples * (num_samples - 1)))
    return jnp.maximum(to_target - 0.5 * pair_mean, 0.0)


# --------------------------------------------------------------------------- driver
def has_closed_form(pred: PredictiveMixture) -> bool:
    """Whether the family declares a closed-form CRPS of its components (Normal does; a
    discrete subclass of it does not inherit that: its CRPS is a sum over integers)."""
    family = pred.model.family
    return bool(family.closed_form_crps and not family.discrete)


def crps_scores(pred: PredictiveMixture, targets: np.ndarray, method: str,
                key: jax.Array | None, num_samples: int, grid_size: int | None) -> np.ndarray:
    """CRPS (M, D) in standardised units of y, arguments already validated.

    Parameters
    ----------
    pred : PredictiveMixture
    targets : numpy.ndarray, shape (M, D)
        Standardised targets in the compute dtype.
    method : {"auto", "closed_form", "quadrature", "sample"}
    key : PRNG key or None
        Needed by ``"sample"``.
    num_samples : int
        At least 2.
    grid_size : int or None
        Quadrature points (at least 16), or None for the automatic choice per input.

    Returns
    -------
    numpy.ndarray, shape (M, D), compute dtype
    """
    family = pred.model.family.name
    closed_form = has_closed_form(pred)
    terms = pred.num_draws * pred.num_components
    if method == "auto":
        if not closed_form:
            method = "sample"
        else:
            method = "closed_form" if terms <= CLOSED_FORM_MAX_TERMS else "routed"
    if method in ("closed_form", "quadrature") and not closed_form:
        raise ValueError(f"method={method!r} needs Normal components; this model's family is "
                         f"{family!r}. Use method='sample' with key=jax.random.key(0).")
    if method == "closed_form":
        return pred._run(_crps_closed_form_kernel, (targets,), extra=terms)
    if method in ("quadrature", "routed"):
        return _crps_quadrature(pred, targets, grid_size, route=method == "routed")
    if key is None:
        raise TypeError(f"crps() estimates by sampling here (method='sample', family "
                        f"{family!r}) and needs `key`, e.g. key=jax.random.key(0).")
    return pred._run(_crps_sample_kernel, (targets,), static=(num_samples,), key=key,
                     extra=num_samples, per_input=num_samples * pred.num_components)
