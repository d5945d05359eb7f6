"""fit(): turn an MDN specification and data into a :class:`~bayes_mdn.Posterior`.

Every method shares the same preparation (validation, standardisation, data-dependent
initialisation) and returns the same Posterior. Methods are registered in ``METHODS`` with an
options dataclass each, so unknown or invalid options fail before anything is compiled.

=============  ==========================================================================
``"map"``      maximum a posteriori: AutoDelta + Adam (:class:`MapOptions`)
``"ensemble"`` E vmapped MAP fits from different starts, one draw each
               (:class:`EnsembleOptions`)
``"svi"``      variational inference, guides normal / lowrank / mvn / flow
               (:class:`SviOptions`)
``"laplace"``  Gaussian at the MAP point with the inverse Hessian as covariance
               (:class:`LaplaceOptions`)
``"nuts"``     multi-chain No-U-Turn sampler (:class:`NutsOptions`)
=============  ==========================================================================

Several devices: the optimisation-based methods take ``shard_data`` (the training rows split
over every device, parameters replicated: data-parallel steps), and NUTS takes
``chain_method`` (``"parallel"`` spreads the chains over the local devices); see the how-to
guide "Use several devices".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import numpyro.distributions as dist

from bayes_mdn._validation import (
    check_choice,
    check_column_names,
    check_key,
    column_names,
    warn_about_data,
)
from bayes_mdn.inference._data import FitData, prepare_data
from bayes_mdn.inference._holdout import attach_validation, split_validation
from bayes_mdn.inference._optim import OptimOptions
from bayes_mdn.inference.laplace import LaplaceOptions, fit_laplace
from bayes_mdn.inference.map import EnsembleOptions, MapOptions, fit_ensemble, fit_map
from bayes_mdn.inference.nuts import NutsOptions, fit_nuts
from bayes_mdn.inference.svi import SviOptions, fit_svi
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior

__all__ = ["METHODS", "EnsembleOptions", "FitData", "LaplaceOptions", "MapOptions",
           "NutsOptions", "OptimOptions", "SviOptions", "fit", "prepare_data"]

METHODS: dict[str, tuple[type, Callable[..., Posterior]]] = {
    "map": (MapOptions, fit_map),
    "ensemble": (EnsembleOptions, fit_ensemble),
    "svi": (SviOptions, fit_svi),
    "laplace": (LaplaceOptions, fit_laplace),
    "nuts": (NutsOptions, fit_nuts),
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
    options_type, fit_method = METHODS[method]
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
    if method not in POINT_ESTIMATES:
        _require_proper_prior(model, data, method)
    posterior = fit_method(model, data, key, method_options)
    if names:
        posterior = dataclasses.replace(posterior, info={**posterior.info, **names})
    return _with_reference_points(posterior, data)


def _with_reference_points(posterior: Posterior, data: FitData) -> Posterior:
    """Record ``info["reference_X"]``/``["reference_y"]``: 32 training rows (original units)
    at which :mod:`bayes_mdn.diagnostics` evaluates function-space R-hat and ESS."""
    from bayes_mdn.diagnostics import reference_indices

    rows = reference_indices(data.X)
    standardizer = data.standardizer
    # Rows first, then float64: no float64 copy of the whole data.
    X_ref = np.asarray(np.asarray(data.X)[rows], np.float64) * standardizer.x_scale
    y_ref = np.asarray(np.asarray(data.y)[rows], np.float64) * standardizer.y_scale
    X_ref, y_ref = X_ref + standardizer.x_shift, y_ref + standardizer.y_shift
    info = {**posterior.info, "reference_X": X_ref.tolist(), "reference_y": y_ref.tolist()}
    return dataclasses.replace(posterior, info=info)


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


#: Methods that only need the mode of the posterior, so an improper (flat) prior is fine.
POINT_ESTIMATES = ("map", "ensemble")


def _require_proper_prior(model: MDN, data: FitData, method: str) -> None:
    _, num_features, num_outputs = data.shape
    latents = model.prior.latent_distributions(model.sites(num_features, num_outputs))
    improper = [name for name, prior in latents.items()
                if isinstance(prior, dist.ImproperUniform)]
    if improper:
        raise ValueError(
            f"method={method!r} integrates over the posterior and needs a proper prior, but "
            f"sites {improper} have a flat prior. Use e.g. bayes_mdn.priors.FanInNormal() for "
            "them, or method='map' for maximum likelihood."
        )
