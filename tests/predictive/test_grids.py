"""The one grid query (bayes_mdn.predictive.grids) that the predictive, recalibrated and
stacked predictives share."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bayes_mdn.predictive.grids import hdr_on_grid, modes_on_grid


def test_modes_and_hdr_of_a_bimodal_density_on_a_grid():
    grid = np.linspace(-8.0, 10.0, 4001)[None]
    density = 0.4 * stats.norm.pdf(grid, -3.0, 1.0) + 0.6 * stats.norm.pdf(grid, 4.0, 0.5)
    [modes] = modes_on_grid(grid, np.log(density))
    np.testing.assert_allclose(modes[:, 0], [4.0, -3.0], atol=1e-3)  # highest first
    [region] = hdr_on_grid(grid, density, 0.9)
    assert region.shape == (2, 2)  # two disjoint intervals
    mass = sum(0.4 * np.diff(stats.norm.cdf(row, -3.0, 1.0))[0]
               + 0.6 * np.diff(stats.norm.cdf(row, 4.0, 0.5))[0] for row in region)
    assert mass == pytest.approx(0.9, abs=1e-3)


def test_integer_grids_give_integer_modes_and_runs():
    grid = np.arange(0.0, 30.0)[None]
    mass = stats.poisson(6.5).pmf(grid)
    [modes] = modes_on_grid(grid, np.log(mass), discrete=True)
    np.testing.assert_array_equal(modes[:, 0], [6.0])  # p(6) = p(7): the smaller is kept
    [region] = hdr_on_grid(grid, mass, 0.9, discrete=True)
    assert region.shape == (1, 2) and np.all(region == np.floor(region))
    assert stats.poisson(6.5).pmf(np.arange(region[0, 0], region[0, 1] + 1)).sum() >= 0.9
    # One integer is a grid too (a nearly degenerate count predictive).
    assert hdr_on_grid([[0.0]], [[1.0]], 0.5, discrete=True)[0].tolist() == [[0.0, 0.0]]


def test_grid_queries_check_their_input():
    with pytest.raises(ValueError, match=r"one shape \(M, G\) with at least 2 points"):
        modes_on_grid(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"one shape \(M, G\)"):
        hdr_on_grid(np.zeros(5), np.zeros(5), 0.5)
    with pytest.raises(ValueError, match="increasing along each row"):
        hdr_on_grid([[0.0, 2.0, 1.0]], [[1.0, 1.0, 1.0]], 0.5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        hdr_on_grid([[0.0, 1.0, 2.0]], [[1.0, 1.0, 1.0]], 1.0)
