"""Shared fixtures: posteriors with a known, closed-form predictive mixture (built by the
helpers of ``tests/_posteriors.py``)."""

from __future__ import annotations

import os

# The suite runs in two pytest-xdist workers: on a GPU machine each would otherwise claim 75 %
# of the accelerator's memory at start-up.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pytest
from _posteriors import exact_posterior

import bayes_mdn as bm


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. The full suite otherwise keeps
    thousands of executables alive in one process, and XLA's CPU compiler segfaulted in
    test_svi_start after about 500 tests (only in the full run, never in a subset)."""
    yield
    jax.clear_caches()


@pytest.fixture
def bimodal_posterior() -> bm.Posterior:
    """0.3 N(-2, 0.5) + 0.7 N(3, 1) at every input (one draw)."""
    return exact_posterior(np.log([[0.3, 0.7]]), [[-2.0, 3.0]], [[0.5, 1.0]])


@pytest.fixture
def two_draw_posterior() -> bm.Posterior:
    """Draw 1: 0.5 N(-1, 1) + 0.5 N(1, 0.5); draw 2: 0.2 N(0, 2) + 0.8 N(4, 0.3)."""
    return exact_posterior(np.log([[0.5, 0.5], [0.2, 0.8]]), [[-1.0, 1.0], [0.0, 4.0]],
                           [[1.0, 0.5], [2.0, 0.3]])
