"""fit(): turn an MDN specification and data into a :class:`~bayes_mdn.Posterior`.

Every method shares the same preparation (validation, standardisation, data-dependent
initialisation) and returns the same Posterior. Methods are registered in ``METHODS``, one
:class:`MethodEntry` each: the options dataclass (so unknown or invalid options fail before
anything is compiled), the fit function and the kind of result. Adding a method is its own
module plus one line in ``METHODS``; see the architecture page of the docs.

==============  ==========================================================================
``"map"``       maximum a posteriori: AutoDelta + Adam (:class:`MapOptions`)
``"ensemble"``  E vmapped MAP fits from different starts, one draw each
                (:class:`EnsembleOptions`)
``"svi"``       variational inference, guides normal / lowrank / mvn / flow
                (:class:`SviOptions`)
``"laplace"``   Gaussian at the MAP point with the inverse Hessian as covariance
                (:class:`LaplaceOptions`)
``"nuts"``      multi-chain No-U-Turn sampler (:class:`NutsOptions`)
``"sgmcmc"``    cyclical stochastic-gradient HMC on minibatches, several chains
                (:class:`SgmcmcOptions`)
==============  ==========================================================================

Several devices: the optimisation-based methods take ``shard_data`` (the training rows split
over every device, parameters replicated: data-parallel steps), and NUTS takes
``chain_method`` (``"parallel"`` spreads the chains over the local devices); see the how-to
guide "Use several devices".
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax

from bayes_mdn._validation import (
    check_choice,
    check_column_names,
    check_key,
    column_names,
    warn_about_data,
)
from bayes_mdn.inference._data import (
    FitData,
    prepare_data,
    require_proper_prior,
    with_reference_points,
)
from bayes_mdn.inference._holdout import (
    attach_validation,
    refit_on_all_rows,
    split_validation,
    wants_refit,
)
from bayes_mdn.inference._optim import OptimOptions
from bayes_mdn.inference.laplace import LaplaceOptions, fit_laplace
from bayes_mdn.inference.log_density import LogDensity, log_density
from bayes_mdn.inference.map import EnsembleOptions, MapOptions, fit_ensemble, fit_map
from bayes_mdn.inference.nuts import NutsOptions, fit_nuts
from bayes_mdn.inference.sgmcmc import SgmcmcOptions, fit_sgmcmc
from bayes_mdn.inference.svi import SviOptions, fit_svi
from bayes_mdn.model import MDN
from bayes_mdn.posterior import KINDS, Posterior

__all__ = ["METHODS", "EnsembleOptions", "FitData", "FitFunction", "LaplaceOptions",
           "LogDensity", "MapOptions", "MethodEntry", "NutsOptions", "OptimOptions",
           "SgmcmcOptions", "SviOptions", "fit", "log_density", "prepare_data"]

class FitFunction(Protocol):
    """The one signature of a method's fit function: ``fit(model, data, key, options)`` with
    the validated, standardised :class:`FitData`, a PRNG key and the method's options
    dataclass, returning a :class:`~bayes_mdn.Posterior` whose draws are
    ``(C, S, *site_shape)``."""

    def __call__(self, model: MDN, data: FitData, key: jax.Array, options: Any, /
                 ) -> Posterior: ...


class MethodEntry(NamedTuple):
    """What the registry knows of an inference method.

    Attributes
    ----------
    options : type
        A frozen dataclass of the method's options (``fit(**options)`` builds it; its
        ``__post_init__`` validates them before anything is compiled).
    fit : FitFunction
        ``fit(model, data, key, options) -> Posterior``.
    kind : str
        The kind of result, which diagnostics, summaries and ArviZ read (never the method's
        name): ``"point"`` (one draw, C = S = 1), ``"independent"`` (S independent draws,
        C = 1: ensembles, variational and Laplace approximations) or ``"chains"`` (C Markov
        chains of S correlated draws each: R-hat and ESS apply).
    proper_prior : bool
        The method integrates over the posterior and refuses a flat (improper) prior.
    checkpoint : bool
        The options take ``checkpoint=``/``resume=`` (see :mod:`._checkpoint`).
    """

    options: type
    fit: FitFunction
    kind: str
    proper_prior: bool = True
    checkpoint: bool = False


#: The registry: one line per method.
METHODS: dict[str, MethodEntry] = {
    "map": MethodEntry(MapOptions, fit_map, "point", proper_prior=False, checkpoint=True),
    "ensemble": MethodEntry(EnsembleOptions, fit_ensemble, "independent", proper_prior=False,
                            checkpoint=True),
    "svi": MethodEntry(SviOptions, fit_svi, "independent", checkpoint=True),
    "laplace": MethodEntry(LaplaceOptions, fit_laplace, "independent", checkpoint=True),
    "nuts": MethodEntry(NutsOptions, fit_nuts, "chains", checkpoint=True),
    "sgmcmc": MethodEntry(SgmcmcOptions, fit_sgmcmc, "chains"),
}


def fit(model: MDN, X: Any, y: Any, *, key: jax.Array, method: str = "map",
        X_test: Any = None, y_test: Any = None, **options: Any) -> Posterior:
    """Fit `model` to data; see :meth:`bayes_mdn.MDN.fit`.

    Parameters
    ----------
    model : MDN
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    key : PRNG key
    method : str
        ``"map"``, ``"ensemble"``, ``"svi"``, ``"laplace"`` or ``"nuts"``.
    X_test, y_test : array-like, optional
        Held-out data whose mean log-likelihood per point (original units) is recorded during
        optimisation in ``history["test_log_likelihood"]`` (optimisation-based methods).
    **options
        Options of the method, e.g. ``num_steps`` or ``guide``: see :class:`MapOptions`,
        :class:`EnsembleOptions`, :class:`SviOptions`, :class:`LaplaceOptions` and
        :class:`NutsOptions`.

    Returns
    -------
    Posterior
    """
    if not isinstance(model, MDN):
        raise TypeError(f"`model` must be a bayes_mdn.MDN; got {type(model).__name__}.")
    method = check_choice(method, "method", METHODS)
    key = check_key(key)
    entry = METHODS[method]
    if entry.kind not in KINDS:
        raise ValueError(f"METHODS[{method!r}].kind must be one of {KINDS}; got {entry.kind!r}.")
    options_type = entry.options
    valid = set(options_type.__dataclass_fields__)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"fit(method={method!r}) got unknown options {unknown}; valid options are "
            f"{sorted(valid)}."
        )
    method_options = options_type(**options)
    warn_about_data(X, y, discrete_family=model.family.discrete,
                    feature_names=column_names(X), target_names=column_names(y), stacklevel=4)
    X_fit, y_fit, held = split_validation(X, y, getattr(method_options, "validation", None), key)
    data = attach_validation(model, prepare_data(model, X_fit, y_fit, X_test, y_test), held)
    names = _column_names(X, y, X_test)
    if entry.proper_prior:
        require_proper_prior(model, data, method)
    posterior = entry.fit(model, data, key, method_options)
    if wants_refit(method_options):
        posterior, data = refit_on_all_rows(
            entry.fit, model, X, y, X_test, y_test, key, method_options, posterior,
            None if isinstance(method_options.validation, float) else held)
    posterior = dataclasses.replace(posterior, kind=entry.kind,
                                    info={**posterior.info, **names})
    return with_reference_points(posterior, data)


def _column_names(X: Any, y: Any, X_test: Any) -> dict[str, list[str]]:
    """``feature_names`` / ``target_names`` of pandas inputs, recorded in ``Posterior.info``
    (for plot labels, the command line, and the prediction-time column check)."""
    names = {}
    feature_names, target_names = column_names(X), column_names(y)
    if feature_names is not None:
        check_column_names(X_test, feature_names, "X_test")
        names["feature_names"] = feature_names
    if target_names is not None:
        names["target_names"] = target_names
    return names
