"""Shared fixtures: posteriors with a known, closed-form predictive mixture."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.families import inverse_softplus
from bayes_mdn.scaling import Standardizer


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. The full suite otherwise keeps
    thousands of executables alive in one process, and XLA's CPU compiler segfaulted in
    test_svi_start after about 500 tests (only in the full run, never in a subset)."""
    yield
    jax.clear_caches()


def exact_posterior(logits, locs, scales, *, num_features: int = 1,
                    min_scale: float = 1e-3) -> bm.Posterior:
    """A Posterior whose predictive is a known mixture, the same at every input.

    With no hidden layer and zero head kernels the network output is its head biases, so
    draw s has mixing logits ``logits[s]``, locations ``locs[s]`` and scales ``scales[s]``
    (each of shape (K,), one output, identity standardisation).
    """
    logits, locs, scales = (np.atleast_2d(np.asarray(a, np.float32)) for a in
                            (logits, locs, scales))
    num_draws, num_components = logits.shape
    model = bm.MDN(num_components=num_components, hidden_sizes=(),
                   family=bm.families.Normal(min_scale=min_scale))
    raw_scale = inverse_softplus(scales - min_scale).astype(np.float32)
    biases = {"logits": logits, "loc": locs, "scale": raw_scale}
    draws = {}
    for head, bias in biases.items():
        draws[f"{head}.kernel"] = np.zeros((1, num_draws, num_features, num_components),
                                           np.float32)
        draws[f"{head}.bias"] = bias[None]
    standardizer = Standardizer(np.zeros(num_features), np.ones(num_features),
                                np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)


@pytest.fixture
def bimodal_posterior() -> bm.Posterior:
    """0.3 N(-2, 0.5) + 0.7 N(3, 1) at every input (one draw)."""
    return exact_posterior(np.log([[0.3, 0.7]]), [[-2.0, 3.0]], [[0.5, 1.0]])


@pytest.fixture
def two_draw_posterior() -> bm.Posterior:
    """Draw 1: 0.5 N(-1, 1) + 0.5 N(1, 0.5); draw 2: 0.2 N(0, 2) + 0.8 N(4, 0.3)."""
    return exact_posterior(np.log([[0.5, 0.5], [0.2, 0.8]]), [[-1.0, 1.0], [0.0, 4.0]],
                           [[1.0, 0.5], [2.0, 0.3]])
