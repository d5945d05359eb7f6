"""Each plot returns its Axes and draws what it promises."""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import bayes_mdn as bm
from bayes_mdn import plotting


@pytest.fixture(scope="module")
def fitted():
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), 2000, 0.5)
    post = bm.MDN(num_components=4, hidden_sizes=(8,)).fit(
        X, y, key=jax.random.key(0), num_steps=100, X_test=X_test, y_test=y_test)
    return post, X, y, X_test, y_test


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_training_curves(fitted):
    post = fitted[0]
    ax = plotting.plot_training_curves(post, optimal=-1.2875)
    assert len(ax.lines) == 3 and ax.get_legend() is not None


def test_mixture_draws_density_and_components(fitted):
    post, _, _, X_test, y_test = fitted
    ax = plotting.plot_mixture(post.predictive(X_test[:5]), 2, true_value=float(y_test[2, 0]))
    # 4 component curves + the density line + the true-value line.
    assert len(ax.lines) == 4 + 2
    density = ax.lines[-2].get_ydata()
    grid = ax.lines[-2].get_xdata()
    assert np.all(density >= 0) and 0.9 < np.trapezoid(density, grid) <= 1.01


def test_predictive_samples_and_conditional_density(fitted):
    post, X, y, X_test, _ = fitted
    _, ax = plt.subplots()
    assert plotting.plot_predictive_samples(post, X_test[:200], key=jax.random.key(0),
                                            num_samples=2, ax=ax) is ax
    ax = plotting.plot_conditional_density(post, x_range=(-10, 10), y_range=(-11, 11),
                                           data=(X, y), resolution=(30, 40))
    assert ax.images[0].get_array().shape == (40, 30)


def test_plot_errors(fitted):
    post = fitted[0]
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        plotting.plot_predictive_samples(post, np.zeros((3, 1)), key=1)
    bare = bm.Posterior(model=post.model, method="map", draws=post.draws,
                        standardizer=post.standardizer)
    with pytest.raises(ValueError, match="recorded no log-likelihood history"):
        plotting.plot_training_curves(bare)
