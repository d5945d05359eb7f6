"""The photo-z figures in bayes_mdn.plotting draw what they promise and reject bad input."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from conftest import exact_posterior

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bayes_mdn import plotting

GRID = np.linspace(0.0, 3.0, 301)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def bimodal_pred():
    """0.4 N(0.4, 0.05) + 0.6 N(2.0, 0.1) at 50 galaxies."""
    post = exact_posterior(np.log([[0.4, 0.6]]), [[0.4, 2.0]], [[0.05, 0.1]])
    return post.predictive(np.zeros((50, 1)))


def test_plot_pdz_overlays_estimators_and_marks_the_truth(bimodal_pred):
    gridded = np.exp(bimodal_pred.log_prob_grid(GRID))
    ax = plotting.plot_pdz({"mdn": bimodal_pred, "grid": gridded}, 3, grid=GRID, z_true=2.1)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["mdn", "grid", "true z"]
    np.testing.assert_allclose(lines[0].get_ydata(), gridded[3])
    # Two modes, at 0.4 and 2.0.
    y = lines[0].get_ydata()
    peaks = GRID[1:-1][(y[1:-1] > y[:-2]) & (y[1:-1] > y[2:])]
    np.testing.assert_allclose(peaks, [0.4, 2.0])
    assert lines[2].get_xdata()[0] == 2.1


def test_plot_zphot_zspec_draws_the_diagonal_and_the_outlier_lines():
    rng = np.random.default_rng(0)
    z_spec = rng.uniform(0.1, 2.5, 2000)
    z_phot = z_spec + 0.02 * (1 + z_spec) * rng.standard_normal(2000)
    z_phot[:100] = rng.uniform(0.1, 2.5, 100)
    ax = plotting.plot_zphot_zspec(z_phot, z_spec, bins=40, outlier_cut=0.15)
    assert len(ax.get_lines()) == 3
    diagonal = ax.get_lines()[0]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    assert "sigma_NMAD 0.0" in ax.get_title() and "|dz| > 0.15" in ax.get_title()
    assert len(plotting.plot_zphot_zspec(z_phot, z_spec, outlier_cut=None).get_lines()) == 1


def test_plot_nz_stacks_pdz_and_normalises(bimodal_pred):
    z_true = np.where(np.arange(50) < 20, 0.4, 2.0)
    ax = plotting.plot_nz({"mdn": bimodal_pred}, z_true, grid=GRID, bins=30)
    stacked = ax.get_lines()[0].get_ydata()
    assert np.trapezoid(stacked, GRID) == pytest.approx(1.0)
    # Weights 0.4 and 0.6: the two peaks' areas.
    assert np.trapezoid(stacked[GRID < 1.2], GRID[GRID < 1.2]) == pytest.approx(0.4, abs=1e-3)
    assert len(ax.patches) == 30  # the true-z histogram


def test_bad_inputs_are_rejected(bimodal_pred):
    with pytest.raises(ValueError, match=r"`index` must be an integer in \[0, 49\]"):
        plotting.plot_pdz(bimodal_pred, 50)
    with pytest.raises(ValueError, match="`pdz` is an empty mapping"):
        plotting.plot_pdz({}, 0)
    with pytest.raises(ValueError, match="`pdz` is an empty mapping"):
        plotting.plot_nz({})
    with pytest.raises(ValueError, match=r"must have shape \(N, 301\)"):
        plotting.plot_nz(np.ones((5, 10)))
    with pytest.raises(ValueError, match="finite, non-negative densities"):
        plotting.plot_nz(-np.ones((5, 301)))
    with pytest.raises(TypeError, match="must be a PredictiveMixture or an array"):
        plotting.plot_nz([["a"] * 301])
    with pytest.raises(ValueError, match=r"one value per galaxy of the p\(z\) \(50\); got 3"):
        plotting.plot_nz(bimodal_pred, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="`outlier_cut` must be a finite positive"):
        plotting.plot_zphot_zspec([0.1, 0.2], [0.1, 0.2], outlier_cut=-1.0)
    with pytest.raises(ValueError, match="same length"):
        plotting.plot_zphot_zspec([0.1, 0.2], [0.1])


def test_a_predictive_of_two_outputs_is_rejected():
    from test_photoz_metrics import _two_output_predictive

    with pytest.raises(ValueError, match="must have one output"):
        plotting.plot_nz(_two_output_predictive())
