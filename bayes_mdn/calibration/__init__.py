"""Recalibration that keeps a distribution, and conformal prediction sets (D = 1).

* :meth:`bayes_mdn.Posterior.recalibrate` (:func:`recalibrate`) fits a monotone map R of
  the predictive cdf to PIT values, on held-out rows or cross-fitted on the training rows;
  the posterior's :meth:`~bayes_mdn.Posterior.predictive` then returns a
  :class:`RecalibratedPredictive` (cdf ``R(F(y))``), saved and loaded with the fit. Maps
  live in :mod:`bayes_mdn.calibration.maps`.
* :func:`conformal` calibrates split-conformal sets with a finite-sample coverage
  guarantee: density superlevel sets (unions of intervals) or PIT intervals, optionally per
  Mondrian bin.
"""

from bayes_mdn.calibration.conformal import ConformalPredictor, conformal
from bayes_mdn.calibration.maps import (
    BetaMap,
    CalibrationMap,
    IdentityMap,
    IsotonicMap,
    fit_map,
    map_from_dict,
)
from bayes_mdn.calibration.recalibrated import RecalibratedPredictive, pit_values, recalibrate

__all__ = ["BetaMap", "CalibrationMap", "ConformalPredictor", "IdentityMap", "IsotonicMap",
           "RecalibratedPredictive", "conformal", "fit_map", "map_from_dict", "pit_values",
           "recalibrate"]
