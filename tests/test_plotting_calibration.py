"""plot_pit and plot_coverage draw what bayes_mdn.metrics computes."""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
import pytest
from conftest import exact_posterior
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bayes_mdn import metrics, plotting

NUM = 600


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def calibrated():
    """(predictive, y) with y drawn from the predictive itself: 0.3 N(-2, 0.5) + 0.7 N(3, 1)."""
    post = exact_posterior(np.log([[0.3, 0.7]]), [[-2.0, 3.0]], [[0.5, 1.0]])
    pred = post.predictive(np.zeros((NUM, 1)))
    return pred, pred.sample(jax.random.key(0), 1)[0]


def test_plot_pit_histogram_and_uniform_band(calibrated):
    pred, y = calibrated
    ax = plotting.plot_pit(pred, y, bins=12, band=0.99)
    values = metrics.pit(pred, y)[:, 0]
    bars, span = ax.patches[:12], ax.patches[12]
    expected, _ = np.histogram(values, bins=12, range=(0, 1), density=True)
    np.testing.assert_allclose([bar.get_height() for bar in bars], expected, rtol=1e-6)
    # The band: exact 0.5 % and 99.5 % binomial quantiles of one bin's count, as a density.
    low, high = stats.binom.ppf([0.005, 0.995], NUM, 1 / 12) * 12 / NUM
    extent = span.get_path().transformed(span.get_patch_transform()).get_extents()
    assert extent.y0 == pytest.approx(low) and extent.y1 == pytest.approx(high)
    assert low < 1 < high
    assert any(np.allclose(line.get_ydata(), 1.0) for line in ax.lines)
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_legend() is not None


def test_plot_pit_from_values_selects_an_output():
    rng = np.random.default_rng(0)
    values = np.stack([rng.uniform(size=300), rng.uniform(size=300) ** 2], axis=1)
    _, ax = plt.subplots()
    assert plotting.plot_pit(values, output=1, bins=10, ax=ax) is ax
    expected, _ = np.histogram(values[:, 1], bins=10, range=(0, 1), density=True)
    np.testing.assert_allclose([bar.get_height() for bar in ax.patches[:10]], expected)
    pooled = plotting.plot_pit(values, bins=10)
    expected, _ = np.histogram(values, bins=10, range=(0, 1), density=True)
    np.testing.assert_allclose([bar.get_height() for bar in pooled.patches[:10]], expected)


def test_plot_coverage_reliability_curve(calibrated):
    pred, y = calibrated
    levels = [0.9, 0.1, 0.5]
    ax = plotting.plot_coverage(pred, y, levels)
    diagonal, empirical = ax.lines
    np.testing.assert_array_equal(diagonal.get_xdata(), [0, 1])
    np.testing.assert_array_equal(diagonal.get_ydata(), [0, 1])
    result = metrics.coverage(pred, y, levels)
    np.testing.assert_array_equal(empirical.get_xdata(), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(empirical.get_ydata(), [result[0.1], result[0.5], result[0.9]])
    assert len(ax.collections) == 1  # the +-2 standard-error band
    # From a Coverage result, with the default levels and an HDR kind label.
    hdr = metrics.coverage(pred, y, (0.5, 0.9), kind="hdr")
    ax = plotting.plot_coverage(hdr)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), hdr.empirical)
    assert "hdr" in ax.get_xlabel()
    assert len(plotting.plot_coverage(pred, y).lines[1].get_xdata()) == 19


def test_plot_coverage_draws_one_line_per_output():
    result = metrics.Coverage(levels=np.array([0.5, 0.9]),
                              per_output=np.array([[0.4, 0.6], [0.85, 0.95]]), num_points=100,
                              kind="central")
    ax = plotting.plot_coverage(result)
    assert [line.get_label() for line in ax.lines[1:]] == ["output 0", "output 1"]
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), [0.6, 0.95])


def test_calibration_plot_errors(calibrated):
    pred, y = calibrated
    with pytest.raises(ValueError, match=r"needs the targets `y` .* plot_pit\(pred, y_test\)"):
        plotting.plot_pit(pred)
    with pytest.raises(ValueError, match="`y` is used only with a PredictiveMixture"):
        plotting.plot_pit(np.full(5, 0.5), y[:5])
    with pytest.raises(ValueError, match=r"PIT values must lie in \[0, 1\]"):
        plotting.plot_pit(np.array([0.5, 1.2]))
    with pytest.raises(ValueError, match=r"`output` must be an integer in \[0, 0\]"):
        plotting.plot_pit(np.full(5, 0.5), output=1)
    with pytest.raises(ValueError, match="`bins` must be at least 2"):
        plotting.plot_pit(np.full(5, 0.5), bins=1)
    with pytest.raises(ValueError, match="`band` must be a probability strictly between"):
        plotting.plot_pit(np.full(5, 0.5), band=1.0)
    with pytest.raises(ValueError, match=r"needs the targets `y` .* plot_coverage\(pred"):
        plotting.plot_coverage(pred)
    with pytest.raises(ValueError, match="a Coverage result already holds"):
        plotting.plot_coverage(metrics.coverage(pred, y, 0.5), y)
    with pytest.raises(TypeError, match="takes a PredictiveMixture or a "
                                        r"bayes_mdn.metrics.Coverage; got ndarray"):
        plotting.plot_coverage(np.zeros(3), y)
