"""Compression of the posterior predictive: each input's S x K Normal components merged
into K' components that keep the mixture's mean and variance exactly.

Algorithm (Goldberger & Roweis 2005, "Hierarchical clustering of a mixture model"): start
from K' groups cut at weighted quantiles of the component locations; then alternate

* assignment: each component i goes to the group j minimising ``KL(p_i || q_j)`` (for
  Normals, ``log sigma_j + (s_i^2 + (m_i - mu_j)^2) / (2 sigma_j^2)`` up to terms in i);
* merge: each group becomes the moment-matched Normal of its members,
  ``w_j = sum w_i``, ``mu_j = sum w_i m_i / w_j``,
  ``sigma_j^2 = sum w_i (s_i^2 + (m_i - mu_j)^2) / w_j``.

Every merge step preserves the mixture's total weight, mean and variance exactly (up to
float rounding), whatever the assignment; the iterations lower the KL bound between the full
and the reduced mixture.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from bayes_mdn.predictive._evaluator import evaluate_chunk, num_draws_of

#: Merged weights are floored here (a group that lost all members), so that log-weights stay
#: finite; such a component carries no mass that any query can see.
_MIN_WEIGHT = 1e-30


def _merge(weights, locs, variances, groups, num_groups):
    """Moment-matched groups: (w, mu, var), each (m, K'), from members (m, T)."""
    one_hot = jax.nn.one_hot(groups, num_groups, dtype=weights.dtype)  # (m, T, K')
    weight = jnp.einsum("mt,mtk->mk", weights, one_hot)
    safe = jnp.maximum(weight, _MIN_WEIGHT)
    mean = jnp.einsum("mt,mtk->mk", weights * locs, one_hot) / safe
    centred = variances + jnp.square(locs - jnp.take_along_axis(mean, groups, axis=1))
    variance = jnp.einsum("mt,mtk->mk", weights * centred, one_hot) / safe
    return weight, mean, variance


@partial(jax.jit, static_argnames=("model", "num_groups", "num_iterations"))
def compress_kernel(model, num_groups, num_iterations, draws, y_shift, y_scale, X_std):
    """Merged (log_weight, loc, scale), each (m, K'), standardised units, D = 1."""
    num_draws = num_draws_of(draws)
    chunk = evaluate_chunk(model, draws, y_shift, y_scale, X_std, num_draws, 0)
    rows = X_std.shape[0]
    weights = jnp.exp(chunk.log_weights - math.log(num_draws)).reshape(rows, -1)  # (m, T)
    locs = model.family.mean(chunk.params).reshape(rows, -1)
    variances = model.family.variance(chunk.params).reshape(rows, -1)

    total = weights.shape[1]
    if total <= num_groups:
        # Room for every component: each is its own group, so the result is the mixture
        # itself (the extra groups stay empty), and no merging step is needed.
        groups = jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (rows, total))
        merged = _merge(weights, locs, variances, groups, num_groups)
        num_iterations = 0
    else:
        # Initial groups: K' slices of equal mass along the sorted locations.
        order = jnp.argsort(locs, axis=1)
        cumulative = jnp.cumsum(jnp.take_along_axis(weights, order, axis=1), axis=1)
        cumulative = cumulative / cumulative[:, -1:]
        sorted_groups = jnp.minimum((cumulative * num_groups).astype(jnp.int32),
                                    num_groups - 1)
        groups = jnp.zeros_like(sorted_groups).at[jnp.arange(rows)[:, None], order].set(
            sorted_groups)
        merged = _merge(weights, locs, variances, groups, num_groups)

    def step(_, merged):
        weight, mean, variance = merged
        variance = jnp.maximum(variance, jnp.finfo(variance.dtype).tiny)
        # KL(p_i || q_j) up to terms in i; an empty group is never chosen.
        cost = (0.5 * jnp.log(variance)[:, None, :]
                + (variances[..., None] + jnp.square(locs[..., None] - mean[:, None, :]))
                / (2.0 * variance[:, None, :]))
        cost = jnp.where((weight > _MIN_WEIGHT)[:, None, :], cost, jnp.inf)
        return _merge(weights, locs, variances, jnp.argmin(cost, axis=-1), num_groups)

    weight, mean, variance = jax.lax.fori_loop(0, num_iterations, step, merged)
    # A group left without members keeps weight _MIN_WEIGHT; give it the whole mixture's
    # moments, so that no query meets a zero scale (a CRPS of 0 / 0).
    total_mean = jnp.sum(weights * locs, axis=1, keepdims=True)
    total_variance = jnp.sum(weights * (variances + jnp.square(locs - total_mean)), axis=1,
                             keepdims=True)
    empty = weight <= _MIN_WEIGHT
    mean = jnp.where(empty, total_mean, mean)
    variance = jnp.where(empty | (variance <= 0), total_variance, variance)
    log_weight = jnp.log(jnp.maximum(weight, _MIN_WEIGHT))
    log_weight = log_weight - jax.nn.logsumexp(log_weight, axis=1, keepdims=True)
    return log_weight, mean, jnp.sqrt(jnp.maximum(variance, 0.0))
