"""Bring your own sampler: the MDN's log posterior density in BlackJAX's ``logdensity_fn`` terms.

:func:`log_density` prepares the data exactly as :meth:`bayes_mdn.MDN.fit` does (validation,
standardisation) and returns

* ``logdensity_fn(position) -> scalar``: the unnormalised log posterior density of an
  *unconstrained* position (a dict of site name -> array, the pytree BlackJAX samplers move
  on), log-Jacobians of the constraining transforms included, in standardised units;
* ``initial_position``: the data-dependent starting point every method uses, unconstrained;
* ``to_posterior(positions)``: positions with leading (C, S) axes (or (S,)) back to a
  :class:`~bayes_mdn.Posterior` (constrained, with the reference rows diagnostics need), on
  which ``predictive``, ``summary``, ``diagnose``, ``to_arviz`` and ``save`` all work.

Example with BlackJAX's NUTS::

    import blackjax, jax, bayes_mdn as bm
    target = bm.log_density(model, X, y, key=jax.random.key(0))
    warmup = blackjax.window_adaptation(blackjax.nuts, target.logdensity_fn)
    (state, parameters), _ = warmup.run(jax.random.key(1), target.initial_position, 500)
    kernel = blackjax.nuts(target.logdensity_fn, **parameters).step
    ...  # jax.lax.scan kernel over keys, collecting state.position: each site (S, ...)
    posterior = target.to_posterior(positions)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_mdn._validation import check_choice, check_key
from bayes_mdn.inference._data import (
    final_scores,
    initial_params,
    prepare_data,
    require_proper_prior,
    with_reference_points,
)
from bayes_mdn.model import MDN
from bayes_mdn.posterior import KINDS, Posterior

__all__ = ["LogDensity", "log_density"]


class LogDensity(NamedTuple):
    """What :func:`log_density` returns (a named tuple: unpack it or use the names).

    Attributes
    ----------
    logdensity_fn : callable
        ``logdensity_fn(position) -> Array ()``: unnormalised log posterior density of an
        unconstrained position (dict of site name -> array of the site's shape).
    initial_position : dict of str to Array
        The data-dependent starting point, unconstrained.
    to_posterior : callable
        ``to_posterior(positions, *, method="external", kind="chains", info=None,
        sample_stats=None) -> Posterior``; `positions` is a dict of site name -> array with
        leading (C, S) axes, or (S,) for one chain.
    """

    logdensity_fn: Callable[[Mapping[str, jax.Array]], jax.Array]
    initial_position: dict[str, jax.Array]
    to_posterior: Callable[..., Posterior]


def log_density(model: MDN, X: Any, y: Any, *, key: jax.Array) -> LogDensity:
    """The log posterior density of `model` given data (X, y), for an external sampler.

    Parameters
    ----------
    model : MDN
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    key : PRNG key
        Draws the starting point (:attr:`LogDensity.initial_position`), as ``fit`` does.

    Returns
    -------
    LogDensity
        ``(logdensity_fn, initial_position, to_posterior)``; see the module docstring.

    Raises
    ------
    TypeError
        If `model` is not an MDN or `key` is not a PRNG key.
    ValueError
        For invalid data (as :meth:`bayes_mdn.MDN.fit`), or a flat prior on some site
        (the density would not be normalisable).
    """
    if not isinstance(model, MDN):
        raise TypeError(f"`model` must be a bayes_mdn.MDN; got {type(model).__name__}.")
    key = check_key(key)
    data = prepare_data(model, X, y)
    require_proper_prior(model, data, "log_density")  # as fit does for every sampler
    args, kwargs = (data.X, data.y), {"y_scale": data.y_scale}
    start = initial_params(model, data, key)
    initial_position = unconstrain_fn(model.numpyro_model, args, kwargs, start)
    started = time.perf_counter()

    def logdensity_fn(position: Mapping[str, jax.Array]) -> jax.Array:
        return -potential_energy(model.numpyro_model, args, kwargs, dict(position))

    @jax.jit
    def constrain(position):
        return constrain_fn(model.numpyro_model, args, kwargs, position)

    def to_posterior(positions: Mapping[str, Any], *, method: str = "external",
                     kind: str = "chains", info: Mapping[str, Any] | None = None,
                     sample_stats: Mapping[str, Any] | None = None) -> Posterior:
        """Unconstrained positions (C, S, ...) or (S, ...) per site -> a Posterior."""
        kind = check_choice(kind, "kind", KINDS)
        missing = sorted(set(initial_position) - set(positions))
        if missing:
            raise ValueError(f"`positions` lacks the sites {missing}; pass every site of "
                             "initial_position with leading (C, S) axes.")
        values = {name: jnp.asarray(positions[name]) for name in initial_position}
        leading = {value.ndim - jnp.ndim(initial_position[name])
                   for name, value in values.items()}
        if leading == {1}:
            values = {name: value[None] for name, value in values.items()}
        elif leading != {2}:
            raise ValueError("Every site of `positions` must have the site's shape with "
                             "leading (C, S) axes (or (S,) for one chain).")
        num_chains, num_draws = next(iter(values.values())).shape[:2]
        flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in values.items()}
        draws = jax.vmap(constrain)(flat)
        draws = {name: value.reshape(num_chains, num_draws, *value.shape[1:])
                 for name, value in draws.items()}
        for name, value in draws.items():
            if not np.isfinite(np.asarray(value)).all():
                raise ValueError(f"`positions` give non-finite draws of {name!r}.")
        record = {"num_rows": data.num_rows, "fit_seconds": time.perf_counter() - started,
                  **dict(info or {})}
        posterior = Posterior(model=model, method=method, draws=draws,
                              standardizer=data.standardizer,
                              history=final_scores(model, data, draws), info=record,
                              sample_stats={name: np.asarray(value) for name, value in
                                            (sample_stats or {}).items()},
                              kind=kind)
        return with_reference_points(posterior, data)

    return LogDensity(logdensity_fn, dict(initial_position), to_posterior)
