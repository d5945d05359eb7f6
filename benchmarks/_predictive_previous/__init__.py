# ruff: noqa
"""Benchmark-private copy of bayes_mdn/predictive as of commit 6a9f666 (before issue 19),
so predictive_speed.py times the previous implementation in the same run. Do not edit."""

from _predictive_previous._constants import DEFAULT_MAX_ELEMENTS
from _predictive_previous.mixture import PredictiveMixture

__all__ = ["DEFAULT_MAX_ELEMENTS", "PredictiveMixture"]
