"""The photo-z field's metrics in bayes_mdn.metrics: hand computations, closed forms, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import exact_posterior
from scipy import stats

from bayes_mdn import _photoz_metrics, metrics

SQRT_PI = math.sqrt(math.pi)


def normal_pdf(grid, loc, scale):
    return np.exp(-0.5 * ((grid - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))


def normal_crps(y, loc, scale):
    z = (y - loc) / scale
    return scale * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / SQRT_PI)


# --------------------------------------------------------------------------- point metrics
def test_dz_is_the_error_scaled_by_one_plus_z():
    np.testing.assert_allclose(metrics.photoz_dz([1.1, 0.5, 2.0], [1.0, 1.0, 3.0]),
                               [0.05, -0.25, -0.25])


def test_sigma_iqr_nmad_and_bias_by_hand():
    # z_spec = 0: dz = z_phot. Quartiles of [0, 1, 2, 3, 10] are 1 and 3 (IQR 2); the
    # median is 2 and the absolute deviations [2, 1, 0, 1, 8] have median 1.
    z_phot, z_spec = np.array([0.0, 1.0, 2.0, 3.0, 10.0]), np.zeros(5)
    assert metrics.sigma_iqr(z_phot, z_spec) == pytest.approx(2 / 1.349)
    assert metrics.sigma_nmad(z_phot, z_spec) == pytest.approx(1.4826)
    assert metrics.median_bias(z_phot, z_spec) == pytest.approx(2.0)
    # dz = [0.1, 0, -0.1, 0.3] at z_spec = 1: median 0.05.
    assert metrics.median_bias([1.2, 1.0, 0.8, 1.6], np.ones(4)) == pytest.approx(0.05)


def test_outlier_rates_by_hand():
    # dz = [-0.1, 0, 0.01, 0.02, 0.2]: IQR 0.02, 3 sigma_IQR = 0.0445 < 0.06, so the RAIL
    # cut is 0.06 (two outliers) and the classic 0.15 (one).
    narrow = np.array([-0.1, 0.0, 0.01, 0.02, 0.2])
    assert metrics.outlier_rate(narrow, np.zeros(5)) == pytest.approx(0.4)
    assert metrics.outlier_rate(narrow, np.zeros(5), threshold="classic") == pytest.approx(0.2)
    # dz = [-0.3, -0.1, 0, 0.1, 0.5]: IQR 0.2, 3 sigma_IQR = 0.445 > 0.06, one RAIL outlier;
    # the classic cut 0.15 gives two; an explicit 0.05 gives four.
    wide = np.array([-0.3, -0.1, 0.0, 0.1, 0.5])
    assert metrics.outlier_rate(wide, np.zeros(5), threshold="rail") == pytest.approx(0.2)
    assert metrics.outlier_rate(wide, np.zeros(5), threshold="classic") == pytest.approx(0.4)
    assert metrics.outlier_rate(wide, np.zeros(5), threshold=0.05) == pytest.approx(0.8)


# --------------------------------------------------------------------------- PIT tests
def test_anderson_darling_statistic_by_hand():
    # u = (0.25, 0.75): A^2 = -2 - (1/2)[(ln .25 + ln .25) + 3 (ln .75 + ln .75)].
    expected = -2 - math.log(0.25) - 3 * math.log(0.75)
    statistic, _ = metrics.anderson_darling_uniform([0.75, 0.25])
    assert statistic == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("critical", "level"), [(1.933, 0.10), (2.492, 0.05), (3.857, 0.01)])
def test_anderson_darling_pvalue_at_published_critical_values(critical, level):
    # Asymptotic critical values of A^2 with known parameters (Stephens 1974): the limiting
    # tail probability there is the level, to the table's 3 decimals.
    cdf = float(_photoz_metrics._adinf(critical))
    assert 1 - cdf == pytest.approx(level, abs=1.5e-3)


def test_anderson_darling_pvalue_matches_simulation():
    # P(A^2 >= a) at n = 20, the formula with its finite-n correction, against 4000
    # simulated uniform samples (Monte Carlo standard error below 0.008; tolerance 0.03).
    rng = np.random.default_rng(1)
    simulated = np.array([metrics.anderson_darling_uniform(rng.uniform(size=20))[0]
                          for _ in range(4000)])
    for a in (0.5, 1.0, 2.0, 3.0):
        tail = float(np.mean(simulated >= a))
        cdf = float(_photoz_metrics._adinf(a))
        cdf += _photoz_metrics._aderrfix(20, cdf)
        assert 1 - cdf == pytest.approx(tail, abs=0.03)


def test_pit_tests_match_ks_uniform_scipy_and_the_cvm_formula():
    u = np.random.default_rng(2).beta(1.3, 1.0, size=400)
    result = metrics.pit_tests(u)
    ks = stats.kstest(u, "uniform")
    assert result["ks_statistic"] == pytest.approx(ks.statistic, rel=1e-10)
    assert result["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-3, abs=1e-6)
    ordered = np.sort(u)
    n = u.size
    cvm = 1 / (12 * n) + np.sum(((2 * np.arange(1, n + 1) - 1) / (2 * n) - ordered) ** 2)
    assert result["cvm_statistic"] == pytest.approx(cvm, rel=1e-10)
    assert set(result) == {"ks_statistic", "ks_pvalue", "cvm_statistic", "cvm_pvalue",
                           "ad_statistic", "ad_pvalue"}
    # Uniform values pass all three; a U shape (over-confident p(z)) fails all three.
    uniform = metrics.pit_tests(np.random.default_rng(3).uniform(size=2000))
    u_shaped = metrics.pit_tests(np.random.default_rng(3).beta(0.6, 0.6, size=2000))
    for name in ("ks", "cvm", "ad"):
        assert uniform[f"{name}_pvalue"] > 0.01
        assert u_shaped[f"{name}_pvalue"] < 1e-4


# --------------------------------------------------------------------------- gridded p(z)
def test_gridded_density_cdf_and_crps_of_a_uniform_by_hand():
    grid = np.linspace(0.0, 1.0, 11)
    pdf = np.full((3, 11), 7.0)  # any constant: normalised to 1 on [0, 1]
    z = np.array([0.25, 0.5, 0.93])
    np.testing.assert_allclose(metrics.gridded_density(pdf, grid, z), 1.0)
    np.testing.assert_allclose(metrics.gridded_cdf(pdf, grid, z), z, atol=1e-12)
    # CRPS of U(0, 1) at y: y**3 / 3 + (1 - y)**3 / 3.
    np.testing.assert_allclose(metrics.gridded_crps(pdf, grid, z), (z**3 + (1 - z) ** 3) / 3,
                               atol=1e-12)


def test_gridded_crps_and_cdf_of_a_normal_match_closed_forms():
    grid = np.linspace(-1.0, 3.0, 801)
    locs, scales = np.array([0.8, 1.0, 1.5]), np.array([0.05, 0.1, 0.3])
    pdf = normal_pdf(grid[None], locs[:, None], scales[:, None])
    z = np.array([0.83, 0.5, 2.0])
    np.testing.assert_allclose(metrics.gridded_crps(pdf, grid, z),
                               normal_crps(z, locs, scales), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(metrics.gridded_cdf(pdf, grid, z),
                               stats.norm.cdf(z, locs, scales), atol=2e-4)


def test_cde_loss_by_hand():
    # Uniform on [0, 2]: integral p^2 = 1/2 and p(z) = 1/2, so the loss is 1/2 - 1.
    grid = np.linspace(0.0, 2.0, 5)
    assert metrics.cde_loss(np.ones((4, 5)), grid, [0.1, 0.5, 1.0, 1.9]) == pytest.approx(-0.5)
    # N(mu, s^2) at z = mu: 1 / (2 s sqrt(pi)) - 2 / (s sqrt(2 pi)).
    grid = np.linspace(-2.0, 2.0, 4001)
    s = 0.2
    loss = metrics.cde_loss(normal_pdf(grid, 0.0, s)[None], grid, [0.0])
    assert loss == pytest.approx(1 / (2 * s * SQRT_PI) - 2 / (s * math.sqrt(2 * math.pi)),
                                 rel=1e-5)


# --------------------------------------------------------------------------- report
def test_photoz_report_of_a_predictive_and_of_its_grid_agree():
    post = exact_posterior(np.log([[0.3, 0.7]]), [[0.5, 1.2]], [[0.05, 0.2]])
    z_true = np.random.default_rng(4).uniform(0.3, 1.8, size=300)
    pred = post.predictive(np.zeros((300, 1)))
    grid = np.linspace(0.0, 3.0, 601)
    exact = metrics.photoz_report(pred, z_true, grid=grid)
    gridded = metrics.photoz_report(np.exp(pred.log_prob_grid(grid)), z_true, grid=grid)
    assert exact["density"] == "exact" and gridded["density"] == "grid"
    json.dumps(exact), json.dumps(gridded)  # JSON-ready
    assert set(exact) == set(gridded)
    assert exact["log_score"] == pytest.approx(metrics.log_score(pred, z_true))
    assert exact["crps"] == pytest.approx(float(metrics.crps(pred, z_true)[0]))
    for name, tolerance in [("log_score", 1e-3), ("crps", 1e-4), ("cde_loss", 1e-3),
                            ("pit_ks_statistic", 1e-3)]:
        assert gridded[name] == pytest.approx(exact[name], abs=tolerance), name
    # The mode of every p(z) is 0.5 (the narrow component): dz = (0.5 - z) / (1 + z).
    dz = (0.5 - z_true) / (1 + z_true)
    assert exact["sigma_nmad"] == pytest.approx(1.4826 * np.median(np.abs(dz - np.median(dz))))
    assert exact["bias"] == pytest.approx(np.median(dz))
    assert exact["outlier_rate_0.15"] == pytest.approx(np.mean(np.abs(dz) > 0.15))
    point = metrics.photoz_report(pred, z_true, grid=grid, z_phot=z_true)
    assert point["sigma_iqr"] == 0 and point["outlier_rate"] == 0


def test_photoz_report_floors_zero_densities_in_the_log_score():
    grid = np.linspace(0.0, 1.0, 11)
    pdf = np.zeros((2, 11))
    pdf[:, :5] = 1.0  # mass on [0, 0.4] (and the ramp to 0.5)
    report = metrics.photoz_report(pdf, [0.2, 0.9], grid=grid, min_density=1e-3)
    assert report["num_below_floor"] == 1
    assert report["log_score"] == pytest.approx(0.5 * (math.log(1 / 0.45) + math.log(1e-3)))


# --------------------------------------------------------------------------- errors
def test_bad_inputs_are_rejected():
    grid = np.linspace(0.0, 1.0, 11)
    with pytest.raises(TypeError, match="`z_phot` must be a 1-D array of numbers"):
        metrics.sigma_nmad(["a", "b"], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"`z_phot` must be a non-empty 1-D array"):
        metrics.sigma_iqr(np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="`z_spec` contains 1 NaN"):
        metrics.median_bias([0.1, 0.2], [0.1, np.nan])
    with pytest.raises(ValueError, match="must have the same length; got 2 and 3"):
        metrics.photoz_dz([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="`z_spec` must be greater than -1"):
        metrics.photoz_dz([0.1], [-1.0])
    with pytest.raises(ValueError, match="Unknown threshold 'lsst'"):
        metrics.outlier_rate([0.1], [0.1], threshold="lsst")
    with pytest.raises(ValueError, match="`threshold` must be a finite positive"):
        metrics.outlier_rate([0.1], [0.1], threshold=-0.1)
    with pytest.raises(ValueError, match=r"`pit_values` must lie in \[0, 1\]"):
        metrics.pit_tests([0.5, 1.2])
    with pytest.raises(ValueError, match=r"`values` must lie in \[0, 1\]"):
        metrics.anderson_darling_uniform([-0.1, 0.5])
    with pytest.raises(ValueError, match="at least 2 strictly increasing"):
        metrics.cde_loss(np.ones((1, 3)), [0.0, 0.2, 0.1], [0.1])
    with pytest.raises(TypeError, match="`pdf` must be an array of densities"):
        metrics.cde_loss([["x"] * 11], grid, [0.1])
    with pytest.raises(ValueError, match=r"`pdf` must have shape \(N, 11\)"):
        metrics.gridded_crps(np.ones((2, 10)), grid, [0.1, 0.2])
    with pytest.raises(ValueError, match="finite, non-negative densities"):
        metrics.gridded_cdf(-np.ones((1, 11)), grid, [0.1])
    with pytest.raises(ValueError, match="1 rows with no mass"):
        metrics.gridded_density(np.zeros((1, 11)), grid, [0.1])
    with pytest.raises(ValueError, match=r"one value per row of `pdf` \(1\); got 2"):
        metrics.gridded_density(np.ones((1, 11)), grid, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"inside the grid \[0, 1\]"):
        metrics.gridded_density(np.ones((1, 11)), grid, [1.5])
    with pytest.raises(ValueError, match="`min_density` must be a finite positive"):
        metrics.photoz_report(np.ones((1, 11)), [0.5], grid=grid, min_density=0.0)


def test_bad_predictive_inputs_are_rejected():
    post = exact_posterior(np.log([[1.0]]), [[0.5]], [[0.1]])
    pred = post.predictive(np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"one value per input of the predictive \(3\); got 2"):
        metrics.photoz_report(pred, [0.1, 0.2])
    two_outputs = _two_output_predictive()
    with pytest.raises(ValueError, match="needs a predictive of one output"):
        metrics.photoz_report(two_outputs, [0.1, 0.2])


def _two_output_predictive():
    import bayes_mdn as bm
    from bayes_mdn.scaling import Standardizer

    model = bm.MDN(num_components=1, hidden_sizes=())
    draws = {site.name: np.zeros((1, 1, *site.shape), np.float32)
             for site in model.sites(1, 2)}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(2), np.ones(2))
    post = bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)
    return post.predictive(np.zeros((2, 1)))
