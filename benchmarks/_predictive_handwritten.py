"""Hand-written draw-major kernels for benchmarks/predictive_speed.py (the reference).

The seed network only (an MLP with tanh hidden layers, K Normal components, D = 1), written
directly on the weights in column layout: activations are (width, m), the K components on the
leading axis, the inputs along the minor axis. ``lax.scan`` over draws; each step evaluates
one draw's network on a block of m inputs (one matmul chain) and folds it into a running
reduction (a sum for the mean, a running logsumexp for log_prob).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

_HALF_LOG_TAU = 0.5 * math.log(2 * math.pi)


def _heads(weights, x, num_hidden, num_components, min_scale):
    """(logits, loc, scale), each (K, m), of one draw at inputs x (P, m)."""
    h = x
    for index in range(num_hidden):
        kernel, bias = weights[f"hidden_{index}.kernel"], weights[f"hidden_{index}.bias"]
        h = jnp.tanh(kernel.T @ h + bias[:, None])
    kernel = jnp.concatenate([weights[f"{n}.kernel"] for n in ("logits", "loc", "scale")], -1)
    bias = jnp.concatenate([weights[f"{n}.bias"] for n in ("logits", "loc", "scale")], -1)
    out = kernel.T @ h + bias[:, None]
    logits, loc, raw = jnp.split(out, 3, axis=0)
    return logits, loc, jax.nn.softplus(raw) + min_scale


@partial(jax.jit, static_argnames=("num_hidden", "num_components", "min_scale"))
def mean_kernel(draws, X, *, num_hidden, num_components, min_scale):
    """Mixture mean (m,) of the S-draw predictive; `draws` leads with S; X is (m, P)."""
    x = X.T

    def step(total, weights):
        logits, loc, _ = _heads(weights, x, num_hidden, num_components, min_scale)
        return total + jnp.sum(jax.nn.softmax(logits, axis=0) * loc, axis=0), None

    total = jax.lax.scan(step, jnp.zeros(X.shape[0], X.dtype), draws)[0]
    return total / next(iter(draws.values())).shape[0]


@partial(jax.jit, static_argnames=("num_hidden", "num_components", "min_scale"))
def log_prob_kernel(draws, X, y, *, num_hidden, num_components, min_scale):
    """log p(y | x) (m,) of the S-draw predictive; y is (m,)."""
    x = X.T

    def step(total, weights):
        logits, loc, scale = _heads(weights, x, num_hidden, num_components, min_scale)
        log_w = logits - jax.nn.logsumexp(logits, axis=0, keepdims=True)
        z = (y[None, :] - loc) / scale
        lp = log_w - 0.5 * z * z - jnp.log(scale) - _HALF_LOG_TAU
        return jnp.logaddexp(total, jax.nn.logsumexp(lp, axis=0)), None

    total = jax.lax.scan(step, jnp.full(X.shape[0], -jnp.inf, X.dtype), draws)[0]
    return total - math.log(next(iter(draws.values())).shape[0])


def run_blocks(kernel, draws, X, *rows, block: int, **static):
    """Apply `kernel` to blocks of `block` inputs (the last padded) and gather on the host."""
    num = X.shape[0]
    out = np.empty(num, np.float32)
    for start in range(0, num, block):
        stop = min(start + block, num)
        pieces = [np.zeros((block, *a.shape[1:]), a.dtype) for a in (X, *rows)]
        for piece, a in zip(pieces, (X, *rows), strict=True):
            piece[: stop - start] = a[start:stop]
        out[start:stop] = np.asarray(kernel(draws, *pieces, **static))[: stop - start]
    return out
