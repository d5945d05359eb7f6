"""Leave-one-out PIT values of a fit with posterior draws, by Pareto-smoothed importance
sampling (PSIS-LOO-PIT): the PIT values ``recalibrate(cv="loo")`` fits its map to.

For training row i and draws theta_s of the fit's posterior, the leave-one-out predictive is
approximated by reweighting the draws with ``w_si ~ 1 / p(y_i | x_i, theta_s)``, the weights
Pareto-smoothed (Vehtari et al., 2024; ArviZ's ``psislw``), and the LOO-PIT value is the
weighted cdf ``u_i = sum_s w_si F_s(y_i | x_i)`` (as ArviZ's ``loo_pit``). No refits: the
values describe the fit that is actually used, unlike cross-fitting, whose fold fits on
fewer rows can be calibrated differently. The Pareto shape k-hat of each row's weights says
whether its estimate is reliable (k-hat > 0.7: not; Vehtari et al.).

This needs a posterior with many draws that approximate the posterior (NUTS, SVI, Laplace);
a point estimate has nothing to reweight (MAP: use ``cv=k``), and a deep ensemble's few
members are not draws of a posterior density, so their weights have no tail to smooth.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bayes_mdn.numerics import _arviz

if TYPE_CHECKING:
    from bayes_mdn.posterior import Posterior

__all__ = ["MIN_LOO_DRAWS", "PARETO_K_THRESHOLD", "loo_pit_values"]

#: Fewest posterior draws for PSIS: its tail fit uses min(0.2 S, 3 sqrt(S)) draws.
MIN_LOO_DRAWS = 50
#: Pareto k-hat above which a row's importance-sampling estimate is unreliable.
PARETO_K_THRESHOLD = 0.7
#: Rows per batch of the (rows, draws x components) evaluation.
_ROW_BATCH = 64


@partial(jax.jit, static_argnames=("family", "num_draws"))
def _per_draw_kernel(family: Any, log_weights: jax.Array, params: dict[str, jax.Array],
                     y: jax.Array, num_draws: int) -> tuple[jax.Array, jax.Array]:
    m = y.shape[0]
    lw = log_weights.reshape(m, num_draws, -1) + jnp.log(num_draws)
    value = y[:, None, :]
    component_lp = family.distribution(params).log_prob(value).reshape(m, num_draws, -1)
    component_cdf = family.marginal_cdf(params, value)[..., 0].reshape(m, num_draws, -1)
    return logsumexp(lw + component_lp, axis=-1), jnp.sum(jnp.exp(lw) * component_cdf, axis=-1)


def _per_draw(family: Any, log_weights: np.ndarray, params: dict[str, np.ndarray],
              y: np.ndarray, num_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw log-likelihood and cdf at y, each (m, S), from the flattened S x K mixture
    ``(log_weights (m, S*K), params (m, S*K, d))`` of ``mixture_parameters``."""
    log_lik, cdf = _per_draw_kernel(family, jnp.asarray(log_weights),
                                    {name: jnp.asarray(p) for name, p in params.items()},
                                    jnp.asarray(y), num_draws)
    return np.asarray(log_lik, np.float64), np.clip(np.asarray(cdf, np.float64), 0.0, 1.0)


def loo_pit_values(posterior: Posterior, X: np.ndarray, y: np.ndarray, *,
                   key: jax.Array | None, num_draws: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """PSIS leave-one-out PIT values of the training rows.

    Parameters
    ----------
    posterior : Posterior
        A fit with posterior draws (at least :data:`MIN_LOO_DRAWS`), D = 1.
    X : numpy.ndarray, shape (N, P)
    y : numpy.ndarray, shape (N, 1)
        The rows the posterior was fitted to (LOO of other rows means nothing).
    key : PRNG key or None
        Randomises the PIT values of discrete families (required for them).
    num_draws : int, optional
        At most this many draws (evenly spaced); default all.

    Returns
    -------
    u : numpy.ndarray, shape (N,)
        LOO-PIT values in [0, 1].
    k_hat : numpy.ndarray, shape (N,)
        Pareto shape of each row's importance weights.
    """
    pred = posterior.predictive(X, num_draws=num_draws)
    pred = getattr(pred, "base", pred)  # the map is refitted from scratch
    family = posterior.model.family
    discrete = bool(getattr(family, "discrete", False))
    if discrete and key is None:
        raise TypeError("Recalibrating a discrete family randomises its PIT values and needs "
                        "`key`, e.g. key=jax.random.key(0).")
    S = pred.num_draws
    log_liks, uppers, lowers = [], [], []
    for start in range(0, X.shape[0], _ROW_BATCH):
        rows = np.arange(start, min(start + _ROW_BATCH, X.shape[0]))
        log_weights, params = pred[rows].mixture_parameters()
        log_lik, upper = _per_draw(family, log_weights, params, y[rows], S)
        log_liks.append(log_lik)
        uppers.append(upper)
        if discrete:
            lowers.append(_per_draw(family, log_weights, params, y[rows] - 1, S)[1])
    log_lik = np.concatenate(log_liks)  # (N, S)
    smoothed, k_hat = _arviz().psislw(-log_lik, reff=1.0)
    weights = np.exp(np.asarray(smoothed, np.float64))
    weights /= weights.sum(axis=1, keepdims=True)
    u = np.sum(weights * np.concatenate(uppers), axis=1)
    if discrete:
        lower = np.minimum(np.sum(weights * np.concatenate(lowers), axis=1), u)
        noise = np.asarray(jax.random.uniform(key, u.shape), np.float64)
        u = lower + noise * (u - lower)
    return np.clip(u, 0.0, 1.0), np.asarray(k_hat, np.float64)
