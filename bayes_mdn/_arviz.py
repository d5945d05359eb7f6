"""ArviZ interoperability: :class:`arviz.InferenceData` from a Posterior, R-hat/ESS of
function-space quantities, and LOO-based model comparison.

This is the only module that imports arviz, and it does so inside functions: importing arviz
takes about a second, and ``import bayes_mdn`` must stay fast.

Pointwise log-likelihoods (one value per observation row, in the original units of y) and
posterior-predictive draws (one y per posterior draw and row) are the per-draw queries of
:class:`~bayes_mdn.PredictiveMixture` (:func:`bayes_mdn.predictive.per_draw.log_prob_per_draw`,
:func:`~bayes_mdn.predictive.per_draw.sample_per_draw`): the one evaluator chunks the rows and
draws so that no more than ``max_elements`` (row, draw, component, output) terms, or a wider
layer's values, are held at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_choice,
    check_key,
    check_positive_int,
    check_same_rows,
)
from bayes_mdn.numerics import rhat_ess  # re-exported: defined here before
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture
from bayes_mdn.predictive.per_draw import log_prob_per_draw, sample_per_draw

if TYPE_CHECKING:
    import arviz
    import pandas


__all__ = ["compare", "log_likelihood", "posterior_predictive", "rhat_ess", "to_arviz"]

#: Posterior.sample_stats name -> the name ArviZ expects (and a sign for ``lp``).
SAMPLE_STATS = {
    "diverging": ("diverging", 1),
    "tree_depth": ("tree_depth", 1),
    "step_size": ("step_size", 1),
    "energy": ("energy", 1),
    "accept_prob": ("acceptance_rate", 1),
    "potential_energy": ("lp", -1),
    "num_steps": ("n_steps", 1),
}
IC_CHOICES = ("loo", "waic")
#: Lower-cased option -> the name arviz.compare takes.
WEIGHT_METHODS = {"stacking": "stacking", "bb-pseudo-bma": "BB-pseudo-BMA",
                  "pseudo-bma": "pseudo-BMA"}
SCALES = ("log", "negative_log", "deviance")


def _arviz():
    try:
        import arviz
    except ImportError:  # pragma: no cover - arviz is a dependency
        raise ImportError("This needs arviz: pip install arviz") from None
    return arviz


# --------------------------------------------------------------------------- validation
def require_draws(posterior: Posterior, what: str) -> None:
    """Refuse a single-draw fit (MAP) for `what`, which needs posterior draws.

    Raises
    ------
    ValueError
        If the posterior has fewer than 2 draws in all.
    """
    total = posterior.num_chains * posterior.num_draws
    if total < 2:
        raise ValueError(
            f"{what} needs posterior draws, but this {posterior.method!r} fit has a single "
            f"draw (C={posterior.num_chains}, S={posterior.num_draws}): a point estimate has "
            "no posterior to cross-validate or check. Fit with method='nuts' (e.g. "
            "init=an ensemble), method='svi', method='laplace' or method='ensemble' "
            "(num_members=8 or more)."
        )


def _check_data(posterior: Posterior, X: Any, y: Any) -> tuple[np.ndarray | None,
                                                              np.ndarray | None]:
    if y is not None and X is None:
        raise ValueError("`y` was given without `X`; pass the inputs X (N, P) of the same "
                         "rows as well.")
    X_host = None if X is None else as_features(X, "X", num_features=posterior.num_features)
    y_host = None
    if y is not None:
        y_host = as_targets(y, "y", num_outputs=posterior.num_outputs)
        check_same_rows(X_host, y_host)
        posterior.model.family.check_support(y_host, "y")
    return X_host, y_host


# --------------------------------------------------------------------------- per-draw values
def _predictive(posterior: Posterior, X_host: np.ndarray, max_elements: int
                ) -> PredictiveMixture:
    """The posterior's mixture at `X_host` over all C * S draws, in their order (never
    recalibrated: each draw's own density is wanted). Its queries run in the one evaluator
    of :mod:`bayes_mdn.predictive`, whose memory model counts every layer's width."""
    standardizer = posterior.standardizer
    return PredictiveMixture(model=posterior.model, draws=posterior.prediction_draws(),
                             standardizer=standardizer,
                             X_std=np.asarray(standardizer.transform_X(X_host)),
                             max_elements=max_elements)


def log_likelihood(posterior: Posterior, X: Any, y: Any, *,
                   max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """Pointwise log-likelihood of every posterior draw, in the original units of y.

    Parameters
    ----------
    posterior : Posterior
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    max_elements : int
        Bound on the (row, draw, component, output) terms evaluated at once (see
        :meth:`Posterior.predictive`); a layer wider than K x D counts with its width.

    Returns
    -------
    numpy.ndarray, shape (C, S, N)
        ``log p(y_n | x_n, theta_cs)``, float64.
    """
    X_host, y_host = _check_data(posterior, X, y)
    if X_host is None:
        raise ValueError("log_likelihood needs the data: pass X (N, P) and y (N, D).")
    max_elements = check_positive_int(max_elements, "max_elements")
    values = log_prob_per_draw(_predictive(posterior, X_host, max_elements), y_host)  # (CS, N)
    return values.reshape(posterior.num_chains, posterior.num_draws, X_host.shape[0])


def posterior_predictive(posterior: Posterior, X: Any, *, key: jax.Array,
                         max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """One draw of y per posterior draw and input row: the posterior-predictive replicates.

    Parameters
    ----------
    posterior : Posterior
    X : array-like, shape (N, P)
    key : PRNG key
        The same key gives the same replicates.
    max_elements : int
        As for :func:`log_likelihood`.

    Returns
    -------
    numpy.ndarray, shape (C, S, N, D)
        In the original units of y.
    """
    key = check_key(key)
    X_host, _ = _check_data(posterior, X, None)
    max_elements = check_positive_int(max_elements, "max_elements")
    values = sample_per_draw(_predictive(posterior, X_host, max_elements), key=key)  # (CS, N, D)
    return values.reshape(posterior.num_chains, posterior.num_draws, X_host.shape[0], -1)


# --------------------------------------------------------------------------- InferenceData
def to_arviz(posterior: Posterior, X: Any = None, y: Any = None, *,
             key: jax.Array | None = None,
             max_elements: int = DEFAULT_MAX_ELEMENTS) -> arviz.InferenceData:
    """The posterior as :class:`arviz.InferenceData`; see :meth:`Posterior.to_arviz`."""
    az = _arviz()
    require_draws(posterior, "to_arviz (LOO, WAIC, R-hat, posterior-predictive checks)")
    X_host, y_host = _check_data(posterior, X, y)
    if key is not None:
        key = check_key(key)
    max_elements = check_positive_int(max_elements, "max_elements")
    num_outputs = posterior.num_outputs
    y_dims = ["obs"] if num_outputs == 1 else ["obs", "output"]

    def as_y(values: np.ndarray) -> np.ndarray:  # (..., N, D) -> (..., N) when D = 1
        return values[..., 0] if num_outputs == 1 else values

    groups: dict[str, Any] = {
        "posterior": {name: np.asarray(value) for name, value in posterior.draws.items()}}
    if posterior.sample_stats:
        stats = {}
        for name, value in posterior.sample_stats.items():
            new_name, sign = SAMPLE_STATS.get(name, (name, 1))
            stats[new_name] = sign * np.asarray(value) if sign != 1 else np.asarray(value)
        groups["sample_stats"] = stats
    dims = {"y": y_dims, "X": ["obs", "feature"]}
    if X_host is not None:
        groups["constant_data"] = {"X": X_host}
        if key is not None:
            groups["posterior_predictive"] = {
                "y": as_y(posterior_predictive(posterior, X_host, key=key,
                                               max_elements=max_elements))}
    if y_host is not None:
        groups["observed_data"] = {"y": as_y(y_host)}
        groups["log_likelihood"] = {
            "y": log_likelihood(posterior, X_host, y_host, max_elements=max_elements)}
    attrs = {"inference_library": "bayes_mdn", "method": posterior.method,
             "kind": posterior.kind,
             "log_likelihood_units": "original units of y, one value per row"}
    with warnings.catch_warnings():
        # InferenceData creation warns about more chains than draws (ensembles, SVI): a
        # (1, S) layout is the contract here, not a mistake.
        warnings.filterwarnings("ignore", message=".*More chains.*than draws")
        return az.from_dict(**groups, dims=dims, attrs=attrs)


# --------------------------------------------------------------------------- comparison
def compare(posteriors: Mapping[str, Posterior], X: Any, y: Any, *, ic: str = "loo",
            method: str = "stacking", scale: str = "log",
            max_elements: int = DEFAULT_MAX_ELEMENTS) -> pandas.DataFrame:
    """Rank fits of the same data by estimated out-of-sample predictive accuracy.

    Each fit's pointwise log-likelihood on (X, y) goes through PSIS-LOO (or WAIC) and
    :func:`arviz.compare`.

    Parameters
    ----------
    posteriors : mapping of str to Posterior
        At least two fits, by name, each with posterior draws (not MAP).
    X : array-like, shape (N, P)
        The inputs the fits were trained on.
    y : array-like, shape (N,) or (N, D)
        The targets they were trained on.
    ic : str
        ``"loo"`` (PSIS leave-one-out) or ``"waic"``.
    method : str
        How :func:`arviz.compare` weights the fits: ``"stacking"``, ``"BB-pseudo-BMA"`` or
        ``"pseudo-BMA"``.
    scale : str
        ``"log"`` (higher is better), ``"negative_log"`` or ``"deviance"``.
    max_elements : int
        Memory bound of the log-likelihood evaluation (see :meth:`Posterior.predictive`).

    Returns
    -------
    pandas.DataFrame
        One row per fit, best first: ``rank``, ``elpd_loo`` (or ``elpd_waic``), ``p_loo``,
        ``elpd_diff``, ``weight``, ``se``, ``dse``, ``warning``, ``scale``. ``warning`` is
        True when the estimate is unreliable (Pareto k > 0.7 for some rows, common with few
        draws such as small ensembles).

    Raises
    ------
    TypeError
        If `posteriors` is not a mapping of names to Posterior objects.
    ValueError
        For fewer than two fits or a single-draw (MAP) fit.
    """
    if not isinstance(posteriors, Mapping):
        raise TypeError("`posteriors` must be a dict of name -> Posterior, e.g. "
                        f"{{'K=1': post1, 'K=5': post5}}; got {type(posteriors).__name__}.")
    if len(posteriors) < 2:
        raise ValueError(f"compare needs at least two fits; got {len(posteriors)}. Pass a "
                         "dict such as {'K=1': post1, 'K=5': post5}.")
    for name, posterior in posteriors.items():
        if not isinstance(name, str):
            raise TypeError(f"The names of `posteriors` must be strings; got {name!r}.")
        if not isinstance(posterior, Posterior):
            raise TypeError(f"`posteriors[{name!r}]` must be a bayes_mdn.Posterior; got "
                            f"{type(posterior).__name__}.")
        require_draws(posterior, f"compare (fit {name!r})")
    ic = check_choice(ic, "ic", IC_CHOICES)
    method = WEIGHT_METHODS[check_choice(method, "method", WEIGHT_METHODS)]
    scale = check_choice(scale, "scale", SCALES)
    az = _arviz()
    data = {name: to_arviz(posterior, X, y, max_elements=max_elements)
            for name, posterior in posteriors.items()}
    return az.compare(data, ic=ic, method=method, scale=scale)
