"""Quantile kernel: the mixture evaluated once per input chunk, Chandrupatla's root-finder
on its cdf for all levels at once (:mod:`._roots`)."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from bayes_mdn.predictive._evaluator import num_draws_of, reduce_draws, stack_draws
from bayes_mdn.predictive._roots import solve_increasing


def _flatten(stacked, num_draws: int):
    """Chunks stacked (C, m, b, K, ...) -> weights (m, C*b*K) (0 for padding) and params
    (m, C*b*K, d): the whole S x K mixture of each input, weights already exponentiated."""
    valid = stacked.valid[:, None, :, None]  # (C, 1, b, 1)
    weights = jnp.where(valid, jnp.exp(stacked.log_weights - math.log(num_draws)), 0.0)

    def flat(value):  # (C, m, b, K, ...) -> (m, C*b*K, ...)
        value = jnp.moveaxis(value, 0, 1)
        return value.reshape(value.shape[0], -1, *value.shape[4:])

    return flat(weights), {name: flat(value) for name, value in stacked.params.items()}


@partial(jax.jit, static_argnames=("model", "draw_chunk", "max_iterations", "cached"))
def quantile_kernel(model, draw_chunk, max_iterations, cached, draws, y_shift, y_scale, X_std,
                    q):
    """Quantiles (Q, m, D) of the mixture at levels q (Q,).

    The bracket [min_k Q_k(q_min), max_k Q_k(q_max)] over component quantiles contains every
    requested mixture quantile. With `cached` every draw chunk's mixture is evaluated once
    and each root-finder step sums the cdf over the stored terms; otherwise (one input's
    mixture over budget) the network is re-run per step.
    """
    num_draws = num_draws_of(draws)
    family = model.family
    shape = (X_std.shape[0], y_scale.shape[-1])
    extremes = jnp.stack([jnp.min(q), jnp.max(q)])
    if cached:
        stacked = stack_draws(model, draws, y_shift, y_scale, X_std, draw_chunk)
        weights, params = _flatten(stacked, num_draws)  # (m, T), (m, T, d)
        low, high = family.marginal_icdf(params, extremes[:, None, None, None])  # (m, T, D)
        present = (weights > 0)[..., None]
        lower = jnp.min(jnp.where(present, low, jnp.inf), axis=1)
        upper = jnp.max(jnp.where(present, high, -jnp.inf), axis=1)
        component_weights = weights[None, :, :, None]  # (1, m, T, 1)

        def mixture_cdf(y):  # (Q, m, D)
            return jnp.sum(component_weights * family.marginal_cdf(params, y[:, :, None, :]),
                           axis=2)
    else:
        reduce = partial(reduce_draws, model=model, draws=draws, y_shift=y_shift,
                         y_scale=y_scale, X_std=X_std, draw_chunk=draw_chunk)

        def bracket(carry, chunk):
            lower, upper = carry
            valid = chunk.valid[None, :, None, None]
            low, high = family.marginal_icdf(chunk.params, extremes[:, None, None, None, None])
            return (jnp.minimum(lower, jnp.min(jnp.where(valid, low, jnp.inf), axis=(1, 2))),
                    jnp.maximum(upper, jnp.max(jnp.where(valid, high, -jnp.inf), axis=(1, 2))))

        lower, upper = reduce(bracket, (jnp.full(shape, jnp.inf, X_std.dtype),
                                        jnp.full(shape, -jnp.inf, X_std.dtype)))

        def mixture_cdf(y):
            def body(total, chunk):
                log_weights = jnp.where(chunk.valid[None, :, None],
                                        chunk.log_weights - math.log(num_draws), -jnp.inf)
                chunk_weights = jnp.exp(log_weights.reshape(shape[0], -1))[None, ..., None]
                flat = {name: value.reshape(shape[0], -1, value.shape[-1])
                        for name, value in chunk.params.items()}
                return total + jnp.sum(chunk_weights * family.marginal_cdf(
                    flat, y[:, :, None, :]), axis=2)

            return reduce(body, jnp.zeros_like(y))

    discrete = family.discrete
    if discrete:
        # Every component cdf is below q_min at min_k Q_k(q_min) - 1.
        lower = lower - 1.0
    size = (q.shape[0], *shape)
    levels = q[:, None, None]
    return solve_increasing(lambda y: jnp.clip(mixture_cdf(y), 0.0, 1.0), levels,
                            jnp.broadcast_to(lower, size), jnp.broadcast_to(upper, size),
                            discrete=discrete, max_iterations=max_iterations)
