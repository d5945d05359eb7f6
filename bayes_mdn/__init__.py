"""bayes_mdn: Bayesian Mixture Density Networks on NumPyro and JAX."""

import importlib
from typing import Any

from bayes_mdn import (
    calibration,
    datasets,
    diagnostics,
    families,
    feature_networks,
    metrics,
    priors,
)
from bayes_mdn._arviz import compare
from bayes_mdn._compilation_cache import enable_compilation_cache
from bayes_mdn._validation import DataWarning
from bayes_mdn.diagnostics import ConvergenceWarning
from bayes_mdn.io import load
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.stacking import StackedPosterior, stack
from bayes_mdn.tables import predict_table

__version__ = "0.1.0"

__all__ = [
    "MDN",
    "ConvergenceWarning",
    "DataWarning",
    "Posterior",
    "PredictiveMixture",
    "StackedPosterior",
    "__version__",
    "calibration",
    "compare",
    "datasets",
    "diagnostics",
    "enable_compilation_cache",
    "families",
    "feature_networks",
    "load",
    "log_density",
    "metrics",
    "plotting",
    "predict_table",
    "priors",
    "stack",
]


def __getattr__(name: str) -> Any:
    # matplotlib is imported on first use of ``bm.plotting``, not on ``import bayes_mdn``.
    if name == "plotting":
        return importlib.import_module("bayes_mdn.plotting")
    # The inference package (optax, every method) is loaded on first use, not on import.
    if name == "log_density":
        return importlib.import_module("bayes_mdn.inference.log_density").log_density
    raise AttributeError(f"module 'bayes_mdn' has no attribute {name!r}")
