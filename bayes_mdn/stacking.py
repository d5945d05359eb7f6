"""Stacked fits as one predictive: a weighted mixture of several posteriors' predictives.

:func:`stack` takes fits of the same data (e.g. K = 1, 5, 20, or two priors) and weights
them by their out-of-sample predictive accuracy (Yao, Vehtari, Simpson & Gelman 2018,
"Using stacking to average Bayesian predictive distributions", Bayesian Analysis 13(3)):

* ``method="stacking"`` maximises the mean log of the weighted predictive density
  ``(1/N) sum_n log sum_m w_m p_m(y_n | x_n)`` over the simplex of weights;
* ``method="pseudo-bma"`` sets ``w_m`` proportional to ``exp(elpd_m)``, the summed
  log predictive densities.

The densities ``p_m(y_n | x_n)`` come from one of three sources (see :func:`stack`):
leave-one-out estimates on the training data (PSIS-LOO, as :func:`bayes_mdn.compare`
computes them; free, but needs fits with many posterior draws), out-of-fold densities of
K-fold refits on the training data (``cv=5``: any fit, costs ``cv`` refits of each member),
or plain predictive densities on held-out validation rows (any fit; costs the rows). On the
training data the default, ``cv="auto"``, chooses per fit: PSIS-LOO where it is reliable
(at least 50 draws and every Pareto k <= 0.7), 5-fold refits for the other fits (the same
folds for all), recorded in ``info["estimate"]``.

The result, :class:`StackedPosterior`, is immutable; its :meth:`~StackedPosterior.predictive`
is a :class:`StackedPredictive`, the mixture ``sum_m w_m p_m(y | x)`` of the members'
:class:`~bayes_mdn.PredictiveMixture` objects, answering every query a PredictiveMixture does
(log_prob, cdf, quantiles, mean, variance, sample, modes, hdr, ...) through the members'
public methods, and accepted by :mod:`bayes_mdn.metrics`. Save it with
:meth:`StackedPosterior.save`; :func:`bayes_mdn.load` reads it back.

File format (``bayes_mdn.stacked``, version 1): a ZIP archive holding ``metadata.json``
(names, weights, info, member file names) and one member per fit, ``members/<i>.bmdn``, each a
complete :meth:`bayes_mdn.Posterior.save` file (arrays + JSON, never pickle). Written to a
temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from bayes_mdn._archive import atomic_file
from bayes_mdn._progress import progress_bar
from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_choice,
    check_key,
    check_levels,
    check_positive_int,
    check_same_rows,
)
from bayes_mdn.calibration.loo import MIN_LOO_DRAWS
from bayes_mdn.diagnostics import MAX_PARETO_K, ConvergenceWarning
from bayes_mdn.io import LOADERS, load
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture
from bayes_mdn.predictive.grids import hdr_on_grid, modes_on_grid

__all__ = ["AUTO_FOLDS", "FORMAT_NAME", "StackedPosterior", "StackedPredictive", "load_stacked",
           "stack", "stacking_weights"]

#: The ``format`` recorded in a saved stacked fit (how :func:`bayes_mdn.load` tells it apart).
FORMAT_NAME = "bayes_mdn.stacked"
#: Version of that format written by this release.
FORMAT_VERSION = 1
METHODS = ("stacking", "pseudo-bma")
#: Folds of the refits that ``cv="auto"`` makes for fits whose PSIS-LOO is unreliable.
AUTO_FOLDS = 5
#: The string values of ``stack(cv=...)``: per-fit choice, or PSIS-LOO for every fit.
CV_CHOICES = ("auto", "loo")
#: Tolerance on ``sum(weights) == 1``.
WEIGHT_TOLERANCE = 1e-6
_METADATA = "metadata.json"


def logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    """``log(sum(exp(values), axis))`` in float64, -inf where every term is -inf."""
    values = np.asarray(values, np.float64)
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(values - peak), axis=axis, keepdims=True)) + peak
    return np.squeeze(total, axis=axis)


# --------------------------------------------------------------------------- weights
def stacking_weights(log_density: Any, method: str = "stacking", *, max_iterations: int = 10_000,
                     tolerance: float = 1e-10, concentration: float = 1.0) -> np.ndarray:
    """Weights of M predictives from their pointwise log predictive densities.

    Parameters
    ----------
    log_density : array-like, shape (N, M)
        ``log p_m(y_n | x_n)`` (LOO or held-out) of point n under predictive m.
    method : {"stacking", "pseudo-bma"}
        ``"stacking"``: the weights on the simplex maximising
        ``(1/N) sum_n log sum_m w_m exp(log_density[n, m])``, a concave problem, solved by
        the EM fixed point ``w_m <- mean_n r_nm`` with responsibilities
        ``r_nm = w_m p_nm / sum_k w_k p_nk`` (each step raises the objective; the iteration
        stops when it rises by less than `tolerance`; weights below 1e-8 are then set to 0
        and the rest renormalised). ``"pseudo-bma"``: ``w_m`` proportional
        to ``exp(sum_n log_density[n, m])``.
    max_iterations : int
        Cap on EM steps.
    tolerance : float
        Stop when one EM step raises the mean log density by less than this.
    concentration : float
        ``"stacking"`` only: a symmetric Dirichlet(`concentration`) prior on the weights,
        >= 1. The default 1 is flat (plain stacking); ``a > 1`` maximises
        ``sum_n log sum_m w_m p_nm + (a - 1) sum_m log w_m`` instead (EM step
        ``w_m <- (sum_n r_nm + a - 1) / (N + M (a - 1))``), i.e. ``a - 1`` pseudo-points per
        fit pulling the weights toward uniform: a guard against weights that overfit few rows.

    Returns
    -------
    numpy.ndarray, shape (M,)
        Non-negative float64 weights summing to one.
    """
    method = check_choice(method, "method", METHODS)
    if (isinstance(concentration, bool) or not isinstance(concentration, (int, float))
            or not np.isfinite(concentration) or concentration < 1):
        raise ValueError(f"`concentration` must be a finite number >= 1 (1 = no prior on the "
                         f"weights), e.g. 2.0; got {concentration!r}.")
    values = np.asarray(log_density, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"`log_density` must have shape (N, M) with N, M >= 1; got "
                         f"{values.shape}.")
    if np.isnan(values).any() or np.isposinf(values).any():
        raise ValueError("`log_density` must not hold NaN or +inf.")
    if np.isneginf(values).all(axis=1).any():
        raise ValueError("Some points have zero density under every fit (log density -inf); "
                         "stacking weights are undefined there.")
    num_fits = values.shape[1]
    if method == "pseudo-bma":
        elpd = np.where(np.isneginf(values), -1e300, values).sum(axis=0)
        return np.exp(elpd - logsumexp(elpd, axis=0))
    num_points = values.shape[0]
    extra = float(concentration) - 1.0  # Dirichlet pseudo-points per fit
    log_weights = np.full(num_fits, -np.log(num_fits))
    previous = -np.inf
    for _ in range(max_iterations):
        joint = values + log_weights  # (N, M)
        per_point = logsumexp(joint, axis=1)  # (N,)
        objective = float(per_point.mean()) + extra * float(np.sum(log_weights)) / num_points
        if objective - previous < tolerance:
            break
        previous = objective
        log_counts = logsumexp(joint - per_point[:, None], axis=0)  # log sum_n r_nm
        if extra > 0:
            log_counts = np.logaddexp(log_counts, np.log(extra))
        log_weights = log_counts - np.log(num_points + num_fits * extra)
    weights = np.exp(log_weights - logsumexp(log_weights, axis=0))
    # EM only approaches a zero weight; below 1e-8 the fit's share of any density is
    # under float32 rounding, so snap it to 0 (the predictive then skips that fit).
    weights = np.where(weights < 1e-8, 0.0, weights)
    return weights / weights.sum()


def _loo_log_density(posterior: Posterior, X: np.ndarray, y: np.ndarray, name: str,
                     max_elements: int) -> tuple[np.ndarray, float]:
    """PSIS-LOO pointwise log predictive density (N,) and the largest Pareto k."""
    from bayes_mdn._arviz import _arviz, require_draws, to_arviz  # arviz: imported on use

    require_draws(posterior, f"stack with LOO weights (fit {name!r}; or pass X_val, y_val)")
    az = _arviz()
    data = to_arviz(posterior, X, y, max_elements=max_elements)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Pareto k.*")
        warnings.filterwarnings("ignore", message=".*Estimated shape parameter.*")
        result = az.loo(data, pointwise=True)
    return (np.asarray(result.loo_i, np.float64).reshape(-1),
            float(np.max(np.asarray(result.pareto_k))))


def _check_folds(cv: Any) -> int:
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"`cv` must be an integer >= 2 (the number of folds), \"auto\" or "
                         f"\"loo\", e.g. 5; got {cv!r}.")
    return int(cv)


def _check_fit_options(fit_options: Any, names: Sequence[str]) -> None:
    if fit_options is not None and not isinstance(fit_options, Mapping):
        raise TypeError("`fit_options` must be a dict of fit name -> dict of MDN.fit options, "
                        f"e.g. {{'K=5': {{'num_steps': 2000}}}}; got {type(fit_options).__name__}.")
    unknown = sorted(set(fit_options or {}) - set(names))
    if unknown:
        raise ValueError(f"`fit_options` names fits that are not stacked: {unknown}; the fits "
                         f"are {list(names)}.")
    for name, given in (fit_options or {}).items():
        if not isinstance(given, Mapping):
            raise TypeError(f"`fit_options[{name!r}]` must be a dict of MDN.fit options; got "
                            f"{type(given).__name__}.")


def _refit_options(member: Posterior, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that refit `member`'s recipe: `given`, else those its ``info`` records.

    A fit started from another fit records only that fit's method as ``init`` (e.g.
    ``"ensemble"``); its refits start from the method's default instead (NUTS:
    ``init="auto"``, one MAP fit per chain).
    """
    from bayes_mdn.calibration.recalibrated import _default_fit_options

    if given is not None:
        return dict(given)
    return dict(_default_fit_options(member))


def _check_refits(cv: int, key: Any, num_rows: int, names: Sequence[str],
                  members: Sequence[Posterior], fit_options: Any, why: str,
                  advice: str = "") -> dict[str, dict[str, Any]]:
    """Validate what refitting `members` on `cv` folds needs (before any fit); the refit
    options by member name. `why` names the call in the messages; `advice` ends the
    missing-key one."""
    from bayes_mdn.inference import METHODS as FIT_METHODS

    if key is None:
        raise TypeError(f"{why} needs `key` to refit {', '.join(repr(n) for n in names)} on "
                        f"{cv} folds, e.g. key=jax.random.key(0).{advice}")
    check_key(key)
    if num_rows < 2 * cv:
        raise ValueError(f"{why} refits on {cv} folds and needs at least {2 * cv} rows (two "
                         f"per fold); got {num_rows}. Use fewer folds.")
    options = {}
    for name, member in zip(names, members, strict=True):
        if member.method not in FIT_METHODS:
            raise ValueError(f"{why} refits each fit with its own method, but {name!r} has "
                             f"method {member.method!r}, which MDN.fit does not know "
                             f"({sorted(FIT_METHODS)}). Use held-out rows X_val, y_val.")
        options[name] = _refit_options(member, (fit_options or {}).get(name))
    return options


_AUTO_ADVICE = (" Or weigh by held-out rows (X_val, y_val), or take the unreliable PSIS-LOO "
                "anyway with cv=\"loo\".")


def _cv_log_density(names: Sequence[str], members: Sequence[Posterior], X: np.ndarray,
                    y: np.ndarray, cv: int, key: jax.Array, options: Mapping[str, dict],
                    max_elements: int, indices: Sequence[int] | None = None) -> np.ndarray:
    """Out-of-fold log predictive densities (N, len(indices)): row n scored by each member's
    recipe refitted without n's fold. The same folds for every member.

    `indices` (default all) picks the members to refit; the folds and each member's refit
    keys are those of refitting all of `members` (``jax.random.split`` of `key` into
    ``cv * M + 1``: the first orders the rows), so a subset gets exactly the columns of the
    full run. `options` holds an entry for each picked member's name.
    """
    indices = list(range(len(members)) if indices is None else indices)
    split_key, *fit_keys = jax.random.split(key, cv * len(members) + 1)
    order = np.asarray(jax.random.permutation(split_key, X.shape[0]))
    folds = np.array_split(order, cv)
    log_density = np.empty((X.shape[0], len(indices)))
    with progress_bar(cv * len(indices), desc="stack: cross-validating") as bar:
        for fold, held in enumerate(folds):
            train = np.setdiff1d(order, held)
            for column, index in enumerate(indices):
                name, member = names[index], members[index]
                refit = member.model.fit(X[train], y[train],
                                         key=fit_keys[fold * len(members) + index],
                                         method=member.method, **options[name])
                pred = refit.predictive(X[held], max_elements=max_elements)
                log_density[held, column] = np.asarray(pred.log_prob(y[held]), np.float64)
                bar.update(1)
    return log_density


def _loo_reliability(member: Posterior, max_pareto_k: float | None) -> str | None:
    """Why `member`'s PSIS-LOO is unreliable (None when it is reliable)."""
    draws = member.num_chains * member.num_draws
    if draws < MIN_LOO_DRAWS:
        return f"{draws} draws < {MIN_LOO_DRAWS}"
    if max_pareto_k is not None and not max_pareto_k <= MAX_PARETO_K:
        return f"max Pareto k {max_pareto_k:.2f} > {MAX_PARETO_K}"
    return None


def _as_members(posteriors: Any) -> tuple[tuple[str, ...], tuple[Posterior, ...]]:
    if isinstance(posteriors, Posterior):
        raise TypeError("`posteriors` must be a dict of name -> Posterior or a list of "
                        "Posteriors, e.g. {'K=1': post1, 'K=5': post5}; got one Posterior.")
    if isinstance(posteriors, Mapping):
        items = list(posteriors.items())
    elif isinstance(posteriors, Sequence) and not isinstance(posteriors, (str, bytes)):
        items = [(f"fit_{index}", value) for index, value in enumerate(posteriors)]
    else:
        raise TypeError("`posteriors` must be a dict of name -> Posterior or a list of "
                        f"Posteriors; got {type(posteriors).__name__}.")
    if not items:
        raise ValueError("`posteriors` is empty; pass at least one fit, e.g. "
                         "{'K=1': post1, 'K=5': post5}.")
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"The names of `posteriors` must be strings; got {name!r}.")
        if not isinstance(value, Posterior):
            raise TypeError(f"`posteriors[{name!r}]` must be a bayes_mdn.Posterior; got "
                            f"{type(value).__name__}.")
    return tuple(name for name, _ in items), tuple(value for _, value in items)


def _check_compatible(names: Sequence[str], members: Sequence[Posterior]) -> None:
    """Members must predict the same thing from the same inputs."""
    first_name, first = names[0], members[0]
    for name, member in zip(names[1:], members[1:], strict=True):
        if member.num_features != first.num_features:
            raise ValueError(
                f"Every fit must use the same inputs: {first_name!r} was fitted on "
                f"{first.num_features} features but {name!r} on {member.num_features}. Stack "
                "fits of the same data.")
        if member.num_outputs != first.num_outputs:
            raise ValueError(
                f"Every fit must predict the same outputs: {first_name!r} has D = "
                f"{first.num_outputs} but {name!r} has D = {member.num_outputs}.")
        if bool(member.model.family.discrete) != bool(first.model.family.discrete):
            raise ValueError(
                f"{first_name!r} and {name!r} mix a discrete and a continuous family; their "
                "densities (probability mass vs density) cannot be mixed.")
        names_a, names_b = first.info.get("feature_names"), member.info.get("feature_names")
        if names_a is not None and names_b is not None and list(names_a) != list(names_b):
            raise ValueError(f"{first_name!r} was fitted on columns {list(names_a)} but "
                             f"{name!r} on columns {list(names_b)}.")


def _check_weights(weights: Any, num_members: int) -> np.ndarray:
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`weights` must be a sequence of {num_members} numbers; got "
                        f"{weights!r}.") from None
    if values.shape != (num_members,):
        raise ValueError(f"`weights` must have one entry per fit ({num_members}); got shape "
                         f"{values.shape}.")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"`weights` must be finite and non-negative; got {values.tolist()}.")
    total = float(values.sum())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"`weights` must sum to one; they sum to {total:.6g}. Divide them by "
                         "their sum if they are relative weights.")
    return values / total


def stack(posteriors: Mapping[str, Posterior] | Sequence[Posterior], X_val: Any = None,
          y_val: Any = None, method: str = "stacking", *, X: Any = None, y: Any = None,
          cv: int | str | None = None, key: jax.Array | None = None,
          fit_options: Mapping[str, Mapping[str, Any]] | None = None,
          concentration: float = 1.0, weights: Any = None,
          max_elements: int = DEFAULT_MAX_ELEMENTS) -> StackedPosterior:
    """Combine several fits of the same data into one predictive, weighted by accuracy.

    Parameters
    ----------
    posteriors : dict of str to Posterior, or list of Posterior
        The fits, by name (a list gets names ``fit_0``, ``fit_1``, ...). They must take the
        same P features and predict the same D outputs.
    X_val, y_val : array-like, shapes (N_val, P) and (N_val,) or (N_val, D), optional
        Held-out rows (not used to fit any member): the weights come from the members'
        predictive densities there. Any fit works, MAP included.
    method : {"stacking", "pseudo-bma"}
        How densities become weights; see :func:`stacking_weights`.
    X, y : array-like, shapes (N, P) and (N,) or (N, D), optional
        The training data of the fits, for weights from out-of-sample densities on it
        (see `cv`), when no held-out rows are given.
    cv : {"auto", "loo"} or int, optional
        With `X`, `y`: which out-of-sample densities of the training rows weigh the fits.

        * ``"auto"`` (the default with `X`, `y`): per fit, PSIS-LOO where it is reliable
          (at least 50 posterior draws, ``calibration.loo.MIN_LOO_DRAWS``, and every
          Pareto k <= 0.7, ``diagnostics.MAX_PARETO_K``), otherwise 5-fold
          (:data:`AUTO_FOLDS`) refits as for an integer `cv`, the same folds and refit keys.
          Needs `key` only when some fit is refitted. ``info["estimate"]`` says which fit
          got which.
        * ``"loo"``: PSIS-LOO for every fit (as :func:`bayes_mdn.compare`), however
          unreliable (a warning says so).
        * an integer >= 2: ``cv``-fold cross-validation for every fit. Each member's recipe
          (its model, ``method`` and the fit options recorded in its ``info``, e.g.
          ``num_steps``, ``num_members``, ``num_samples``) is refitted ``cv`` times, each
          time without one fold (the same folds for every member); the out-of-fold log
          densities give the weights, which are applied to the full-data fits. Needs `key`.
    key : jax.Array, optional
        PRNG key of the folds and the refits (required when something is refitted).
    fit_options : dict of str to dict, optional
        For refits (integer `cv`, or ``"auto"``): MDN.fit options per fit name, replacing
        those recovered from ``info`` (e.g. fewer NUTS draws, or an ``init`` that ``info``
        cannot record; a NUTS fit that recorded ``init="ensemble"`` is refitted with
        ``init="auto"``, one MAP fit per chain).
    concentration : float
        A symmetric Dirichlet prior on the stacking weights (``method="stacking"``), >= 1;
        1 (default) is plain stacking; see :func:`stacking_weights`.
    weights : array-like, shape (M,), optional
        Fixed weights instead (non-negative, summing to one); then no data is needed.
    max_elements : int
        Memory bound of the density evaluations (see :meth:`Posterior.predictive`).

    Returns
    -------
    StackedPosterior
        ``weights`` (M,), and ``info`` recording the method, the ``source`` of the densities
        (``"held-out"``, ``"loo"``, ``"cv"``, ``"auto"`` or ``"given"``), ``num_points``,
        each fit's mean out-of-sample log density (``elpd_per_point``), and with ``"auto"``
        per fit the ``estimate`` used (``"loo"`` or ``"cv"``) and why
        (``estimate_reason``); saved and loaded with the stacked fit.

    Raises
    ------
    ValueError, TypeError
        Before anything is compiled: no fits, fits on different feature counts or outputs,
        weights not summing to one or negative, missing data, mismatched rows, a bad `cv`;
        before any refit: a fit to refit without `key` or whose method ``MDN.fit`` does not
        know, too few rows for the folds. With ``cv="auto"`` a fit whose PSIS-LOO turns out
        unreliable (Pareto k) is checked the same way once its k is known.

    Warns
    -----
    ConvergenceWarning
        ``cv="loo"`` when some fit's Pareto k exceeds 0.7: its LOO densities, hence the
        weights, are unreliable.

    Notes
    -----
    Which densities to weight by:

    * **PSIS-LOO**: no refit and no extra rows, but trustworthy only when a member has many
      posterior draws (NUTS: hundreds) and all Pareto k <= 0.7 (``info["max_pareto_k"]``).
      A deep ensemble of a few members gives a handful of draws, k = inf, and LOO densities
      that are too optimistic: with ``cv="loo"`` such fits take the weight from better ones.
    * **cross-validation** (``cv=5``): any fit (MAP and ensembles included), no extra rows;
      costs ``cv`` refits of every member. The weights describe fits on ``(cv - 1) / cv``
      of the rows, applied to full-data fits (slightly pessimistic for the more flexible
      members).
    * **per fit** (``cv="auto"``, the default on training data): LOO where it is reliable,
      refits where it is not, so it costs refits only of the fits that need them. Mixing
      the two puts LOO members (scored by fits on N - 1 rows) at a small advantage over
      refitted ones (fits on 4/5 of the rows); the alternative, unreliable LOO, is far
      worse (it can put all the weight on the wrong fit).
    * **held-out rows** (``X_val, y_val``): any fit, no refit, but rows kept out of every
      member's training; with few validation rows the weights can overfit them (a
      ``concentration`` of 2 shrinks them toward uniform).

    Examples
    --------
    >>> stacked = bm.stack({"K=1": post1, "K=5": post5}, X_val, y_val)  # doctest: +SKIP
    >>> stacked = bm.stack(fits, X=X, y=y, key=jax.random.key(0))  # doctest: +SKIP
    >>> stacked.info["estimate"]  # doctest: +SKIP
    {'K=1': 'loo', 'K=5 ensemble': 'cv'}
    >>> stacked.predictive(X_test).log_prob(y_test)  # doctest: +SKIP
    """
    names, members = _as_members(posteriors)
    _check_compatible(names, members)
    method = check_choice(method, "method", METHODS)
    max_elements = check_positive_int(max_elements, "max_elements")
    first = members[0]
    if (isinstance(concentration, bool) or not isinstance(concentration, (int, float))
            or not np.isfinite(concentration) or concentration < 1):
        raise ValueError(f"`concentration` must be a finite number >= 1 (1 = no prior on the "
                         f"weights), e.g. 2.0; got {concentration!r}.")
    if isinstance(cv, str):
        if cv not in CV_CHOICES:
            raise ValueError(f"`cv` must be an integer >= 2 (the number of folds), \"auto\" or "
                             f"\"loo\"; got {cv!r}.")
    elif cv is not None:
        cv = _check_folds(cv)
    if key is not None:
        check_key(key)
    if weights is not None:
        if X_val is not None or y_val is not None or X is not None or y is not None:
            raise ValueError("Pass either fixed `weights` or data to compute them from "
                             "(X_val, y_val or X, y), not both.")
        if cv is not None:
            raise ValueError("Pass either fixed `weights` or `cv` (weights from "
                             "cross-validation), not both.")
        return StackedPosterior(members=members, names=names,
                                weights=_check_weights(weights, len(members)),
                                info={"method": "fixed", "source": "given"})
    if (X_val is None) != (y_val is None):
        raise ValueError("Pass both `X_val` and `y_val` (held-out rows) or neither.")
    if (X is None) != (y is None):
        raise ValueError("Pass both `X` and `y` (the training data, for LOO weights) or "
                         "neither.")
    if X_val is None and X is None:
        raise ValueError("stack needs data to weight the fits: held-out rows X_val, y_val, "
                         "or the training data X=, y= (PSIS-LOO or refits on folds), or "
                         "fixed weights=.")
    held_out = X_val is not None
    if cv is not None and (held_out or X is None):
        raise ValueError("`cv` cross-validates on the training data: pass X=, y= (the rows "
                         "the fits were trained on), not X_val, y_val.")
    if not held_out and cv is None:
        cv = "auto"
    data_X, data_y = (X_val, y_val) if held_out else (X, y)
    label = ("X_val", "y_val") if held_out else ("X", "y")
    X_host = as_features(data_X, label[0], num_features=first.num_features)
    y_host = as_targets(data_y, label[1], num_outputs=first.num_outputs)
    check_same_rows(X_host, y_host, *label)
    if fit_options is not None and (held_out or cv == "loo"):
        raise ValueError("`fit_options` are the options of refits on folds (cv=5 or "
                         "cv=\"auto\"); leave them out with held-out rows or cv=\"loo\".")
    _check_fit_options(fit_options, names)
    num_rows = int(X_host.shape[0])
    if isinstance(cv, int):
        options = _check_refits(cv, key, num_rows, names, members, fit_options,
                                f"stack(cv={cv})")
    elif cv == "auto":
        # Fits with too few draws for PSIS are refitted whatever their k: check them now.
        few = [index for index, member in enumerate(members)
               if _loo_reliability(member, None) is not None]
        if few and len(members) > 1:
            listed = ", ".join(f"{names[i]!r}: {_loo_reliability(members[i], None)}"
                               for i in few)
            _check_refits(AUTO_FOLDS, key, num_rows, [names[i] for i in few],
                          [members[i] for i in few], fit_options,
                          f"stack(X=, y=, cv=\"auto\") (too few posterior draws for "
                          f"PSIS-LOO: {listed})", _AUTO_ADVICE)
    source = "held-out" if held_out else ("cv" if isinstance(cv, int) else cv)
    info: dict[str, Any] = {"method": method, "source": source, "num_points": num_rows}
    if isinstance(cv, int):
        info["cv"] = cv
    if concentration != 1:
        info["concentration"] = float(concentration)
    if len(members) == 1:
        info["elpd_per_point"] = {}
        return StackedPosterior(members=members, names=names, weights=np.ones(1), info=info)
    pareto: dict[str, float] = {}
    if held_out:
        columns = [np.asarray(member.predictive(X_host, max_elements=max_elements)
                              .log_prob(y_host), np.float64) for member in members]
    elif isinstance(cv, int):
        columns = list(_cv_log_density(names, members, X_host, y_host, cv, key, options,
                                       max_elements).T)
    elif cv == "loo":
        columns = []
        for name, member in zip(names, members, strict=True):
            values, pareto[name] = _loo_log_density(member, X_host, y_host, name, max_elements)
            columns.append(values)
    else:
        columns = _auto_log_density(names, members, X_host, y_host, key, fit_options,
                                    max_elements, pareto, info)
    log_density = np.stack(columns, axis=1)
    info["elpd_per_point"] = {name: float(np.mean(column))
                              for name, column in zip(names, columns, strict=True)}
    if pareto:
        info["max_pareto_k"] = pareto
    if cv == "loo":
        bad = {name: k for name, k in pareto.items() if not k <= MAX_PARETO_K}
        if bad:
            listed = ", ".join(f"{name!r}: {k:.2f}" for name, k in bad.items())
            warnings.warn(
                f"PSIS-LOO is unreliable for some fits (Pareto k > {MAX_PARETO_K}: {listed}), "
                "so the stacking weights are too. Fits with few posterior draws (e.g. small "
                "ensembles) cause this: let stack choose per fit (cv=\"auto\", the default "
                "with X=, y=, refits those fits on 5 folds; needs key=), use cv=5 for all, "
                "held-out rows (X_val, y_val), or refit with more draws (method='nuts').",
                ConvergenceWarning, stacklevel=2)
    found = stacking_weights(log_density, method, concentration=concentration)
    info["objective"] = float(np.mean(logsumexp(log_density + np.log(found + 1e-300), axis=1)))
    return StackedPosterior(members=members, names=names, weights=found, info=info)


def _auto_log_density(names: Sequence[str], members: Sequence[Posterior], X: np.ndarray,
                      y: np.ndarray, key: Any, fit_options: Any, max_elements: int,
                      pareto: dict[str, float], info: dict[str, Any]) -> list[np.ndarray]:
    """``cv="auto"``: each member's (N,) out-of-sample log densities, PSIS-LOO where it is
    reliable, :data:`AUTO_FOLDS`-fold refits where not. Fills `pareto` (max k of each member
    LOO was computed for) and ``info["estimate"]``, ``info["estimate_reason"]``,
    ``info["cv"]`` (when something was refitted), ``info["num_draws"]``."""
    columns: list[np.ndarray | None] = []
    reasons: dict[str, str] = {}
    refit: list[int] = []
    for index, (name, member) in enumerate(zip(names, members, strict=True)):
        reason = _loo_reliability(member, None)
        if reason is None:
            values, pareto[name] = _loo_log_density(member, X, y, name, max_elements)
            reason = _loo_reliability(member, pareto[name])
        if reason is None:
            columns.append(values)
            draws = member.num_chains * member.num_draws
            reasons[name] = (f"{draws} draws, max Pareto k {pareto[name]:.2f} <= "
                             f"{MAX_PARETO_K}")
        else:
            columns.append(None)
            refit.append(index)
            reasons[name] = reason
    if refit:
        unreliable = ", ".join(f"{names[i]!r} ({reasons[names[i]]})" for i in refit)
        options = _check_refits(AUTO_FOLDS, key, X.shape[0], [names[i] for i in refit],
                                [members[i] for i in refit], fit_options,
                                f"stack(X=, y=, cv=\"auto\") (PSIS-LOO is unreliable for "
                                f"{unreliable})", _AUTO_ADVICE)
        out_of_fold = _cv_log_density(names, members, X, y, AUTO_FOLDS, key, options,
                                      max_elements, indices=refit)
        for column, index in enumerate(refit):
            columns[index] = out_of_fold[:, column]
        info["cv"] = AUTO_FOLDS
    info["estimate"] = {name: ("cv" if index in refit else "loo")
                        for index, name in enumerate(names)}
    info["estimate_reason"] = reasons
    info["num_draws"] = {name: int(member.num_chains * member.num_draws)
                         for name, member in zip(names, members, strict=True)}
    return [column for column in columns if column is not None]


# --------------------------------------------------------------------------- posterior
@dataclass(frozen=True, eq=False)
class StackedPosterior:
    """Several fits of the same data with mixture weights: a posterior-like object.

    Created by :func:`stack` (or :func:`bayes_mdn.load` of a saved one).

    Attributes
    ----------
    members : tuple of Posterior
        The M fits.
    names : tuple of str
        Their names.
    weights : numpy.ndarray, shape (M,)
        Non-negative, summing to one (read-only).
    info : mapping of str to Any
        JSON-serialisable facts: ``method``, ``source`` (``"auto"``, ``"loo"``, ``"cv"``,
        ``"held-out"`` or ``"given"``), ``num_points``, ``elpd_per_point`` (per fit),
        ``max_pareto_k`` (per fit whose LOO was computed), ``cv`` (folds, when something was
        refitted), ``concentration`` (when not 1); with ``"auto"`` also ``estimate`` (per
        fit: ``"loo"`` or ``"cv"``), ``estimate_reason`` and ``num_draws`` (per fit).
    """

    members: tuple[Posterior, ...]
    names: tuple[str, ...]
    weights: np.ndarray
    info: Mapping[str, Any] = field(default_factory=dict)

    #: What the facade methods report; a stacked fit has no single inference method.
    method = "stacked"

    def __post_init__(self) -> None:
        if len(self.names) != len(self.members):
            raise ValueError(f"`names` ({len(self.names)}) and `members` ({len(self.members)}) "
                             "must have the same length.")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Names of stacked fits must be unique; got {list(self.names)}.")
        names, members = _as_members(dict(zip(self.names, self.members, strict=True)))
        _check_compatible(names, members)
        weights = _check_weights(self.weights, len(members))
        weights.setflags(write=False)
        object.__setattr__(self, "members", tuple(members))
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def num_features(self) -> int:
        """P, the number of input columns of every member."""
        return self.members[0].num_features

    @property
    def num_outputs(self) -> int:
        """D, the number of outputs."""
        return self.members[0].num_outputs

    @property
    def weight_of(self) -> dict[str, float]:
        """Weights by name."""
        return {name: float(w) for name, w in zip(self.names, self.weights, strict=True)}

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {weight:.3f}" for name, weight in self.weight_of.items())
        return f"StackedPosterior({parts}; {self.info.get('method', '?')})"

    def predictive(self, X: Any, *, num_draws: int | None = None,
                   max_elements: int = DEFAULT_MAX_ELEMENTS) -> StackedPredictive:
        """The stacked predictive ``sum_m w_m p_m(y | x)`` at new inputs.

        Members with weight zero are left out (they do not change any query).

        Parameters
        ----------
        X : array-like, shape (M, P)
        num_draws : int, optional
            Draws per member (at most each member's total); default all.
        max_elements : int
            Memory budget of each member's evaluation (see :meth:`Posterior.predictive`).

        Returns
        -------
        StackedPredictive
            Batch shape (M,), event shape (D,).
        """
        X_checked = as_features(X, "X", num_features=self.num_features)
        active = [index for index, weight in enumerate(self.weights) if weight > 0]
        predictives = []
        for index in active:
            member = self.members[index]
            draws = None
            if num_draws is not None:
                draws = min(check_positive_int(num_draws, "num_draws"),
                            member.num_chains * member.num_draws)
            # The original X (not X_checked) keeps pandas column names for the members' check.
            predictives.append(member.predictive(X if hasattr(X, "columns") else X_checked,
                                                 num_draws=draws, max_elements=max_elements))
        return StackedPredictive(predictives=tuple(predictives),
                                 weights=self.weights[active] / self.weights[active].sum())

    def save(self, path: str | os.PathLike) -> None:
        """Write the stacked fit to `path` (see the module docstring for the format).

        Load it with :func:`bayes_mdn.load`.
        """
        save_stacked(self, path)


# --------------------------------------------------------------------------- predictive
def _check_same_inputs(predictives: Sequence[PredictiveMixture]) -> None:
    first = predictives[0]
    for other in predictives[1:]:
        if other.num_inputs != first.num_inputs or other.num_outputs != first.num_outputs:
            raise ValueError(
                "Every stacked predictive must be at the same inputs with the same outputs; "
                f"got batch/event shapes {first.batch_shape}/{first.event_shape} and "
                f"{other.batch_shape}/{other.event_shape}.")


@dataclass(frozen=True, eq=False)
class StackedPredictive:
    """The weighted mixture ``sum_m w_m p_m(y | x)`` of M predictives at the same inputs.

    Batch shape (N,), event shape (D,); results in the original units of y, float64. Every
    query is answered from the members' public :class:`~bayes_mdn.PredictiveMixture`
    methods: densities are ``logsumexp_m(log w_m + log p_m)``, cdfs and moments weighted
    sums (the variance by the law of total variance), quantiles bisect the weighted cdf
    between the smallest and largest member quantile (which bracket it), samples pick a
    member per (sample, input) with probabilities w, modes and HDRs work on a grid of the
    stacked density. Accepted by :mod:`bayes_mdn.metrics`.

    Attributes
    ----------
    predictives : tuple of PredictiveMixture
        The members' predictives at the same N inputs.
    weights : numpy.ndarray, shape (M,)
        Positive, summing to one.
    """

    predictives: tuple[PredictiveMixture, ...]
    weights: np.ndarray

    #: Marks a predictive that :mod:`bayes_mdn.metrics` accepts beside PredictiveMixture.
    __bayes_mdn_predictive__ = True

    def __post_init__(self) -> None:
        predictives = tuple(self.predictives)
        if not predictives:
            raise ValueError("A stacked predictive needs at least one member predictive.")
        for pred in predictives:
            if not isinstance(pred, PredictiveMixture):
                raise TypeError(f"Stacked predictives must be PredictiveMixture objects; got "
                                f"{type(pred).__name__}.")
        _check_same_inputs(predictives)
        weights = np.asarray(self.weights, np.float64)
        if weights.shape != (len(predictives),) or np.any(weights <= 0):
            raise ValueError(f"`weights` must be {len(predictives)} positive numbers; got "
                             f"{weights.tolist()}.")
        weights = _check_weights(weights, len(predictives))
        weights.setflags(write=False)
        object.__setattr__(self, "predictives", predictives)
        object.__setattr__(self, "weights", weights)

    # ----------------------------------------------------------------------- shapes
    @property
    def num_inputs(self) -> int:
        """N, the number of inputs."""
        return self.predictives[0].num_inputs

    @property
    def num_outputs(self) -> int:
        """D, the dimension of y."""
        return self.predictives[0].num_outputs

    @property
    def num_draws(self) -> int:
        """Total posterior draws over the members."""
        return sum(pred.num_draws for pred in self.predictives)

    @property
    def batch_shape(self) -> tuple[int]:
        return (self.num_inputs,)

    @property
    def event_shape(self) -> tuple[int]:
        return (self.num_outputs,)

    @property
    def discrete(self) -> bool:
        """Whether the members' family is discrete (densities are probability masses)."""
        return bool(self.predictives[0].model.family.discrete)

    def __len__(self) -> int:
        return self.num_inputs

    def __repr__(self) -> str:
        return (f"StackedPredictive(inputs={self.num_inputs}, outputs={self.num_outputs}, "
                f"members={len(self.predictives)}, weights={np.round(self.weights, 3).tolist()})")

    def __getitem__(self, index: Any) -> StackedPredictive:
        """The predictive at a subset of the inputs (as :meth:`PredictiveMixture.__getitem__`)."""
        return StackedPredictive(tuple(pred[index] for pred in self.predictives), self.weights)

    @property
    def _log_weights(self) -> np.ndarray:
        return np.log(self.weights)

    def _weighted(self, values: Sequence[np.ndarray]) -> np.ndarray:
        """sum_m w_m values[m] over a leading member axis."""
        return np.tensordot(self.weights, np.stack(values), axes=1)

    # ----------------------------------------------------------------------- densities
    def log_prob(self, y: Any) -> np.ndarray:
        """Log stacked predictive density at `y` (M,) float64, for y of shape (M,) or (M, D)."""
        terms = np.stack([pred.log_prob(y) for pred in self.predictives])  # (members, N)
        return logsumexp(terms + self._log_weights[:, None], axis=0)

    def log_prob_grid(self, grid: Any) -> np.ndarray:
        """Log density on a grid per input (D = 1): shape (N, G), float64."""
        terms = np.stack([pred.log_prob_grid(grid) for pred in self.predictives])
        return logsumexp(terms + self._log_weights[:, None, None], axis=0)

    def cdf(self, y: Any) -> np.ndarray:
        """Marginal cdf of each output at `y`: (N, D), float64."""
        return self._weighted([np.asarray(pred.cdf(y), np.float64) for pred in self.predictives])

    # ----------------------------------------------------------------------- moments
    def mean(self) -> np.ndarray:
        """Predictive mean (N, D), float64: ``sum_m w_m mean_m``."""
        return self._weighted([pred.mean() for pred in self.predictives])

    def variance(self) -> np.ndarray:
        """Predictive marginal variance (N, D): ``sum_m w_m (var_m + (mean_m - mean)**2)``."""
        aleatoric, epistemic = self.variance_decomposition()
        return aleatoric + epistemic

    def variance_decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        """Law of total variance over (member, draw) pairs with probabilities w_m / S_m.

        Returns
        -------
        aleatoric : numpy.ndarray, shape (N, D)
            ``sum_m w_m aleatoric_m``.
        epistemic : numpy.ndarray, shape (N, D)
            ``sum_m w_m (epistemic_m + (mean_m - mean)**2)``: disagreement between draws,
            within and between members.
        """
        means = [pred.mean() for pred in self.predictives]
        mean = self._weighted(means)
        parts = [pred.variance_decomposition() for pred in self.predictives]
        aleatoric = self._weighted([part[0] for part in parts])
        epistemic = self._weighted([part[1] + np.square(member_mean - mean)
                                    for part, member_mean in zip(parts, means, strict=True)])
        return aleatoric, epistemic

    # ----------------------------------------------------------------------- quantiles
    def quantiles(self, q: Any, *, num_iterations: int | None = None) -> np.ndarray:
        """Marginal quantiles by bisection on the weighted cdf.

        The stacked quantile at level q lies between the smallest and the largest member
        quantile at q (the weighted cdf is <= q at the first and >= q at the second), so the
        bisection starts from that bracket.

        Parameters
        ----------
        q : float or array-like, shape (Q,)
            Probabilities strictly between 0 and 1.
        num_iterations : int, optional
            Bisection steps (default 40: the bracket shrinks by 2**-40).

        Returns
        -------
        numpy.ndarray, shape (Q, N, D), float64
        """
        levels = check_levels(q)
        num_iterations = 40 if num_iterations is None else check_positive_int(
            num_iterations, "num_iterations")
        member_quantiles = np.stack([pred.quantiles(levels) for pred in self.predictives])
        if len(self.predictives) == 1:
            return member_quantiles[0]
        lower, upper = member_quantiles.min(axis=0), member_quantiles.max(axis=0)  # (Q, N, D)
        num_levels, num_inputs, num_outputs = lower.shape
        repeated = self[np.tile(np.arange(num_inputs), num_levels)]  # rows (q, n)
        target = np.repeat(levels, num_inputs)[:, None]  # (Q*N, 1)
        lower, upper = lower.reshape(-1, num_outputs), upper.reshape(-1, num_outputs)
        for _ in range(num_iterations):
            middle = 0.5 * (lower + upper)
            below = repeated.cdf(middle) < target
            lower, upper = np.where(below, middle, lower), np.where(below, upper, middle)
        return (0.5 * (lower + upper)).reshape(num_levels, num_inputs, num_outputs)

    # ----------------------------------------------------------------------- sampling
    def sample(self, key: jax.Array, num_samples: int = 1) -> np.ndarray:
        """Draw from the stacked predictive: a member per (sample, input) with probabilities
        w, then that member's draw.

        Parameters
        ----------
        key : PRNG key
        num_samples : int

        Returns
        -------
        numpy.ndarray, shape (num_samples, N, D), float64
        """
        key = check_key(key)
        num_samples = check_positive_int(num_samples, "num_samples")
        choose_key, *member_keys = jax.random.split(key, len(self.predictives) + 1)
        choice = np.asarray(jax.random.choice(choose_key, len(self.predictives),
                                              (num_samples, self.num_inputs),
                                              p=jax.numpy.asarray(self.weights)))
        result = np.zeros((num_samples, self.num_inputs, self.num_outputs))
        for index, (pred, member_key) in enumerate(zip(self.predictives, member_keys,
                                                       strict=True)):
            if np.any(choice == index):
                draws = pred.sample(member_key, num_samples)
                result = np.where((choice == index)[..., None], draws, result)
        return result

    # ----------------------------------------------------------------------- grids (D = 1)
    def _require_one_output(self, query: str, advice: str) -> None:
        if self.num_outputs != 1:
            raise ValueError(f"{query} is defined for one output (D = 1); this model has D = "
                             f"{self.num_outputs}. {advice}")

    def _grid(self, grid_size: int, tail: float) -> np.ndarray:
        """(N, G) grid between the stacked `tail` and 1 - `tail` quantiles, or the integers
        of that range for a discrete family."""
        bounds = self.quantiles([tail, 1 - tail])[:, :, 0]
        if self.discrete:
            lower = np.floor(bounds[0])
            size = int(np.max(np.ceil(bounds[1]) - lower)) + 1
            return lower[:, None] + np.arange(size, dtype=np.float64)
        return bounds[0][:, None] + (bounds[1] - bounds[0])[:, None] * np.linspace(0, 1,
                                                                                   grid_size)

    def modes(self, *, grid_size: int = 512, min_relative_density: float = 1e-3
              ) -> list[np.ndarray]:
        """Local maxima of the stacked density (D = 1), highest first, found on a grid over
        the 0.0005-0.9995 quantiles and refined by a parabola through the log-density (for
        a discrete family: every integer of that range).

        Returns
        -------
        list of numpy.ndarray
            One array (num_modes_i, 1) per input.
        """
        self._require_one_output("modes()", "Query each output's marginal via quantiles().")
        grid_size = check_positive_int(grid_size, "grid_size", minimum=3)
        grid = self._grid(grid_size, 5e-4)
        log_density = self.log_prob_grid(grid)
        return modes_on_grid(grid, log_density, discrete=self.discrete,
                             min_relative_density=min_relative_density)

    def hdr(self, level: float, *, grid_size: int = 2048) -> list[np.ndarray]:
        """Highest-density region (D = 1) of probability `level`, as for
        :meth:`PredictiveMixture.hdr`, on a grid over the 1e-6 to 1 - 1e-6 stacked quantiles.

        Returns
        -------
        list of numpy.ndarray
            One (num_intervals_i, 2) array of ``[lower, upper]`` rows per input.
        """
        if (isinstance(level, bool) or np.ndim(level) != 0
                or np.asarray(level).dtype.kind not in "iuf"):
            raise TypeError(f"`level` must be a number strictly between 0 and 1, e.g. 0.9; "
                            f"got {level!r}.")
        level = float(level)
        if not 0.0 < level < 1.0:
            raise ValueError(f"`level` must lie strictly between 0 and 1; got {level}.")
        self._require_one_output("hdr()", "Use quantiles() for per-output central intervals.")
        grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        grid = self._grid(grid_size, 1e-6)
        return hdr_on_grid(grid, np.exp(self.log_prob_grid(grid)), level,
                           discrete=self.discrete)

    def entropy_decomposition(self, *, key: jax.Array | None = None, method: str = "auto",
                              grid_size: int = 1024, num_samples: int = 1000
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Total predictive entropy, expected entropy over (member, draw) and their
        difference, the mutual information (see :meth:`PredictiveMixture.entropy_decomposition`).

        The expected entropy is ``sum_m w_m expected_m`` (each member's own estimate). The
        total is a trapezoid rule for ``-p log p`` on a grid (``"quadrature"``, D = 1,
        continuous families) or ``mean(-log p(y))`` over samples of the stacked predictive
        (``"monte_carlo"``, needs `key`).

        Returns
        -------
        total, expected, mutual_information : numpy.ndarray, each (N,)
        """
        method = check_choice(method, "method", ("auto", "quadrature", "monte_carlo"))
        if method == "auto":
            method = ("quadrature" if self.num_outputs == 1 and not self.discrete
                      else "monte_carlo")
        if method == "monte_carlo" and key is None:
            raise TypeError("entropy_decomposition(method='monte_carlo') needs `key`, e.g. "
                            "key=jax.random.key(0).")
        if key is not None:
            key = check_key(key)
        keys = (list(jax.random.split(key, len(self.predictives) + 1)) if key is not None
                else [None] * (len(self.predictives) + 1))
        expected = self._weighted([
            pred.entropy_decomposition(key=member_key, method=method, grid_size=grid_size,
                                       num_samples=num_samples)[1]
            for pred, member_key in zip(self.predictives, keys[1:], strict=True)])
        if method == "quadrature":
            self._require_one_output("method='quadrature'",
                                     "Use method='monte_carlo' with key=jax.random.key(0).")
            if self.discrete:
                raise ValueError("method='quadrature' of a stacked predictive needs a "
                                 "continuous family; use method='monte_carlo' with a key.")
            grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
            grid = self._grid(grid_size, 1e-7)
            log_density = self.log_prob_grid(grid)
            integrand = -np.exp(log_density) * log_density
            total = np.trapezoid(integrand, grid, axis=1)
        else:
            num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
            samples = self.sample(keys[0], num_samples)  # (S, N, D)
            repeated = self[np.tile(np.arange(self.num_inputs), num_samples)]
            log_density = repeated.log_prob(samples.reshape(-1, self.num_outputs))
            total = -log_density.reshape(num_samples, self.num_inputs).mean(axis=0)
        return total, expected, total - expected

    def mixture_parameters(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The flattened mixture over every member's S_m x K_m components, in original units.

        Needs members of one family (the same parameter names). Select inputs first: memory
        is N x sum_m S_m K_m per parameter.

        Returns
        -------
        log_weights : numpy.ndarray, shape (N, sum_m S_m K_m)
            Including ``log w_m``; ``logsumexp`` over the last axis is 0.
        params : dict of str to numpy.ndarray
            Each (N, sum_m S_m K_m, d).
        """
        parts = [pred.mixture_parameters() for pred in self.predictives]
        keys = {frozenset(params) for _, params in parts}
        if len(keys) != 1:
            raise ValueError("mixture_parameters() needs members of one family; these have "
                             f"parameters {sorted(sorted(k) for k in keys)}.")
        log_weights = np.concatenate([log_w + log_m for (log_w, _), log_m in
                                      zip(parts, self._log_weights, strict=True)], axis=1)
        params = {name: np.concatenate([p[name] for _, p in parts], axis=1)
                  for name in parts[0][1]}
        return log_weights, params

    # ----------------------------------------------------------------------- CRPS
    def crps(self, y: Any, *, pointwise: bool = False, method: str = "auto",
             key: jax.Array | None = None, num_samples: int = 1000,
             grid_size: int | None = None) -> np.ndarray:
        """CRPS of each output's marginal (what :func:`bayes_mdn.metrics.crps` calls).

        ``"quadrature"`` (continuous families; the ``"auto"`` choice there):
        ``integral (F(z) - 1{y <= z})**2 dz`` by the trapezoid rule on the stacked cdf, on a
        grid of `grid_size` (default 512) points over the 1e-6 to 1 - 1e-6 quantiles with y
        inserted as a grid point (the integrand jumps there); ``"closed_form"`` is taken to
        mean the same. ``"sample"`` (any family; needs `key`; ``"auto"`` for discrete ones):
        ``mean |x_i - y| - 1/2 mean_{i != j} |x_i - x_j|`` over `num_samples` draws.

        Returns
        -------
        numpy.ndarray
            (D,) mean over points, or (N, D) with ``pointwise=True``; float64.
        """
        method = check_choice(method, "method", ("auto", "closed_form", "quadrature", "sample"))
        if key is not None:
            key = check_key(key)
        targets = as_targets(y, "y", num_outputs=self.num_outputs)
        if targets.shape[0] != self.num_inputs:
            raise ValueError(f"`y` must have one row per input ({self.num_inputs}); got "
                             f"{targets.shape[0]} rows.")
        if method == "auto":
            method = "sample" if self.discrete else "quadrature"
        if method == "sample":
            if key is None:
                raise TypeError("crps() estimates by sampling here (method='sample') and "
                                "needs `key`, e.g. key=jax.random.key(0).")
            num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
            samples = np.sort(self.sample(key, num_samples), axis=0)  # (S, N, D)
            first = np.abs(samples - targets[None]).mean(axis=0)
            rank = np.arange(1, num_samples + 1)[:, None, None]
            # sum_{i<j} (x_j - x_i) over sorted samples = sum_i (2 i - S - 1) x_(i)
            pair_sum = np.sum((2 * rank - num_samples - 1) * samples, axis=0)
            scores = first - pair_sum / (num_samples * (num_samples - 1))
        else:
            if self.discrete:
                raise ValueError(f"method={method!r} needs a continuous family; use "
                                 "method='sample' with key=jax.random.key(0).")
            size = 512 if grid_size is None else check_positive_int(grid_size, "grid_size",
                                                                     minimum=16)
            bounds = self.quantiles([1e-6, 1 - 1e-6])  # (2, N, D)
            lower = np.minimum(bounds[0], targets)
            upper = np.maximum(bounds[1], targets)
            fractions = np.linspace(0.0, 1.0, size)
            grid = lower[None] + (upper - lower)[None] * fractions[:, None, None]  # (G, N, D)
            grid = np.sort(np.concatenate([grid, targets[None]]), axis=0)  # y on the grid
            num_points = grid.shape[0]
            repeated = self[np.tile(np.arange(self.num_inputs), num_points)]
            cdf = repeated.cdf(grid.reshape(-1, self.num_outputs)).reshape(grid.shape)
            left, right = grid[:-1], grid[1:]
            # y is a grid point, so no cell straddles it: right of y (1 - F)**2, left F**2.
            above = left >= targets[None]
            ends = [np.where(above, np.square(1 - side), np.square(side))
                    for side in (cdf[:-1], cdf[1:])]
            scores = np.sum(0.5 * (ends[0] + ends[1]) * (right - left), axis=0)
        scores = np.maximum(scores, 0.0)
        return scores if pointwise else scores.mean(axis=0)


# --------------------------------------------------------------------------- save / load
def save_stacked(stacked: StackedPosterior, path: str | os.PathLike) -> None:
    """Write `stacked` to `path` atomically: ``metadata.json`` + one ``.bmdn`` per member."""
    if not isinstance(stacked, StackedPosterior):
        raise TypeError(f"Expected a StackedPosterior; got {type(stacked).__name__}.")
    destination = Path(path)
    if destination.is_dir():
        raise ValueError(f"{str(destination)!r} is a directory; pass a file path such as "
                         "'stacked.bmdn'.")
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "names": list(stacked.names), "weights": stacked.weights.tolist(),
                "info": dict(stacked.info),
                "members": [f"members/{index}.bmdn" for index in range(len(stacked.members))]}
    with atomic_file(destination) as stream:
        with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(_METADATA, json.dumps(metadata, indent=1, default=float))
            with tempfile.TemporaryDirectory() as scratch:
                for member, name in zip(stacked.members, metadata["members"], strict=True):
                    member_path = Path(scratch) / "member.bmdn"
                    member.save(member_path)
                    archive.write(member_path, name)


def load_stacked(path: str | os.PathLike) -> StackedPosterior:
    """Read a file written by :meth:`StackedPosterior.save` (also what :func:`bayes_mdn.load`
    calls for such a file).

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a stacked bayes_mdn file, or is truncated or corrupted.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"No bayes_mdn file at {str(source)!r}.")
    try:
        with zipfile.ZipFile(source, "r") as archive:
            metadata = json.loads(archive.read(_METADATA).decode("utf-8"))
            if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
                raise ValueError(f"{str(source)!r} is not a stacked bayes_mdn file.")
            if metadata.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{str(source)!r} has format version {metadata.get('format_version')!r}; "
                    f"this bayes_mdn reads version {FORMAT_VERSION}.")
            members = []
            with tempfile.TemporaryDirectory() as scratch:
                for name in metadata["members"]:
                    member_path = Path(scratch) / "member.bmdn"
                    member_path.write_bytes(archive.read(name))
                    members.append(load(member_path))
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{str(source)!r} is not a readable stacked bayes_mdn file "
                         f"(truncated or corrupted?): {error}") from None
    return StackedPosterior(members=tuple(members), names=tuple(metadata["names"]),
                            weights=np.asarray(metadata["weights"], np.float64),
                            info=metadata.get("info", {}))


# bayes_mdn.load reads stacked files too: io.py dispatches on the archive's format name.
LOADERS[FORMAT_NAME] = load_stacked
