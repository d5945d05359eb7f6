"""Draw-major query kernels: ``lax.scan`` over draws, one draw's network per step on a
large block of inputs, folded into a running reduction.

Same signature as the input-major kernels of :mod:`._kernels` (``model, draw_chunk, draws,
y_shift, y_scale, X_std, *rows``; `draw_chunk` is 1 and unused), same units (standardised y),
same results to float32 round-off: sums of weighted component moments, a Welford update
over the draws' means for the variances, and running logsumexps for densities.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from bayes_mdn.model import LINEARISED_PREFIX, LOGITS
from bayes_mdn.predictive._evaluator import num_draws_of, scan_draws
from bayes_mdn.predictive._kernels import _neg_x_log_x, _trapezoid


def _weights_and_params(model, draw, X_std, y_scale):
    """One draw's mixing weights (m, K) and component parameters (m, K, d), as
    :meth:`MDN.mixture <bayes_mdn.MDN.mixture>` but with the weights the softmax of the
    logits: K exponentials per input, where exponentiating ``mixture``'s log-softmax costs
    K more (its log-sum-exp) and made the mean 1.26x slower than a hand-written kernel.
    A linearised network goes through ``mixture`` itself."""
    if any(name.startswith(LINEARISED_PREFIX) for name in draw):
        log_weights, params = model.mixture(draw, X_std, y_scale)
        return jnp.exp(log_weights), params
    num_outputs = y_scale.shape[-1]
    raw = model._raw_outputs(draw, X_std, num_outputs)
    heads = {name: raw[name].reshape(*X_std.shape[:-1], model.num_components, width)
             for name, width in model.family.head_dims(num_outputs).items()}
    family_sites = model.family.latent_distributions(num_outputs)
    latents = ({name: draw[name] for name in family_sites},) if family_sites else ()
    return (jax.nn.softmax(raw[LOGITS], axis=-1),
            model.family.constrain(heads, y_scale, *latents))


def _scan_weights(body, init, model, draws, y_scale, X_std):
    """:func:`._evaluator.scan_draws` with ``body(carry, weights, params)`` given the
    weights (m, K) themselves (:func:`_weights_and_params`)."""
    def step(carry, draw):
        return body(carry, *_weights_and_params(model, draw, X_std, y_scale)), None

    return jax.lax.scan(step, init, dict(draws))[0]


def _draw_moments(model, weights, params):
    """Mean and variance (m, D) of one draw's K-component mixture (centred form), given its
    weights (m, K)."""
    weights = weights[..., None]  # (m, K, 1)
    component_mean = model.family.mean(params)  # (m, K, D)
    mean = jnp.sum(weights * component_mean, axis=1)
    spread = jnp.square(component_mean - mean[:, None, :])
    variance = jnp.sum(weights * (model.family.variance(params) + spread), axis=1)
    return mean, variance


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def mean_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std):
    """Predictive mean (m, D): the average over draws of each draw's mixture mean."""
    def body(total, weights, params):
        return total + jnp.sum(weights[..., None] * model.family.mean(params), axis=1)

    init = jnp.zeros((X_std.shape[0], y_scale.shape[-1]), X_std.dtype)
    return _scan_weights(body, init, model, draws, y_scale, X_std) / num_draws_of(draws)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def moments_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std):
    """(mean, aleatoric, epistemic), each (m, D), by the law of total variance over draws.

    The draws' means are merged by Welford's update (no E[y^2] - E[y]^2 cancellation):
    ``epistemic = Var_s[mean_s]``, ``aleatoric = E_s[Var(y | theta_s)]``.
    """
    def body(carry, weights, params):
        count, mean, m2, aleatoric = carry
        draw_mean, draw_variance = _draw_moments(model, weights, params)
        count = count + 1.0
        delta = draw_mean - mean
        mean = mean + delta / count
        m2 = m2 + delta * (draw_mean - mean)
        return count, mean, m2, aleatoric + draw_variance

    zeros = jnp.zeros((X_std.shape[0], y_scale.shape[-1]), X_std.dtype)
    init = (jnp.zeros((), X_std.dtype), zeros, zeros, zeros)
    count, mean, m2, aleatoric = _scan_weights(body, init, model, draws, y_scale, X_std)
    return mean, aleatoric / count, m2 / count


def _components_first(log_weights, params):
    """(m, K) and (m, K, d) -> (K, m) and (K, m, d): the layout in which the network
    computed them (its heads are (width, m)), so XLA drops the transposes and every
    elementwise op and the reduction over K run along the inputs (minor axis)."""
    return log_weights.T, {name: jnp.swapaxes(value, 0, 1) for name, value in params.items()}


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def log_prob_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    """Log predictive density (m,) at y (m, D): a running logsumexp over draws."""
    def body(total, log_weights, params):
        log_weights, params = _components_first(log_weights, params)
        component_lp = model.family.distribution(params).log_prob(y[None])  # (K, m)
        return jnp.logaddexp(total, logsumexp(log_weights + component_lp, axis=0))

    init = jnp.full(X_std.shape[:1], -jnp.inf, X_std.dtype)
    total = scan_draws(body, init, model, draws, y_scale, X_std)
    return total - math.log(num_draws_of(draws))


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def cdf_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, y):
    """Marginal cdf (m, D) at y (m, D)."""
    def body(total, log_weights, params):
        log_weights, params = _components_first(log_weights, params)
        weights = jnp.exp(log_weights)[..., None]  # (K, m, 1)
        return total + jnp.sum(weights * model.family.marginal_cdf(params, y[None]), axis=0)

    total = scan_draws(body, jnp.zeros(y.shape, X_std.dtype), model, draws, y_scale, X_std)
    return jnp.clip(total / num_draws_of(draws), 0.0, 1.0)


@partial(jax.jit, static_argnames=("model", "draw_chunk"))
def log_prob_grid_kernel(model, draw_chunk, draws, y_shift, y_scale, X_std, grid):
    """Log-density (m, G) of a 1-D predictive on a per-input grid (m, G)."""
    def body(total, log_weights, params):
        params = {name: value[:, None] for name, value in params.items()}  # (m, 1, K, d)
        component_lp = model.family.distribution(params).log_prob(grid[..., None, None])
        return jnp.logaddexp(total, logsumexp(log_weights[:, None, :] + component_lp, -1))

    init = jnp.full(grid.shape, -jnp.inf, X_std.dtype)
    total = scan_draws(body, init, model, draws, y_scale, X_std)
    return total - math.log(num_draws_of(draws))


@partial(jax.jit, static_argnames=("model", "draw_chunk", "grid_size"))
def entropy_grid_kernel(model, draw_chunk, grid_size, draws, y_shift, y_scale, X_std, lower,
                        upper):
    """(total, expected) entropy (m,) by the trapezoid rule (D = 1); see
    :func:`._kernels._entropy_grid_kernel` for the grid and the discrete case."""
    num_draws = num_draws_of(draws)
    if model.family.discrete:
        grid = jnp.floor(lower)[:, None] + jnp.arange(grid_size, dtype=X_std.dtype)
        spacing = jnp.ones_like(lower)

        def integrate(values, _):
            return jnp.sum(values, axis=1)
    else:
        fractions = jnp.linspace(0.0, 1.0, grid_size, dtype=X_std.dtype)
        grid = lower[:, None] + (upper - lower)[:, None] * fractions  # (m, G)
        spacing = (upper - lower) / (grid_size - 1)
        integrate = _trapezoid

    def body(carry, log_weights, params):
        mixture_lp, expected = carry
        params = {name: value[:, None] for name, value in params.items()}
        component_lp = model.family.distribution(params).log_prob(grid[..., None, None])
        draw_lp = logsumexp(log_weights[:, None, :] + component_lp, axis=-1)  # (m, G)
        expected = expected + integrate(_neg_x_log_x(draw_lp), spacing)
        return jnp.logaddexp(mixture_lp, draw_lp), expected

    init = (jnp.full(grid.shape, -jnp.inf, X_std.dtype), jnp.zeros(X_std.shape[:1], X_std.dtype))
    mixture_lp, expected = scan_draws(body, init, model, draws, y_scale, X_std)
    mixture_lp = mixture_lp - math.log(num_draws)
    return integrate(_neg_x_log_x(mixture_lp), spacing), expected / num_draws
