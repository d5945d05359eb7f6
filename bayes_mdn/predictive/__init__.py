"""The posterior predictive: a mixture over S draws x K components (see :mod:`.mixture`)."""

from bayes_mdn.predictive._constants import DEFAULT_MAX_ELEMENTS
from bayes_mdn.predictive.mixture import PredictiveMixture

__all__ = ["DEFAULT_MAX_ELEMENTS", "PredictiveMixture"]
