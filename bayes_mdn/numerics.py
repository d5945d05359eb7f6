"""Arrays in, arrays out: the numerics shared by diagnostics (reports) and inference (fits).

* :func:`reference_indices`: the reference rows at which function-space R-hat and ESS are
  evaluated (chosen at fit time, used by :mod:`bayes_mdn.diagnostics`);
* :func:`pareto_k`: PSIS k-hat of importance log-weights (computed at the end of SVI and
  Laplace fits, reported by diagnostics);
* :func:`rhat_ess`: rank-normalised split R-hat and bulk/tail ESS of (C, S, ...) arrays.

Nothing here knows about models, Posteriors or files: this module sits below both
:mod:`bayes_mdn.diagnostics` and :mod:`bayes_mdn.inference` (see the layer table in
:mod:`bayes_mdn._layers`). arviz is imported inside :func:`rhat_ess` (about a second), so
``import bayes_mdn`` stays fast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from bayes_mdn._validation import check_positive_int

__all__ = ["CONSTANT_LOG_WEIGHTS", "MAX_REFERENCE_CANDIDATES", "REFERENCE_POINTS",
           "pareto_k", "reference_indices", "rhat_ess"]

#: Size of the reference set of inputs.
REFERENCE_POINTS = 32
#: Rows considered by :func:`reference_indices` (evenly strided above this many).
MAX_REFERENCE_CANDIDATES = 65_536
#: Log importance weights spread less than this are equal up to rounding (an exact q).
CONSTANT_LOG_WEIGHTS = 1e-3


def _arviz():
    try:
        import arviz  # about a second to import: only on first use
    except ImportError:  # pragma: no cover - arviz is a dependency
        raise ImportError("This needs arviz: pip install arviz") from None
    return arviz


# --------------------------------------------------------------------------- reference set
def reference_indices(X: Any, num_points: int = REFERENCE_POINTS) -> np.ndarray:
    """Rows of `X` evenly spread along its first principal direction.

    Deterministic: the same X gives the same rows. Above ``MAX_REFERENCE_CANDIDATES`` rows
    the choice is among every ``ceil(N / MAX_REFERENCE_CANDIDATES)``-th row (an even spread
    of 32 points needs no more), so the cost and the temporaries stay bounded at any N.

    Parameters
    ----------
    X : array-like, shape (N, P)
    num_points : int
        M, the number of rows to pick (all N rows if N <= M).

    Returns
    -------
    numpy.ndarray of int, shape (min(M, N),)
        Row indices, ordered along the principal direction.
    """
    num_points = check_positive_int(num_points, "num_points")
    X = np.asarray(X)  # a view of a CPU JAX array; float64 only for the candidates below
    num_rows = X.shape[0]
    stride = -(-num_rows // MAX_REFERENCE_CANDIDATES)  # ceil
    candidates = np.arange(0, num_rows, stride)
    values = np.asarray(X[candidates], np.float64)
    sample = values[:: max(1, values.shape[0] // 4096)]
    centre = sample.mean(axis=0)
    spread = sample.std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    if X.shape[1] == 1:
        direction = np.ones(1)
    else:
        z = (sample - centre) / spread
        direction = np.linalg.eigh(z.T @ z)[1][:, -1]
        direction = direction * np.sign(direction[np.argmax(np.abs(direction))])
    order = candidates[np.argsort(((values - centre) / spread) @ direction, kind="stable")]
    if order.size <= num_points:
        return order
    return order[np.linspace(0, order.size - 1, num_points).round().astype(int)]


# --------------------------------------------------------------------------- Pareto k
def _gpd_fit(exceedances: np.ndarray) -> float:
    """Shape k of a generalised Pareto fit to sorted positive exceedances: the empirical
    Bayes estimate of Zhang and Stephens (2009) with the weak prior of Vehtari et al.
    (2024), as in PSIS."""
    n = exceedances.size
    prior_bs, prior_k = 3.0, 10.0
    num_grid = 30 + int(math.sqrt(n))
    b = 1 - np.sqrt(num_grid / (np.arange(1, num_grid + 1) - 0.5))
    b = b / (prior_bs * exceedances[int(n / 4 + 0.5) - 1]) + 1 / exceedances[-1]
    k = np.mean(np.log1p(-b[:, None] * exceedances), axis=1)
    profile = n * (np.log(-(b / k)) - k - 1)
    weights = 1 / np.sum(np.exp(profile - profile[:, None]), axis=1)
    keep = weights >= 10 * np.finfo(float).eps
    weights, b = weights[keep], b[keep]
    b_post = np.sum(b * weights / np.sum(weights))
    k_post = np.mean(np.log1p(-b_post * exceedances))
    return float((n * k_post + prior_k * 0.5) / (n + prior_k))


def pareto_k(log_weights: Any) -> float | None:
    """Pareto-smoothed importance sampling shape estimate k-hat of importance log-weights.

    For draws theta_s from an approximation q of a posterior p, pass
    ``log p(theta_s, y) - log q(theta_s)``: k-hat < 0.5 means q is good for importance
    sampling, k-hat > 0.7 that expectations under q are unreliable (Yao et al., 2018).

    Parameters
    ----------
    log_weights : array-like, shape (S,)
        Unnormalised log importance weights; non-finite entries are treated as weight 0.

    Returns
    -------
    float or None
        k-hat; 0.0 when all weights agree to within 0.1 % (q matches p up to rounding, and
        the tied weights leave no tail to fit); None when the tail has fewer than 5 draws
        (S below about 25) or no weight is finite.
    """
    values = np.asarray(log_weights, np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    if np.ptp(values) < CONSTANT_LOG_WEIGHTS:
        return 0.0
    values = values - values.max()
    tail_length = math.ceil(min(0.2 * values.size, 3 * math.sqrt(values.size)))
    ordered = np.sort(values)
    cutoff = max(ordered[-tail_length - 1] if tail_length < ordered.size else -np.inf,
                 np.log(np.finfo(float).tiny))
    tail = ordered[ordered > cutoff]
    if tail.size <= 4:
        return None
    exceedances = np.exp(tail) - np.exp(cutoff)
    if not np.all(exceedances[1:] > 0):
        exceedances = np.maximum(exceedances, np.finfo(float).tiny)
    k = _gpd_fit(exceedances)
    return k if np.isfinite(k) else None


# --------------------------------------------------------------------------- R-hat, ESS
def rhat_ess(quantities: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Rank-normalised split R-hat and bulk/tail ESS of each (C, S, ...) array.

    Returns
    -------
    dict
        ``{"rhat": {name: (...)}, "ess_bulk": ..., "ess_tail": ...}``; entries are NaN where
        arviz cannot compute them (constant values, fewer than 2 chains for R-hat); the
        caller turns those into ``None`` or 1.
    """
    az = _arviz()
    import xarray as xr  # an arviz dependency, loaded with it on first use

    dataset = xr.Dataset({name: (("chain", "draw", *(f"{name}_dim_{i}"
                                                      for i in range(value.ndim - 2))),
                                 np.asarray(value, np.float64))
                          for name, value in quantities.items()})
    results = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        import logging

        logger = logging.getLogger("arviz")
        level = logger.level
        logger.setLevel(logging.ERROR)  # "Shape validation failed" for one chain
        try:
            num_chains = next(iter(quantities.values())).shape[0]
            if num_chains >= 2:
                results["rhat"] = {name: np.asarray(value) for name, value in
                                   az.rhat(dataset).data_vars.items()}
            for method in ("bulk", "tail"):
                results[f"ess_{method}"] = {
                    name: np.asarray(value)
                    for name, value in az.ess(dataset, method=method).data_vars.items()}
        finally:
            logger.setLevel(level)
    return results
