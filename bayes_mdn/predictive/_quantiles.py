"""Quantile kernel: the mixture evaluated once per input chunk, then every level of an input
solved by Chandrupatla's method (:mod:`._roots`) in that input's own loop; integer bisection
for discrete families.

Per level q the mixture quantile lies between the least and the greatest component quantile
at q (``F(min_k Q_k(q)) <= sum_k w_k q = q``): a bracket per level, not one spanning all.
With many draws (D = 1) the solve starts closer: two mixtures of a few draws each
(surrogates, a third of the terms or less) are solved first, and the full mixture's cdf
brackets the root within a step or two of their mean (:func:`_solve_from_surrogates`). On
the seed network (S = 1000, K = 20) that is about 5 full cdf evaluations per level instead
of 14 from the component-quantile bracket.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from bayes_mdn.families import Normal
from bayes_mdn.predictive._evaluator import num_draws_of, reduce_draws
from bayes_mdn.predictive._roots import (
    _chandrupatla,
    _secant_fraction,
    solve_from_guess,
    solve_increasing,
)

_SQRT_HALF = 1.0 / math.sqrt(2.0)
#: Draws whose networks one step of :func:`_whole_mixture` evaluates (vmapped).
DRAWS_PER_STEP = 10
#: Draws in each of the two surrogate mixtures that give an input's first estimate of its
#: quantiles (:func:`_surrogate_guesses`).
SURROGATE_DRAWS = 32
#: Fewest draws for which the surrogates pay (about 15 steps on 64 draws' terms against 7
#: fewer full cdf evaluations per level); below, the solve starts from the component-quantile
#: brackets.
SURROGATE_MIN_DRAWS = 6 * SURROGATE_DRAWS
#: Absolute tolerance (standardised units) of the surrogates' roots: well below their
#: error as estimates of the full mixture's (about 1e-3 at S = 1000 on the seed network).
SURROGATE_TOLERANCE = 1e-4


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
    """Weights (m, S*K) and parameters (m, S*K, d) of every input's S x K mixture, a few
    draws' networks per step (``lax.scan`` over groups of :data:`DRAWS_PER_STEP` draws,
    vmapped within a group): at 16 inputs x 1000 draws 11x faster on the CPU than vmapping
    the network over all draws (its batched small matmuls), and 1.4x faster than one draw
    per step (the per-step overhead of a step with so little work)."""
    num_draws = num_draws_of(draws)
    draws = dict(draws)

    def networks(weights):  # (g, ...) -> (g, m, K, ...)
        return jax.vmap(lambda one: model.mixture(one, X_std, y_scale))(weights)

    if num_draws < DRAWS_PER_STEP:  # one draw per step, e.g. MAP (as every query runs it)
        _, (log_weights, params) = jax.lax.scan(
            lambda carry, one: (carry, model.mixture(one, X_std, y_scale)), None, draws)
    else:
        steps = num_draws // DRAWS_PER_STEP
        head = steps * DRAWS_PER_STEP
        grouped = {name: value[:head].reshape(steps, DRAWS_PER_STEP, *value.shape[1:])
                   for name, value in draws.items()}
        _, values = jax.lax.scan(lambda carry, group: (carry, networks(group)), None,
                                 grouped)  # (steps, g, m, K, ...)
        values = jax.tree.map(lambda value: value.reshape(head, *value.shape[2:]), values)
        if head < num_draws:  # the draws that do not fill a group
            rest = networks({name: value[head:] for name, value in draws.items()})
            values = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), values, rest)
        log_weights, params = values  # (S, m, K, ...)

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


def _cdf_terms(family, weights, squeezed):
    """(terms, base, term_cdf) of D = 1 mixtures (`weights` (m, T), `squeezed` parameters
    (m, T)): the cdf of the components ``[..., t]`` of `terms` at y is
    ``base + term_cdf(terms, y)``, summing over the last axis, with y of the terms' shape
    less that axis. A Normal's is ``sum_t w_t / 2 + sum_t (w_t / 2) erf((y - loc_t) k_t)``
    with ``k_t = 1 / (scale_t sqrt 2)`` computed once (no division per evaluation)."""
    if type(family).marginal_cdf is Normal.marginal_cdf:
        def term_cdf(terms, y):
            half_weights, loc, inverse = terms
            return jnp.sum(half_weights * jax.lax.erf((y[..., None] - loc) * inverse), axis=-1)

        return ((0.5 * weights, squeezed["loc"], _SQRT_HALF / squeezed["scale"]),
                0.5 * jnp.sum(weights, axis=-1), term_cdf)

    def term_cdf(terms, y):
        term_weights, params = terms
        return jnp.sum(term_weights * family.marginal_cdf(params, y[..., None]), axis=-1)

    return (weights, squeezed), jnp.zeros(weights.shape[:-1], weights.dtype), term_cdf


def _solve_each_level(family, weights, squeezed, lower, upper, levels, solve):
    """Quantiles (Q, m, 1) of D = 1 mixtures (`weights` (m, T), `squeezed` parameters
    (m, T)) within the brackets `lower`, `upper` (Q, m, 1), one root-finder loop per input
    and level (nested ``lax.map``), each stopping as soon as it has converged, with the T
    terms along the minor axis (see :func:`_cdf_terms`)."""
    terms, base, term_cdf = _cdf_terms(family, weights, squeezed)

    def one_input(arguments):
        term, offset, low, high = arguments  # terms (T,); low, high (Q,)

        def one_level(bounds):
            return solve(lambda y: offset + term_cdf(term, y), *bounds)

        return jax.lax.map(one_level, (low, high, levels))

    values = jax.lax.map(one_input, (terms, base, jnp.moveaxis(lower[..., 0], 1, 0),
                                     jnp.moveaxis(upper[..., 0], 1, 0)))  # (m, Q)
    return jnp.moveaxis(values, 1, 0)[..., None]


def _surrogate_guesses(family, weights, squeezed, levels, num_draws, max_iterations):
    """First estimates (m, Q) of D = 1 mixtures' quantiles and of their errors.

    Two disjoint subsets of about :data:`SURROGATE_DRAWS` draws each (every r-th draw, from
    draw 0 and from draw r/2, across all chains) form two surrogate mixtures of each input,
    each solved by Chandrupatla's method within the brackets of its own component quantiles
    to :data:`SURROGATE_TOLERANCE`, all inputs, subsets and levels at once. Returns their mean
    and their distance (plus that tolerance), a scale of the mean's error.
    """
    num_inputs, num_terms = weights.shape
    num_components = num_terms // num_draws
    stride = num_draws // SURROGATE_DRAWS
    count = num_draws // stride

    def pick(value):  # (m, T) -> (m, 2, count * K)
        value = value[:, :count * stride * num_components].reshape(
            num_inputs, count, stride, num_components)
        return jnp.stack([value[:, :, 0], value[:, :, stride // 2]], axis=1).reshape(
            num_inputs, 2, -1)

    sub_weights = pick(weights)
    sub_params = {name: pick(value) for name, value in squeezed.items()}
    terms, base, term_cdf = _cdf_terms(family, sub_weights, sub_params)
    total = jnp.sum(sub_weights, axis=-1)  # (m, 2)
    lower, upper = (bound[..., 0] for bound in _bracket_terms(
        family, sub_weights.reshape(num_inputs * 2, -1),
        {name: value.reshape(num_inputs * 2, -1, 1) for name, value in sub_params.items()},
        levels))  # (Q, 2m)
    lower, upper = (jnp.moveaxis(bound.reshape(-1, num_inputs, 2), 0, -1)
                    for bound in (lower, upper))  # (m, 2, Q)
    broadcast_terms = jax.tree.map(lambda value: value[:, :, None, :], terms)

    def f(y):  # (m, 2, Q)
        cdf = (base[..., None] + term_cdf(broadcast_terms, y)) / total[..., None]
        return jnp.clip(cdf, 0.0, 1.0) - levels

    f_lower, f_upper = -jnp.broadcast_to(levels, lower.shape), 1.0 - levels
    f_upper = jnp.broadcast_to(f_upper, lower.shape)
    roots, _ = _chandrupatla(f, lower, upper, f_lower, f_upper, SURROGATE_TOLERANCE,
                             max_iterations,
                             _secant_fraction(lower, upper, f_lower, f_upper,
                                              SURROGATE_TOLERANCE))
    return (jnp.mean(roots, axis=1),
            jnp.abs(roots[:, 0] - roots[:, 1]) + SURROGATE_TOLERANCE)


def _solve_from_surrogates(family, weights, squeezed, levels, num_draws, max_iterations):
    """Quantiles (Q, m, 1) of D = 1 mixtures (`weights` (m, T), `squeezed` parameters
    (m, T)) of `num_draws` >= :data:`SURROGATE_MIN_DRAWS` draws each: every input's levels
    start from the surrogates' estimates (:func:`_surrogate_guesses`), the full mixture's
    cdf brackets each root in a step or two from there and Chandrupatla's method solves it
    (:func:`~._roots.solve_from_guess`), one loop per input and level (nested ``lax.map``).
    The extreme component quantiles bound a root the steps do not reach (never, in
    practice)."""
    guesses, errors = _surrogate_guesses(family, weights, squeezed, levels, num_draws,
                                         max_iterations)
    terms, base, term_cdf = _cdf_terms(family, weights, squeezed)
    present_all = weights > 0

    def one_input(arguments):
        term, offset, params, present, input_guesses, input_errors = arguments

        def one_level(arguments):
            guess, error, level = arguments

            def fallback():  # the least and greatest component quantiles at `level`
                quantiles = family.marginal_icdf(params, level)
                return (jnp.min(jnp.where(present, quantiles, jnp.inf)),
                        jnp.max(jnp.where(present, quantiles, -jnp.inf)))

            return solve_from_guess(
                lambda y: jnp.clip(offset + term_cdf(term, y), 0.0, 1.0) - level, guess,
                error, (-level, 1.0 - level), fallback, max_iterations=max_iterations)

        return jax.lax.map(one_level, (input_guesses, input_errors, levels))

    values = jax.lax.map(one_input, (terms, base, squeezed, present_all, guesses,
                                     errors))  # (m, Q)
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
        if squeezed is not None and not discrete and num_draws >= SURROGATE_MIN_DRAWS:
            return _solve_from_surrogates(family, weights, squeezed, levels, num_draws,
                                          max_iterations)
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
