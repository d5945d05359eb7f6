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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpyro.distributions as dist

from bayes_mdn._validation import check_choice, check_key
from bayes_mdn.inference._data import FitData, prepare_data
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
    data = prepare_data(model, X, y, X_test, y_test)
    if method not in POINT_ESTIMATES:
        _require_proper_prior(model, data, method)
    return fit_method(model, data, key, method_options)


#: Methods that only need the mode of the posterior, so an improper (flat) prior is fine.
POINT_ESTIMATES = ("map", "ensemble")


def _require_proper_prior(model: MDN, data: FitData, method: str) -> None:
    _, num_features, num_outputs = data.shape
    improper = [site.name for site in model.sites(num_features, num_outputs)
                if isinstance(model.prior.for_site(site).distribution(site),
                           dist.ImproperUniform)]
    if improper:
        raise ValueError(
            f"method={method!r} integrates over the posterior and needs a proper prior, but "
            f"sites {improper} have a flat prior. Use e.g. bayes_mdn.priors.FanInNormal() for "
            "them, or method='map' for maximum likelihood."
        )
