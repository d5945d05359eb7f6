"""The immutable result of a fit: posterior draws of the network weights plus what produced them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_mdn._validation import as_features, check_column_names, check_positive_int
from bayes_mdn.calibration.recalibrated import RecalibratedPredictive
from bayes_mdn.calibration.recalibrated import recalibrate as recalibrate_posterior
from bayes_mdn.model import LINEARISED_PREFIX, MDN
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture
from bayes_mdn.scaling import Standardizer

if TYPE_CHECKING:
    import arviz

    from bayes_mdn.diagnostics import Summary

__all__ = ["KINDS", "Posterior"]

#: Kinds of result an inference method gives (see :class:`bayes_mdn.inference.MethodEntry`):
#: one draw, independent draws, or Markov chains.
KINDS = ("point", "independent", "chains")
#: The kind of a Posterior that does not carry one (files saved before it did, Posteriors built
#: by hand), by the built-in method that made it.
LEGACY_KINDS = {"map": "point", "ensemble": "independent", "svi": "independent",
                "laplace": "independent", "nuts": "chains"}


def _frozen_arrays(arrays: Mapping[str, Any]) -> MappingProxyType:
    frozen = {}
    for name, value in arrays.items():
        value = np.array(value)
        value.setflags(write=False)
        frozen[name] = value
    return MappingProxyType(frozen)


def _derived_kind(method: str, draws: Mapping[str, Any]) -> str:
    """The kind of a Posterior that does not say: by built-in method, else by shape."""
    if method in LEGACY_KINDS:
        return LEGACY_KINDS[method]
    shape = tuple(next(iter(draws.values())).shape[:2]) if draws else (1, 1)
    return "point" if shape == (1, 1) else "chains" if shape[0] > 1 else "independent"


@dataclass(frozen=True, eq=False)
class Posterior:
    """Posterior draws of an :class:`~bayes_mdn.MDN` and the record of how they were obtained.

    Attributes
    ----------
    model : MDN
        The specification that was fitted.
    method : str
        ``"map"``, ``"ensemble"``, ``"svi"``, ``"laplace"`` or ``"nuts"``.
    draws : mapping of str to Array
        One entry per parameter site, shape ``(C, S, *site_shape)``: C chains of S draws.
        MAP is (1, 1, ...); an ensemble, SVI and Laplace are (1, S, ...).
    standardizer : Standardizer
        The shifts and scales learned from the training data.
    history : mapping of str to numpy.ndarray
        Optimisation traces, e.g. ``loss`` (per step), ``eval_step`` with
        ``train_log_likelihood`` and ``test_log_likelihood`` (per point, original units).
        NUTS and Laplace record the final posterior-predictive ``train_log_likelihood``
        (and ``test_log_likelihood`` with held-out data) as one-entry arrays; Laplace keeps
        its MAP stage's traces as ``map_*``.
    info : mapping of str to Any
        JSON-serialisable facts: ``fit_seconds``, options used, library versions, and for
        pandas inputs ``feature_names`` / ``target_names`` (the column names; a DataFrame
        passed to :meth:`predictive` must then have the same columns in the same order).
    sample_stats : mapping of str to numpy.ndarray
        Per-draw sampler statistics, each (C, S): for NUTS ``diverging``, ``tree_depth``,
        ``num_steps`` (leapfrog steps), ``step_size``, ``accept_prob``, ``energy``,
        ``potential_energy``. Empty for other methods.
    kind : str, optional
        ``"point"``, ``"independent"`` or ``"chains"`` (see
        :class:`bayes_mdn.inference.MethodEntry`): what diagnostics, summaries and ArviZ
        read instead of the method's name. ``fit`` sets it from the method's registry entry;
        when None (older saved files, hand-built Posteriors) it is derived from the built-in
        method's name, else from the shape (1 x 1: point; several chains: chains).
    linearised_at : mapping of str to Array, optional
        For Laplace's linearised predictive: the network's latent sites at the point where
        the network is linearised (the MAP estimate; no leading axes). Every prediction
        from a draw then uses ``f(centre) + J(centre) (draw - centre)`` for the raw heads
        instead of ``f(draw)`` (see :meth:`prediction_draws`). None: the network itself.
    recalibration : bayes_mdn.calibration.CalibrationMap, optional
        A monotone map R of the predictive cdf set by :meth:`recalibrate`: then
        :meth:`predictive` returns a :class:`~bayes_mdn.calibration.RecalibratedPredictive`
        with cdf ``R(F(y))``. None: no recalibration.
    """

    model: MDN
    method: str
    draws: Mapping[str, jax.Array]
    standardizer: Standardizer
    history: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    sample_stats: Mapping[str, np.ndarray] = field(default_factory=dict)
    linearised_at: Mapping[str, jax.Array] | None = None
    kind: str | None = None
    recalibration: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "draws", MappingProxyType(dict(self.draws)))
        if self.kind is None:
            object.__setattr__(self, "kind", _derived_kind(self.method, self.draws))
        elif self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}; got {self.kind!r}.")
        if self.linearised_at is not None:
            centre = dict(self.linearised_at)
            unknown = sorted(set(centre) - set(self.draws))
            if unknown:
                raise ValueError(f"`linearised_at` names sites that are not drawn: {unknown}.")
            for name, value in centre.items():
                if tuple(value.shape) != tuple(self.draws[name].shape[2:]):
                    raise ValueError(
                        f"`linearised_at[{name!r}]` has shape {tuple(value.shape)}; the site's "
                        f"draws have shape {tuple(self.draws[name].shape[2:])} per draw.")
            object.__setattr__(self, "linearised_at", MappingProxyType(centre))
        object.__setattr__(self, "history", _frozen_arrays(self.history))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))
        object.__setattr__(self, "sample_stats", _frozen_arrays(self.sample_stats))
        shapes = {tuple(value.shape[:2]) for value in self.draws.values()}
        shapes |= {tuple(value.shape[:2]) for value in self.sample_stats.values()}
        if len(shapes) > 1:
            raise ValueError(f"Every draw and sample statistic must share the leading (chain, "
                             f"draw) axes; got {sorted(shapes)}.")

    # ----------------------------------------------------------------------- shapes
    @property
    def num_features(self) -> int:
        """P, the number of input columns seen at fit time."""
        return int(self.standardizer.x_shift.shape[0])

    @property
    def num_outputs(self) -> int:
        """D, the number of outputs."""
        return int(self.standardizer.y_shift.shape[0])

    @property
    def num_chains(self) -> int:
        """C, the number of chains (1 for optimisation-based methods)."""
        return int(next(iter(self.draws.values())).shape[0])

    @property
    def num_draws(self) -> int:
        """S, draws per chain."""
        return int(next(iter(self.draws.values())).shape[1])

    def flat_draws(self) -> dict[str, jax.Array]:
        """Draws with chains and draws merged: each site ``(C * S, *site_shape)``."""
        return {name: value.reshape(-1, *value.shape[2:]) for name, value in self.draws.items()}

    def prediction_draws(self) -> dict[str, jax.Array]:
        """What every prediction evaluates: :meth:`flat_draws`, plus for a linearised
        posterior (``linearised_at`` set) the linearisation point repeated per draw under
        ``LINEARISED_PREFIX + site`` (read by :meth:`MDN.mixture <bayes_mdn.MDN.mixture>`).

        Returns
        -------
        dict of str to Array
            Each entry ``(C * S, *site_shape)``.
        """
        draws = self.flat_draws()
        if self.linearised_at is None:
            return draws
        total = self.num_chains * self.num_draws
        for name, value in self.linearised_at.items():
            draws[LINEARISED_PREFIX + name] = jnp.broadcast_to(
                jnp.asarray(value), (total, *jnp.shape(value)))
        return draws

    def thin(self, step: int | None = None, *, num_draws: int | None = None) -> Posterior:
        """A posterior with fewer draws per chain, to trade accuracy for prediction speed.

        Parameters
        ----------
        step : int, optional
            Keep every `step`-th draw of each chain.
        num_draws : int, optional
            Keep this many draws per chain, evenly spaced over the chain (after `step`).

        Returns
        -------
        Posterior
            The same fit with draws (and sample statistics) (C, S', ...); ``info`` records
            ``thinned_from``, the original S.
        """
        if step is None and num_draws is None:
            raise ValueError("Pass `step` (keep every step-th draw) or `num_draws`.")
        index = np.arange(self.num_draws)
        if step is not None:
            index = index[:: check_positive_int(step, "step")]
        if num_draws is not None:
            num_draws = check_positive_int(num_draws, "num_draws")
            if num_draws > index.size:
                raise ValueError(f"`num_draws`={num_draws} exceeds the {index.size} draws per "
                                 "chain available; pass at most that many.")
            index = index[np.linspace(0, index.size - 1, num_draws).round().astype(int)]
        info = dict(self.info)
        info.setdefault("thinned_from", self.num_draws)
        return dataclasses.replace(
            self,
            draws={name: value[:, index] for name, value in self.draws.items()},
            sample_stats={name: value[:, index] for name, value in self.sample_stats.items()},
            info=info,
        )

    def __repr__(self) -> str:
        return (
            f"Posterior(method={self.method!r}, chains={self.num_chains}, draws={self.num_draws}, "
            f"K={self.model.num_components}, hidden={self.model.hidden_sizes}, "
            f"family={self.model.family.name!r})"
        )

    # ----------------------------------------------------------------------- prediction
    def predictive(self, X: Any, *, num_draws: int | None = None,
                   max_elements: int = DEFAULT_MAX_ELEMENTS) -> PredictiveMixture:
        """The posterior predictive mixture at new inputs.

        Parameters
        ----------
        X : array-like, shape (M, P)
            New inputs in original units, with the P features seen at fit time.
        num_draws : int, optional
            Use this many draws in all (evenly spaced over the C * S available) for a faster,
            coarser predictive; default all of them.
        max_elements : int
            Memory budget: the size of the largest intermediate array of a query, in
            (input, draw, component, output, level or grid point) terms. Inputs, and draws
            when needed, are chunked to respect it; lower it if predictions run out of memory.

        Returns
        -------
        PredictiveMixture
            Batch shape (M,), event shape (D,).
        """
        X_checked = as_features(X, "X", num_features=self.num_features, keep_float32=True)
        check_column_names(X, self.info.get("feature_names"), "X")
        max_elements = check_positive_int(max_elements, "max_elements")
        draws = self.prediction_draws()
        if num_draws is not None:
            total = self.num_chains * self.num_draws
            num_draws = check_positive_int(num_draws, "num_draws")
            if num_draws > total:
                raise ValueError(f"`num_draws`={num_draws} exceeds the {total} posterior draws "
                                 "available; pass at most that many.")
            index = np.linspace(0, total - 1, num_draws).round().astype(int)
            draws = {name: value[index] for name, value in draws.items()}
        pieces = dict(model=self.model, draws=draws, standardizer=self.standardizer,
                      X_std=self.standardizer.transform_X(X_checked), max_elements=max_elements)
        if self.recalibration is None:
            return PredictiveMixture(**pieces)
        return RecalibratedPredictive(**pieces, recalibration=self.recalibration)

    def recalibrate(self, X: Any, y: Any, *, method: str = "isotonic",
                    cv: int | str | None = None,
                    key: jax.Array | None = None, fit_options: Mapping[str, Any] | None = None,
                    refit: Any = None, num_draws: int | None = None,
                    num_bins: int | None = None, identity_weight: float = 0.01) -> Posterior:
        """This posterior with its predictive recalibrated to calibrated PIT values (D = 1).

        A monotone map R on [0, 1] is fitted to PIT values ``u_i = F(y_i | x_i)`` of
        calibration rows so that ``R(u)`` is uniform; the result's :meth:`predictive` has cdf
        ``R(F(y))``, density ``r(F(y)) f(y)`` and quantiles ``F^-1(R^-1(q))``, and every
        query (samples, ``hdr``, ``modes``, metrics, plots) follows from them. The map is
        saved and loaded with the posterior. See :mod:`bayes_mdn.calibration`.

        Two ways to get PIT values:

        * held-out rows (``cv=None``, the default): `X`, `y` must not have been used to fit;
        * cross-fitting (``cv=k``, needs `key`): `X`, `y` are the training rows; the model is
          refitted k times, each time without one fold, with this posterior's method and
          options (by default those recorded in ``info``, e.g. ``num_steps``; pass
          `fit_options` or `refit` to reproduce the fit exactly, e.g. an ``init``), and
          the PIT values of each fold come from the fit that did not see it. One map is
          fitted to all of them and applied to this (full) fit.
        * leave-one-out (``cv="loo"``): `X`, `y` are the training rows; no refits: each
          row's PIT value is this fit's leave-one-out predictive cdf at it, by
          Pareto-smoothed importance sampling of the posterior draws
          (:mod:`bayes_mdn.calibration.loo`). It describes this fit, where the fold fits of
          ``cv=k`` (on fewer rows) can be calibrated differently. Needs at least 50 draws
          that approximate a posterior (NUTS, SVI, Laplace; not MAP or a small ensemble);
          warns when a row's Pareto k-hat exceeds 0.7 (then use ``cv=5`` or held-out rows).

        Parameters
        ----------
        X : array-like, shape (N, P)
        y : array-like, shape (N,) or (N, 1)
        method : {"isotonic", "beta"}
            ``"isotonic"``: the smoothed isotonic fit (a monotone cubic through PIT
            quantiles; at least 20 rows); ``"beta"``: beta calibration (3 parameters; at
            least 10 rows).
        cv : int or "loo", optional
            Number of folds (>= 2) of the cross-fitted form, or ``"loo"``.
        key : PRNG key, optional
            Needed by ``cv`` (fold split and refits) and by discrete families (randomised
            PIT).
        fit_options : mapping, optional
            Options of the refits (``cv``): keyword arguments of :meth:`MDN.fit
            <bayes_mdn.MDN.fit>` besides `method`; default recovered from ``info``.
        refit : callable, optional
            ``refit(X, y, key=key) -> Posterior`` replaces the refits (``cv``).
        num_draws : int, optional
            At most this many posterior draws (evenly spaced) for the PIT values (default
            all).
        num_bins : int, optional
            Bins of the isotonic map; default chosen by cross-validation of the PIT values.
        identity_weight : float
            w in ``R = (1 - w) R_0 + w u``, strictly between 0 and 1: keeps r >= w.

        Returns
        -------
        Posterior
            With ``recalibration`` set and ``info["recalibration"]`` recording method,
            number of PIT values and folds.

        Raises
        ------
        ValueError
            For D > 1 (per-output maps would calibrate the marginals but not define the
            joint density, samples and HDRs of the predictive: a joint needs a copula that
            marginal PIT values cannot check; fit one model per output instead), NaN or
            wrongly shaped data, too few rows for the method (or the folds), ``cv="loo"``
            on a fit with fewer than 50 draws, before anything is compiled.
        """
        return recalibrate_posterior(self, X, y, method=method, cv=cv, key=key,
                                     fit_options=fit_options, refit=refit,
                                     num_draws=num_draws, num_bins=num_bins,
                                     identity_weight=identity_weight)

    # ----------------------------------------------------------------------- reporting
    def summary(self) -> Summary:
        """A report of the fit: method, draws, timing, training figures and diagnostics.

        The diagnostics are those of :func:`bayes_mdn.diagnostics.diagnose` (function-space
        R-hat and ESS, divergences, Pareto k, objective trend, component collapse) at the
        reference inputs stored at fit time; their warnings are listed, not emitted (call
        ``diagnose`` for :class:`~bayes_mdn.diagnostics.ConvergenceWarning`).

        Returns
        -------
        bayes_mdn.diagnostics.Summary
            A dict that prints as a text report (``print(post.summary())``), with
            ``to_dict()`` and ``to_dataframe()``. Keys ``method``, ``num_chains``,
            ``num_draws``, ``num_parameters``, ``fit_seconds`` and, where recorded,
            ``final_loss``, ``train_log_likelihood``, ``test_log_likelihood``, and for NUTS
            ``num_divergent`` and ``mean_tree_depth``; then ``num_components``,
            ``num_reference_points``, ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``,
            ``fraction_max_tree_depth``, ``effective_components``, ``dead_components``,
            ``scale_floor_fraction``, ``pareto_k``, ``objective_still_improving``,
            ``objective_improvement_per_row`` (None where not applicable) and ``warnings``
            (list of str).
        """
        # Facade accessor: diagnostics reads Posteriors (a layer above), so import on use.
        from bayes_mdn.diagnostics import Summary, diagnose

        report: dict[str, Any] = {
            "method": self.method,
            "kind": self.kind,
            "num_chains": self.num_chains,
            "num_draws": self.num_draws,
            "num_parameters": self.model.num_parameters(self.num_features, self.num_outputs),
            "fit_seconds": self.info.get("fit_seconds"),
        }
        if "loss" in self.history and self.history["loss"].size:
            report["final_loss"] = float(self.history["loss"][-1])
        for name in ("train_log_likelihood", "test_log_likelihood"):
            if name in self.history and self.history[name].size:
                report[name] = float(self.history[name][-1])
        if "diverging" in self.sample_stats:
            report["num_divergent"] = int(self.sample_stats["diverging"].sum())
        if "tree_depth" in self.sample_stats:
            report["mean_tree_depth"] = float(self.sample_stats["tree_depth"].mean())
        report.update(diagnose(self, warn=False).summary_fields())
        return Summary(report)

    def to_arviz(self, X: Any = None, y: Any = None, *, key: jax.Array | None = None,
                 max_elements: int = DEFAULT_MAX_ELEMENTS) -> arviz.InferenceData:
        """The posterior as :class:`arviz.InferenceData`, for ``az.summary``, ``az.loo``,
        ``az.waic``, ``az.compare``, ``az.plot_ppc``, ``az.plot_loo_pit``, ...

        Parameters
        ----------
        X : array-like, shape (N, P), optional
            Inputs, usually the training inputs: stored as ``constant_data`` ``X``.
        y : array-like, shape (N,) or (N, D), optional
            Targets of the rows of `X`: stored as ``observed_data`` ``y``, and their
            pointwise log-likelihood as ``log_likelihood`` ``y``.
        key : PRNG key, optional
            With `X`, draws ``posterior_predictive`` ``y``: one replicate per posterior draw
            and row (omitted without a key, since drawing needs randomness).
        max_elements : int
            Memory bound: (row, draw, component, output) terms evaluated at once.

        Returns
        -------
        arviz.InferenceData
            * ``posterior``: every parameter site (chain, draw, ``<site>_dim_0``, ...),
              e.g. ``hidden_0.kernel`` with dims ``hidden_0.kernel_dim_0``/``_dim_1``;
            * ``sample_stats`` (NUTS): ``diverging``, ``tree_depth``, ``step_size``,
              ``energy``, ``acceptance_rate``, ``lp`` (minus the potential energy, in
              standardised units) and ``n_steps``;
            * ``log_likelihood``: ``y`` (chain, draw, obs), ``log p(y_n | x_n, theta)`` of
              each row in the original units of y (joint over the D outputs);
            * ``observed_data``: ``y`` (obs) for D = 1, (obs, output) otherwise;
            * ``posterior_predictive``: ``y`` (chain, draw, obs[, output]);
            * ``constant_data``: ``X`` (obs, feature).

        Raises
        ------
        ValueError
            For a single-draw fit (``method="map"``): LOO, WAIC, R-hat and predictive
            checks need posterior draws.
        """
        # Facade accessor: the ArviZ adapter reads Posteriors (a layer above); import on use.
        from bayes_mdn._arviz import to_arviz

        return to_arviz(self, X, y, key=key, max_elements=max_elements)

    # ----------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the posterior to `path` (arrays + JSON metadata; never pickle).

        The file is written to a temporary name and renamed, so a crash cannot leave a
        half-written file under `path`. Load it with :func:`bayes_mdn.load`.
        """
        # Facade accessor: io reads and writes Posteriors (a layer above), so import on use.
        from bayes_mdn.io import save

        save(self, path)
