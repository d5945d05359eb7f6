"""The immutable result of a fit: posterior draws of the network weights plus what produced them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from bayes_mdn._validation import as_features, check_positive_int
from bayes_mdn.model import MDN
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture
from bayes_mdn.scaling import Standardizer

__all__ = ["Posterior"]


def _frozen_arrays(arrays: Mapping[str, Any]) -> MappingProxyType:
    frozen = {}
    for name, value in arrays.items():
        value = np.array(value)
        value.setflags(write=False)
        frozen[name] = value
    return MappingProxyType(frozen)


@dataclass(frozen=True, eq=False)
class Posterior:
    """Posterior draws of an :class:`~bayes_mdn.MDN` and the record of how they were obtained.

    Attributes
    ----------
    model : MDN
        The specification that was fitted.
    method : str
        ``"map"`` and, as they land, the other inference methods.
    draws : mapping of str to Array
        One entry per parameter site, shape (C, S, *site_shape): C chains of S draws.
        MAP is (1, 1, ...).
    standardizer : Standardizer
        The shifts and scales learned from the training data.
    history : mapping of str to numpy.ndarray
        Optimisation traces, e.g. ``loss`` (per step), ``eval_step`` with
        ``train_log_likelihood`` and ``test_log_likelihood`` (per point, original units).
    info : mapping of str to Any
        JSON-serialisable facts: ``fit_seconds``, options used, library versions.
    """

    model: MDN
    method: str
    draws: Mapping[str, jax.Array]
    standardizer: Standardizer
    history: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "draws", MappingProxyType(dict(self.draws)))
        object.__setattr__(self, "history", _frozen_arrays(self.history))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

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
        """Draws with chains and draws merged: each site (C * S, *site_shape)."""
        return {name: value.reshape(-1, *value.shape[2:]) for name, value in self.draws.items()}

    def __repr__(self) -> str:
        return (
            f"Posterior(method={self.method!r}, chains={self.num_chains}, draws={self.num_draws}, "
            f"K={self.model.num_components}, hidden={self.model.hidden_sizes}, "
            f"family={self.model.family.name!r})"
        )

    # ----------------------------------------------------------------------- prediction
    def predictive(self, X: Any, *, max_elements: int = DEFAULT_MAX_ELEMENTS
                   ) -> PredictiveMixture:
        """The posterior predictive mixture at new inputs.

        Parameters
        ----------
        X : array-like, shape (M, P)
            New inputs in original units, with the P features seen at fit time.
        max_elements : int
            Memory budget: the number of (input, draw, component, ...) terms evaluated at
            once. Lower it if predictions run out of memory.

        Returns
        -------
        PredictiveMixture
            Batch shape (M,), event shape (D,).
        """
        X_checked = as_features(X, "X", num_features=self.num_features)
        max_elements = check_positive_int(max_elements, "max_elements")
        return PredictiveMixture(
            model=self.model,
            draws=self.flat_draws(),
            standardizer=self.standardizer,
            X_std=self.standardizer.transform_X(X_checked),
            max_elements=max_elements,
        )

    # ----------------------------------------------------------------------- reporting
    def summary(self) -> dict[str, Any]:
        """A short report of the fit: method, draws, timing, and the final training figures.

        Returns
        -------
        dict
            Keys ``method``, ``num_chains``, ``num_draws``, ``num_parameters``,
            ``fit_seconds`` and, where recorded, ``final_loss``,
            ``train_log_likelihood``, ``test_log_likelihood``.
        """
        report: dict[str, Any] = {
            "method": self.method,
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
        return report

    # ----------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the posterior to `path` (arrays + JSON metadata; never pickle).

        The file is written to a temporary name and renamed, so a crash cannot leave a
        half-written file under `path`. Load it with :func:`bayes_mdn.load`.
        """
        from bayes_mdn.io import save

        save(self, path)
