"""Compiled query kernels: each visits the draws in chunks with a streaming reduction.

Everything inside a kernel is in standardised units of y (the network's own units, where
values are O(1)): component parameters come straight from the network, and the targets, grids
and bounds a kernel receives are standardised too. The conversion to and from original units
is affine and happens on the host in float64 (:class:`~bayes_mdn.PredictiveMixture`), so that
neither a large offset (y ~ 1e8 + O(1)) nor a huge or tiny scale (variances ~ 1e40) is ever
held in float32. Kernels still take `y_shift` alongside `y_scale` so that all share one
signature; only `y_scale` is used (by families with quantities fixed in original units, e.g.
``Normal(fixed_scale=...)``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from bayes_mdn.predictive._constants import _RESOLVE_MIN_WEIGHT, _SUPPORT_MIN_WEIGHT, _SUPPORT_TAIL
from bayes_mdn.predictive._evaluator import (
    DrawChunk,
    _num_chunks,  # noqa: F401  (re-exported for mixture)
    evaluate_chunk,
    map_draws,
    num_draws_of,
    reduce_draws,
    stack_draws,
)

if TYPE_CHECKING:
    from bayes_mdn.model import MDN



# --------------------------------------------------------------------------- draw chunks
# The draw loops live in the evaluator (one home for draws x inputs); the old private names
# stay for the kernels below and for the CRPS kernels (_crps.py).
_Chunk = DrawChunk
_num_draws = num_draws_of
_draw_chunk = evaluate_chunk
_reduce_draws = reduce_draws
_stack_draws = stack_draws


def _mixture_log_weights(chunk: _Chunk, num_draws: int) -> jax.Array:
    """Log-weights (m, b, K) of the chunk's terms in the S x K mixture; -inf for padding."""
    return jnp.where(chunk.valid[None, :, None], chunk.log_weights - math.log(num_draws),
                     -jnp.inf)


def _flat(array: jax.Array) -> jax.Array:
    """Merge the draw and component axes: (m, b, K, ...) -> (m, b * K, ...)."""
    return array.reshape(array.shape[0], -1, *array.shape[3:])


def _merge_moments(left, right):
    """Combine (weight, mean, centred second moment) of two disjoint weighted sets.

    The parallel form of Welford's update (Chan et al. 1979): no E[y^2] - E[y]^2
    cancellation. `left` may be empty (weight 0); `right` never is.
    """
    weight_a, mean_a, m2_a = left
    weight_b, mean_b, m2_b = right
    weight = weight_a + weight_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (weight_b / weight)
    m2 = m2_a + m2_b + jnp.square(delta) * (weight_a * weight_b / weight)
    return weight, mean, m2


def _empty_moments(num_inputs: int, num_outputs: int, dtype):
    return (jnp.zeros((num_inputs, 1), dtype), jnp.zeros((num_inputs, num_outputs), dtype),
            jnp.zeros((num_inputs, num_outputs), dtype))


def _neg_x_log_x(log_density: jax.Array) -> jax.Array:
    """``-p log p`` from ``log p``, with the limit 0 where p underflows to 0."""
    finite = jnp.isfinite(log_density)
    safe = jnp.where(finite, log_density, 0.0)
    return jnp.where(finite, -jnp.exp(safe) * safe, 0.0)


def _trapezoid(values: jax.Array, spacing: jax.Array) -> jax.Array:
    """Trapezoid rule along axis 1 of (m, G, ...) on a uniform grid; `spacing` broadcasts."""
    return spacing * (jnp.sum(values, axis=1) - 0.5 * (values[:, 0] + values[:, -1]))


# --------------------------------------------------------------------------- compiled kernels
# Every kernel takes (model, draw_chunk, [static options,] draws, y_shift, y_scale, X_std,
# [per-input rows,] [trailing arrays,] [key, start]) and returns per-input results for the
# chunk of inputs; _mixture_kernel alone has no draw_chunk (it returns all S x K terms).
# Rows, trailing arrays and results are all in standardised units of y.
def _flat_mixture(model: MDN, draws, y_shift, y_scale, X_std):
    """Log-weights (m, S*K) and component params (m, S*K, d) in standardised units of y."""
    num_draws = _num_draws(draws)
    chunk = _draw_chunk(model, draws, y_shift, y_scale, X_std, num_draws, 0)
    params = {name: _flat(value) for name, value in chunk.params.items()}
    return _flat(_mixture_log_weights(chunk, num_draws)), params


_mixture_kernel = jax.jit(_flat_mixture, static_argnames="model")


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _log_prob_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    num_draws = _num_draws(draws)

    def body(total, chunk):
        log_weights = _flat(_mixture_log_weights(chunk, num_draws))  # (m, b*K)
        params = {name: _flat(value) for name, value in chunk.params.items()}
        component_lp = model.family.distribution(params).log_prob(y[:, None, :])  # (m, b*K)
        return jnp.logaddexp(total, logsumexp(log_weights + component_lp, axis=-1))

    init = jnp.full(X_std.shape[:1], -jnp.inf, X_std.dtype)
    return _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _cdf_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    num_draws = _num_draws(draws)

    def body(total, chunk):
        weights = jnp.exp(_flat(_mixture_log_weights(chunk, num_draws)))[..., None]
        params = {name: _flat(value) for name, value in chunk.params.items()}
        return total + jnp.sum(weights * model.family.marginal_cdf(params, y[:, None, :]), axis=1)

    init = jnp.zeros(y.shape, X_std.dtype)
    cdf = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk)
    return jnp.clip(cdf, 0.0, 1.0)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _moments_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std):
    """Mean and variance (m, D) by merging per-chunk weighted moments."""
    num_draws = _num_draws(draws)

    def body(moments, chunk):
        weights = jnp.exp(_flat(_mixture_log_weights(chunk, num_draws)))[..., None]
        params = {name: _flat(value) for name, value in chunk.params.items()}
        component_mean = model.family.mean(params)  # (m, b*K, D)
        weight = jnp.sum(weights, axis=1)  # (m, 1)
        mean = jnp.sum(weights * component_mean, axis=1) / weight
        # Law of total variance, written with centred terms to avoid cancellation.
        spread = jnp.square(component_mean - mean[:, None, :])
        m2 = jnp.sum(weights * (model.family.variance(params) + spread), axis=1)
        return _merge_moments(moments, (weight, mean, m2))

    init = _empty_moments(X_std.shape[0], y_scale.shape[-1], X_std.dtype)
    weight, mean, m2 = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std,
                                     draw_chunk)
    return mean, m2 / weight


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _variance_split_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std):
    """Per-draw mixture mean and variance, reduced over draws: (aleatoric, epistemic)."""
    num_draws = _num_draws(draws)

    def body(carry, chunk):
        aleatoric, moments = carry
        weights = jnp.exp(chunk.log_weights)[..., None]  # (m, b, K, 1), sums to 1 per draw
        component_mean = model.family.mean(chunk.params)  # (m, b, K, D)
        draw_mean = jnp.sum(weights * component_mean, axis=2)  # (m, b, D)
        spread = jnp.square(component_mean - draw_mean[:, :, None, :])
        draw_variance = jnp.sum(weights * (model.family.variance(chunk.params) + spread), axis=2)
        draw_weight = (chunk.valid / num_draws).astype(X_std.dtype)[None, :, None]  # (1, b, 1)
        aleatoric = aleatoric + jnp.sum(draw_weight * draw_variance, axis=1)
        weight = jnp.broadcast_to(jnp.sum(draw_weight, axis=1), (X_std.shape[0], 1))
        mean = jnp.sum(draw_weight * draw_mean, axis=1) / weight
        m2 = jnp.sum(draw_weight * jnp.square(draw_mean - mean[:, None, :]), axis=1)
        return aleatoric, _merge_moments(moments, (weight, mean, m2))

    moments = _empty_moments(X_std.shape[0], y_scale.shape[-1], X_std.dtype)
    init = (jnp.zeros_like(moments[1]), moments)
    aleatoric, (weight, _, m2) = _reduce_draws(body, init, model, draws, y_shift, y_scale,
                                               X_std, draw_chunk)
    return aleatoric / weight, m2 / weight


@partial(jax.jit, static_argnames=("model", "draw_chunk", "num_iterations", "cached"))
def _quantile_kernel(model, draw_chunk, num_iterations, cached, draws, y_shift, y_scale, X_std,
                     q):
    """Bisection on the mixture cdf; returns (Q, m, D).

    The bracket [min_k Q_k(q_min), max_k Q_k(q_max)] over component quantiles provably
    contains every requested mixture quantile, and is shared by all q, so the results are
    monotone in q. Each bisection step sums the mixture cdf over all draw chunks; with
    `cached` the chunks are evaluated once and kept (num_chunks, m, b, K, ...), otherwise
    the network is re-run per step to stay within the memory budget.
    """
    num_draws = _num_draws(draws)
    stacked = _stack_draws(model, draws, y_shift, y_scale, X_std, draw_chunk) if cached else None
    reduce = partial(_reduce_draws, model=model, draws=draws, y_shift=y_shift, y_scale=y_scale,
                     X_std=X_std, draw_chunk=draw_chunk, stacked=stacked)

    def bracket(carry, chunk):
        lower, upper = carry
        valid = chunk.valid[None, :, None, None]
        # One call for both levels (one compiled copy of an iterative icdf, not two).
        extremes = jnp.stack([jnp.min(q), jnp.max(q)])[:, None, None, None, None]
        low, high = model.family.marginal_icdf(chunk.params, extremes)  # (m, b, K, D) each
        return (jnp.minimum(lower, jnp.min(jnp.where(valid, low, jnp.inf), axis=(1, 2))),
                jnp.maximum(upper, jnp.max(jnp.where(valid, high, -jnp.inf), axis=(1, 2))))

    shape = (X_std.shape[0], y_scale.shape[-1])
    lower, upper = reduce(bracket, (jnp.full(shape, jnp.inf, X_std.dtype),
                                    jnp.full(shape, -jnp.inf, X_std.dtype)))
    q_column = q[:, None, None]  # (Q, 1, 1)
    lower = jnp.broadcast_to(lower, (q.shape[0], *shape))
    upper = jnp.broadcast_to(upper, (q.shape[0], *shape))

    def mixture_cdf(y):  # (Q, m, D) -> (Q, m, D)
        def body(total, chunk):
            weights = jnp.exp(_flat(_mixture_log_weights(chunk, num_draws)))[..., None]
            params = {name: _flat(value) for name, value in chunk.params.items()}
            component_cdf = model.family.marginal_cdf(params, y[:, :, None, :])  # (Q, m, bK, D)
            return total + jnp.sum(weights[None] * component_cdf, axis=2)

        return reduce(body, jnp.zeros_like(y))

    # A discrete mixture's q-quantile is the smallest integer k with F(k) >= q: bisect on the
    # integers keeping F(lo) < q <= F(hi) (every component cdf is below q_min at
    # min_k Q_k(q_min) - 1) and return hi.
    discrete = model.family.discrete
    if discrete:
        lower = lower - 1.0

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        if discrete:
            mid = jnp.floor(mid)
        below = mixture_cdf(mid) < q_column
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lower, upper = jax.lax.fori_loop(0, num_iterations, step, (lower, upper))
    return upper if discrete else 0.5 * (lower + upper)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _support_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std):
    """Range holding all but a negligible tail of every draw, and the narrowest heavy
    component's interquartile range, each (m, D).

    The range is [min Q_sk(t), max Q_sk(1 - t)] over components with weight >= w_min within
    their draw (t = _SUPPORT_TAIL), so every draw loses at most (2 + K) t of its mass.
    Negligible components are skipped so that a dead, wide one cannot stretch the grid.
    """
    family = model.family

    def body(carry, chunk):
        lower, upper, narrowest = carry
        valid = chunk.valid[None, :, None, None]
        significant = valid & (chunk.log_weights >= math.log(_SUPPORT_MIN_WEIGHT))[..., None]
        heavy = valid & (chunk.log_weights >= math.log(_RESOLVE_MIN_WEIGHT))[..., None]
        # One call for all four levels (one compiled copy of an iterative icdf, not four).
        levels = jnp.asarray([_SUPPORT_TAIL, 1 - _SUPPORT_TAIL, 0.25, 0.75], X_std.dtype)
        low, high, first, third = family.marginal_icdf(chunk.params,
                                                       levels[:, None, None, None, None])
        spread = third - first
        return (jnp.minimum(lower, jnp.min(jnp.where(significant, low, jnp.inf), axis=(1, 2))),
                jnp.maximum(upper, jnp.max(jnp.where(significant, high, -jnp.inf), axis=(1, 2))),
                jnp.minimum(narrowest, jnp.min(jnp.where(heavy, spread, jnp.inf), axis=(1, 2))))

    shape = (X_std.shape[0], y_scale.shape[-1])
    init = (jnp.full(shape, jnp.inf, X_std.dtype), jnp.full(shape, -jnp.inf, X_std.dtype),
            jnp.full(shape, jnp.inf, X_std.dtype))
    return _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk)


def _sample_with_draws(model, num_samples, draw_chunk, draws, y_shift, y_scale, X_std, key,
                       start):
    """Ancestral samples (n, m, D) and the draw each came from (n, m).

    All randomness comes from keys derived from each input's global index (`start` is the
    chunk's first input), so the result does not depend on how inputs or draws are chunked:
    a uniform draw index and a component uniform per sample are drawn up front, one pass
    over the draw chunks fills in the component parameters of the samples whose draw lies
    in the chunk, and the values are drawn last.
    """
    num_draws = _num_draws(draws)
    num_inputs = X_std.shape[0]
    # Two keys per input, from its global index: one for the choice of draw and component,
    # one for the value. Each threefry call is slow to compile, so use as few as possible.
    keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(
        2 * start + jnp.arange(2 * num_inputs))
    choice_keys, value_keys = keys[0::2], keys[1::2]

    def choices(choice_key):
        # A draw index by modulo (bias <= S / 2**32) and a uniform in [0, 1) from the top 24
        # bits (exact in float32), both from one block of raw bits.
        bits = jax.random.bits(choice_key, (2, num_samples), jnp.uint32)
        draw = (bits[0] % jnp.uint32(num_draws)).astype(jnp.int32)
        return draw, (bits[1] >> 8).astype(X_std.dtype) * (2.0**-24)

    draw_index, uniforms = jax.vmap(choices, out_axes=1)(choice_keys)  # (n, m) each
    rows = jnp.arange(num_inputs)[None, :]

    def body(chosen, chunk):
        local = draw_index - chunk.first  # (n, m)
        inside = (local >= 0) & (local < draw_chunk)
        local = jnp.clip(local, 0, draw_chunk - 1)
        log_weights = chunk.log_weights - jnp.max(chunk.log_weights, -1, keepdims=True)
        cumulative = jnp.cumsum(jnp.exp(log_weights), axis=-1)  # (m, b, K)
        cumulative = cumulative / cumulative[..., -1:]
        component = jnp.sum(cumulative[rows, local] <= uniforms[..., None], axis=-1)  # (n, m)
        component = jnp.minimum(component, model.num_components - 1)
        return {name: jnp.where(inside[..., None], value[rows, local, component], chosen[name])
                for name, value in chunk.params.items()}

    shapes = jax.eval_shape(
        lambda: _draw_chunk(model, draws, y_shift, y_scale, X_std, draw_chunk, 0).params)
    init = {name: jnp.zeros((num_samples, num_inputs, s.shape[-1]), s.dtype)
            for name, s in shapes.items()}
    chosen = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk)
    values = jax.vmap(lambda k, params: model.family.distribution(params).sample(k),
                      in_axes=(0, 1), out_axes=1)(value_keys, chosen)
    return values, draw_index


@partial(jax.jit, static_argnames=("model", "draw_chunk", "num_samples"))
def _sample_kernel(model, draw_chunk, num_samples, draws, y_shift, y_scale, X_std, key, start):
    return _sample_with_draws(model, num_samples, draw_chunk, draws, y_shift, y_scale, X_std,
                              key, start)[0]


@partial(jax.jit, static_argnames=("model", "draw_chunk", "num_samples"))
def _entropy_mc_kernel(model, draw_chunk, num_samples, draws, y_shift, y_scale, X_std, key,
                       start):
    """Monte Carlo (total, expected) entropy, each (m,).

    With (s, y) drawn jointly (s uniform, y ~ p(y | x, theta_s)), ``-log p(y | x)`` estimates
    the total and ``-log p(y | x, theta_s)`` the expected entropy; using the same samples for
    both makes their difference, the mutual information, low-variance.
    """
    num_draws = _num_draws(draws)
    values, draw_index = _sample_with_draws(model, num_samples, draw_chunk, draws, y_shift,
                                            y_scale, X_std, key, start)

    def body(carry, chunk):
        mixture_lp, own_lp = carry  # (n, m)
        params = {name: value[None] for name, value in chunk.params.items()}
        component_lp = model.family.distribution(params).log_prob(
            values[:, :, None, None, :])  # (n, m, b, K)
        draw_lp = logsumexp(chunk.log_weights[None] + component_lp, axis=-1)  # (n, m, b)
        in_mixture = jnp.where(chunk.valid, draw_lp, -jnp.inf) - math.log(num_draws)
        mixture_lp = jnp.logaddexp(mixture_lp, logsumexp(in_mixture, axis=-1))
        own = draw_index[..., None] == chunk.first + jnp.arange(draw_chunk)
        return mixture_lp, own_lp + jnp.sum(jnp.where(own, draw_lp, 0.0), axis=-1)

    init = (jnp.full(draw_index.shape, -jnp.inf, X_std.dtype),
            jnp.zeros(draw_index.shape, X_std.dtype))
    mixture_lp, own_lp = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std,
                                       draw_chunk)
    return -jnp.mean(mixture_lp, axis=0), -jnp.mean(own_lp, axis=0)


@partial(jax.jit, static_argnames=("model", "draw_chunk", "grid_size"))
def _entropy_grid_kernel(model, draw_chunk, grid_size, draws, y_shift, y_scale, X_std, lower,
                         upper):
    """(total, expected) differential entropy, each (m,), by the trapezoid rule (D = 1).

    The grid spans [lower, upper] (m,) with `grid_size` points per input; the trapezoid rule
    converges geometrically for smooth, rapidly decaying integrands such as -p log p.
    For a discrete family the grid is the integers ``lower + 0, 1, ..., grid_size - 1``
    (`upper` unused) and the Shannon entropy is the plain sum of ``-p log p``.
    """
    num_draws = _num_draws(draws)
    if model.family.discrete:
        grid = jnp.floor(lower)[:, None] + jnp.arange(grid_size, dtype=X_std.dtype)
        spacing = jnp.ones_like(lower)

        def integrate(values, _):
            return jnp.sum(values, axis=1)
    else:
        fractions = jnp.linspace(0.0, 1.0, grid_size, dtype=X_std.dtype)
        grid = lower[:, None] + (upper - lower)[:, None] * fractions  # (m, G)
        spacing = (upper - lower) / (grid_size - 1)  # (m,)
        integrate = _trapezoid

    def body(carry, chunk):
        mixture_lp, expected = carry  # (m, G), (m,)
        params = {name: value[:, None] for name, value in chunk.params.items()}
        component_lp = model.family.distribution(params).log_prob(
            grid[:, :, None, None, None])  # (m, G, b, K)
        draw_lp = logsumexp(chunk.log_weights[:, None] + component_lp, axis=-1)  # (m, G, b)
        draw_entropy = integrate(_neg_x_log_x(draw_lp), spacing[:, None])  # (m, b)
        expected = expected + jnp.sum(jnp.where(chunk.valid, draw_entropy, 0.0), -1) / num_draws
        in_mixture = jnp.where(chunk.valid, draw_lp, -jnp.inf) - math.log(num_draws)
        return jnp.logaddexp(mixture_lp, logsumexp(in_mixture, axis=-1)), expected

    init = (jnp.full(grid.shape, -jnp.inf, X_std.dtype), jnp.zeros(X_std.shape[:1], X_std.dtype))
    mixture_lp, expected = _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std,
                                         draw_chunk)
    return integrate(_neg_x_log_x(mixture_lp), spacing), expected


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _log_prob_grid_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, grid):
    """Log-density of a 1-D mixture on a per-input grid (m, G) -> (m, G)."""
    num_draws = _num_draws(draws)

    def body(total, chunk):
        log_weights = _flat(_mixture_log_weights(chunk, num_draws))  # (m, b*K)
        params = {name: _flat(value)[:, None] for name, value in chunk.params.items()}
        component_lp = model.family.distribution(params).log_prob(grid[..., None, None])
        return jnp.logaddexp(total, logsumexp(log_weights[:, None, :] + component_lp, axis=-1))

    init = jnp.full(grid.shape, -jnp.inf, X_std.dtype)
    return _reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk)


# --------------------------------------------------------------------------- per-draw values
@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _draw_log_prob_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    """Each draw's own mixture log-density (S, m) at y (m, D), standardised units."""
    def per_chunk(chunk):
        component_lp = model.family.distribution(chunk.params).log_prob(
            y[:, None, None, :])  # (m, b, K)
        return logsumexp(chunk.log_weights + component_lp, axis=-1).T  # (b, m)

    return map_draws(per_chunk, model, draws, y_shift, y_scale, X_std, draw_chunk)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def _draw_sample_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, key, start):
    """One sample (S, m, D) from each draw's own mixture at every input, standardised units.

    The key of (input, draw) is ``fold_in(fold_in(key, global input index), draw index)``
    (`start` is the chunk's first input), so the result does not depend on the chunking.
    """
    input_keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(
        start + jnp.arange(X_std.shape[0]))

    def one(one_key, log_weights, params):  # (K,), dict of (K, d)
        choice_key, value_key = jax.random.split(one_key)
        component = jax.random.categorical(choice_key, log_weights)
        picked = {name: value[component] for name, value in params.items()}
        return model.family.distribution(picked).sample(value_key)  # (D,)

    def per_chunk(chunk):
        draw_index = chunk.first + jnp.arange(draw_chunk)
        keys = jax.vmap(lambda input_key: jax.vmap(
            lambda index: jax.random.fold_in(input_key, index))(draw_index))(input_keys)
        values = jax.vmap(jax.vmap(one))(keys, chunk.log_weights, chunk.params)  # (m, b, D)
        return jnp.swapaxes(values, 0, 1)

    return map_draws(per_chunk, model, draws, y_shift, y_scale, X_std, draw_chunk)
