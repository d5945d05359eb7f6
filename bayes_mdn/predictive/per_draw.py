"""Per-draw queries of a posterior predictive: each posterior draw's own mixture, not their
average.

What LOO, WAIC and posterior-predictive checks read (:mod:`bayes_mdn._arviz`): the pointwise
log-likelihood matrix and one replicate of y per draw. They run in the one evaluator of
draws x inputs (:mod:`._evaluator`), chunked by the memory model of every predictive query
(inputs x draws x max(K x D, widest layer) within ``max_elements``). Functions rather than
methods: a predictive whose cdf is transformed (a recalibrated one) has no per-draw
mixtures, and these refuse it instead of answering for the untransformed draws.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bayes_mdn._validation import check_key
from bayes_mdn.predictive._kernels import _draw_log_prob_kernel, _draw_sample_kernel
from bayes_mdn.predictive.mixture import PredictiveMixture

__all__ = ["log_prob_per_draw", "sample_per_draw"]


def _check_mixture(pred: Any, query: str) -> PredictiveMixture:
    if not isinstance(pred, PredictiveMixture):
        raise TypeError(f"{query} needs a PredictiveMixture as `pred`; got "
                        f"{type(pred).__name__}. Call posterior.predictive(X) first.")
    if type(pred).cdf is not PredictiveMixture.cdf:
        raise ValueError(
            f"{query} gives each posterior draw's own mixture, which this "
            f"{type(pred).__name__} does not have (its predictive is transformed). Query the "
            "untransformed predictive (e.g. `.base` of a recalibrated one) instead."
        )
    return pred


def log_prob_per_draw(pred: PredictiveMixture, y: Any) -> np.ndarray:
    """Log density of each posterior draw's own mixture at `y`, in original units: the
    pointwise log-likelihood matrix.

    ``logsumexp(result, axis=0) - log S`` is ``pred.log_prob(y)``.

    Parameters
    ----------
    pred : PredictiveMixture
        At M inputs, with S draws.
    y : array-like, shape (M,) or (M, D)

    Returns
    -------
    numpy.ndarray, shape (S, M), float64
        ``log p(y_m | x_m, theta_s)``.

    Raises
    ------
    TypeError
        If `pred` is not a PredictiveMixture.
    ValueError
        For a predictive with a transformed cdf (e.g. recalibrated), or bad `y`.
    """
    pred = _check_mixture(pred, "log_prob_per_draw()")
    values = pred._run(_draw_log_prob_kernel, (pred._targets(y),), batch_axis=1)  # (S, M)
    return values.astype(np.float64) - pred._log_scale()


def sample_per_draw(pred: PredictiveMixture, *, key: jax.Array) -> np.ndarray:
    """One y from each posterior draw's own mixture at every input: the
    posterior-predictive replicates of posterior-predictive checks.

    The values depend only on `key`, the input's position and the draw's index, not on how
    the query is chunked.

    Parameters
    ----------
    pred : PredictiveMixture
        At M inputs, with S draws.
    key : PRNG key

    Returns
    -------
    numpy.ndarray, shape (S, M, D), float64
        In original units.

    Raises
    ------
    TypeError
        If `pred` is not a PredictiveMixture, or `key` is not a PRNG key.
    ValueError
        For a predictive with a transformed cdf (e.g. recalibrated).
    """
    key = check_key(key)
    pred = _check_mixture(pred, "sample_per_draw()")
    return pred._to_original(pred._run(_draw_sample_kernel, key=key, batch_axis=1))
