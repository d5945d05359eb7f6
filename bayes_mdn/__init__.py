"""bayes_mdn: Bayesian Mixture Density Networks on NumPyro and JAX."""

from bayes_mdn import datasets, families, priors
from bayes_mdn.io import load
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import PredictiveMixture

__version__ = "0.1.0"

__all__ = [
    "MDN",
    "Posterior",
    "PredictiveMixture",
    "__version__",
    "datasets",
    "families",
    "load",
    "priors",
]
