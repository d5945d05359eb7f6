"""Quantile kernel: the mixture evaluated once per input chunk, then every level of an input
solved at once by Chandrupatla's method (:mod:`._roots`) in that input's own loop; integer
bisection for discrete families.

Per level q the mixture quantile lies between the least and the greatest component quantile
at q (``F(min_k Q_k(q)) <= sum_k w_k q = q``): a bracket per level, not one spanning all.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from bayes_mdn.families import Normal
from bayes_mdn.predictive._evaluator import num_draws_of, reduce_draws
from bayes_mdn.predictive._roots import solve_increasing

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def component_cdf(family, params, y: jax.Array) -> jax.Array:
    """Per-dimension component cdfs, :meth:`Family.marginal_cdf`, with a cheaper Normal:
    ``(1 + erf(z / sqrt 2)) / 2`` (one rational approximation and no exp, where ``ndtr``
    evaluates both erf and erfc for relative accuracy in the far tails; the absolute error,
    which is what a mixture cdf sum keeps, is ~1e-7 in float32)."""
    if type(family).marginal_cdf is Normal.marginal_cdf:
        z = (y - params["loc"]) / params["scale"]
        return 0.5 + 0.5 * jax.lax.erf(z * _SQRT_HALF)
    return family.marginal_cdf(params, y)


def _whole_mixture(model, draws, y_scale, X_std):
    """Weights (m, S*K) and parameters (m, S*K, d) of every input's S x K mixture, one draw's
    network per step (``lax.scan``): at 16 inputs x 1000 draws 11x faster on the CPU than
    vmapping the network over the draws (its batched small matmuls)."""
    num_draws = num_draws_of(draws)

    def step(carry, weights):
        return carry, model.mixture(weights, X_std, y_scale)

    _, (log_weights, params) = jax.lax.scan(step, None, dict(draws))  # (S, m, K, ...)

    def flat(value):  # (S, m, K, ...) -> (m, S*K, ...)
        value = jnp.moveaxis(value, 0, 1)
        return value.reshape(value.shape[0], -1, *value.shape[3:])

    weights = jnp.exp(log_weights - math.log(num_draws))
    return flat(weights), {name: flat(value) for name, value in params.items()}


def _squeezed(params, num_outputs: int):
    """Component parameters (m, T, 1) -> (m, T) when D = 1 and every parameter is one number
    per component, else None. The cdf sums then run with the T terms along the minor axis:
    with a trailing axis of 1, XLA's CPU loops did not vectorise and ran 20-30x slower."""
    if num_outputs != 1 or any(value.ndim != 3 or value.shape[-1] != 1
                               for value in params.values()):
        return None
    return {name: value[..., 0] for name, value in params.items()}


def _bracket_terms(family, weights, params, levels, squeezed=None):
    """Per-level brackets (lower, upper), each (Q, m, D), of the mixtures of the components
    (m, T, ...) with `weights` (m, T) (0: absent): the least and greatest component
    quantiles at each level. `squeezed`: the same parameters as (m, T) (D = 1)."""
    present = weights > 0
    if squeezed is not None:
        quantiles = family.marginal_icdf(squeezed, levels[:, None, None])  # (Q, m, T)
        lower = jnp.min(jnp.where(present, quantiles, jnp.inf), axis=2)
        upper = jnp.max(jnp.where(present, quantiles, -jnp.inf), axis=2)
        return lower[..., None], upper[..., None]
    quantiles = family.marginal_icdf(params, levels[:, None, None, None])  # (Q, m, T, D)
    present = present[None, ..., None]
    lower = jnp.min(jnp.where(present, quantiles, jnp.inf), axis=2)
    upper = jnp.max(jnp.where(present, quantiles, -jnp.inf), axis=2)
    return lower, upper


def _solve_each_level(family, weights, squeezed, lower, upper, levels, solve):
    """Quantiles (Q, m, 1) of D = 1 mixtures (`weights` (m, T), `squeezed` parameters
    (m, T)), one root-finder loop per input and level (nested ``lax.map``), each stopping as soon
    as it has converged, with the T terms along the minor axis. A Normal's cdf sum is
    ``sum_t w_t / 2 + sum_t (w_t / 2) erf((y - loc_t) / (scale_t sqrt 2))`` with the
    per-component factors computed once (no division per step)."""
    if type(family).marginal_cdf is Normal.marginal_cdf:
        terms = (0.5 * weights, squeezed["loc"], _SQRT_HALF / squeezed["scale"])
        base = 0.5 * jnp.sum(weights, axis=1)

        def input_cdf(term, y):
            half_weights, loc, inverse = term
            return jnp.sum(half_weights * jax.lax.erf((y - loc) * inverse))
    else:
        terms = (weights, squeezed)
        base = jnp.zeros(weights.shape[:1], weights.dtype)

        def input_cdf(term, y):
            input_weights, params = term
            return jnp.sum(input_weights * family.marginal_cdf(params, y))

    def one_input(arguments):
        term, offset, low, high = arguments  # terms (T,); low, high (Q,)

        def one_level(bounds):
            return solve(lambda y: offset + input_cdf(term, y), *bounds)

        return jax.lax.map(one_level, (low, high, levels))

    values = jax.lax.map(one_input, (terms, base, jnp.moveaxis(lower[..., 0], 1, 0),
                                     jnp.moveaxis(upper[..., 0], 1, 0)))  # (m, Q)
    return jnp.moveaxis(values, 1, 0)[..., None]


@partial(jax.jit, static_argnames=("model", "draw_chunk", "max_iterations", "cached"))
def quantile_kernel(model, draw_chunk, max_iterations, cached, draws, y_shift, y_scale, X_std,
                    q):
    """Quantiles (Q, m, D) of the mixture at levels q (Q,).

    With `cached` every draw chunk's mixture is evaluated once, and one root-finder loop per
    input (``lax.map``) sums the cdf over that input's stored S x K terms at each step, so
    an input stops as soon as its own levels have converged; otherwise (one input's mixture
    over budget) the network is re-run per step for the whole chunk.
    """
    num_draws = num_draws_of(draws)
    family = model.family
    shape = (X_std.shape[0], y_scale.shape[-1])
    size = (q.shape[0], *shape)
    levels = q.astype(X_std.dtype)
    discrete = family.discrete

    def solve(mixture_cdf, lower, upper, target):
        if discrete:  # every component cdf is below q at min_k Q_k(q) - 1
            lower = lower - 1.0
        return solve_increasing(lambda y: jnp.clip(mixture_cdf(y), 0.0, 1.0), target, lower,
                                upper, discrete=discrete, max_iterations=max_iterations)

    if cached:
        weights, params = _whole_mixture(model, draws, y_scale, X_std)  # (m, T), (m, T, d)
        squeezed = _squeezed(params, shape[1])
        lower, upper = _bracket_terms(family, weights, params, levels, squeezed)  # (Q, m, D)

        if squeezed is not None:
            return _solve_each_level(family, weights, squeezed, lower, upper, levels, solve)

        def one_input(arguments):
            input_weights, input_params, input_lower, input_upper = arguments  # (T,), (T, d)

            def mixture_cdf(y):  # (Q, D)
                return jnp.sum(input_weights[:, None] * component_cdf(
                    family, input_params, y[:, None, :]), axis=1)

            return solve(mixture_cdf, input_lower, input_upper, levels[:, None])

        values = jax.lax.map(one_input, (weights, params, jnp.moveaxis(lower, 1, 0),
                                         jnp.moveaxis(upper, 1, 0)))  # (m, Q, D)
        return jnp.moveaxis(values, 0, 1)

    reduce = partial(reduce_draws, model=model, draws=draws, y_shift=y_shift,
                     y_scale=y_scale, X_std=X_std, draw_chunk=draw_chunk)

    def chunk_terms(chunk):
        log_weights = jnp.where(chunk.valid[None, :, None],
                                chunk.log_weights - math.log(num_draws), -jnp.inf)
        chunk_weights = jnp.exp(log_weights.reshape(shape[0], -1))  # (m, b*K)
        flat = {name: value.reshape(shape[0], -1, value.shape[-1])
                for name, value in chunk.params.items()}
        return chunk_weights, flat

    def bracket(carry, chunk):
        low, high = _bracket_terms(family, *chunk_terms(chunk), levels)
        return jnp.minimum(carry[0], low), jnp.maximum(carry[1], high)

    lower, upper = reduce(bracket, (jnp.full(size, jnp.inf, X_std.dtype),
                                    jnp.full(size, -jnp.inf, X_std.dtype)))

    def mixture_cdf(y):  # (Q, m, D)
        def body(total, chunk):
            chunk_weights, flat = chunk_terms(chunk)
            return total + jnp.sum(chunk_weights[None, ..., None] * component_cdf(
                family, flat, y[:, :, None, :]), axis=2)

        return reduce(body, jnp.zeros_like(y))

    return solve(mixture_cdf, lower, upper, levels[:, None, None])
