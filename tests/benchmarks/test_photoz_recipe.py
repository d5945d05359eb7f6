"""The photo-z benchmark's recipe helpers (benchmarks/photoz.py): noise augmentation of the
training rows, post-hoc sharpening of gridded p(z), and p(z) from a log(1 + z) target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import photoz


def _frame(num_rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    columns = {}
    for band in photoz.BANDS:
        columns[f"mag_{band}_lsst"] = rng.uniform(20.0, 26.0, num_rows)
        columns[f"mag_err_{band}_lsst"] = rng.uniform(0.01, 0.3, num_rows)
    columns["mag_u_lsst"][:50] = 99.0  # non-detections
    columns["redshift"] = rng.uniform(0.0, 3.0, num_rows)
    return pd.DataFrame(columns)


def test_augment_rows_redraws_detected_magnitudes_within_their_errors():
    frame = _frame()
    out = photoz.augment_rows(frame, 3, rng=np.random.default_rng(0))
    assert len(out) == 4 * len(frame)
    pd.testing.assert_frame_equal(out.iloc[:len(frame)], frame)  # the originals first
    copies = out.iloc[len(frame):]
    # Redshifts, errors and non-detections are copied unchanged.
    np.testing.assert_array_equal(copies["redshift"], np.tile(frame["redshift"], 3))
    np.testing.assert_array_equal(copies["mag_err_g_lsst"], np.tile(frame["mag_err_g_lsst"], 3))
    assert np.all(copies["mag_u_lsst"].to_numpy().reshape(3, -1)[:, :50] == 99.0)
    # Each detected magnitude moves by its own error times a standard normal: the
    # standardised shifts of 6 x 3 x 400 - 150 values pass a KS test against N(0, 1)
    # at the 0.1 % level and are not all zero.
    shifts = []
    for band in photoz.BANDS:
        mag = frame[f"mag_{band}_lsst"].to_numpy()
        err = frame[f"mag_err_{band}_lsst"].to_numpy()
        moved = copies[f"mag_{band}_lsst"].to_numpy().reshape(3, -1)
        detected = mag < 90
        shifts.append(((moved - mag) / err)[:, detected].ravel())
    shifts = np.concatenate(shifts)
    assert stats.kstest(shifts, "norm").pvalue > 1e-3
    assert np.std(shifts) > 0.5


def test_augment_rows_zero_copies_returns_the_frame():
    frame = _frame(10)
    assert photoz.augment_rows(frame, 0, rng=np.random.default_rng(0)) is frame


def test_sharpen_renormalises_and_keeps_the_mode():
    grid = photoz.GRID
    pdf = np.stack([stats.norm.pdf(grid, 1.0, 0.2), 0.5 * stats.norm.pdf(grid, 0.5, 0.1)
                    + 0.5 * stats.norm.pdf(grid, 2.0, 0.3)])
    np.testing.assert_allclose(photoz.sharpen(pdf, 1.0),
                               pdf / np.trapezoid(pdf, grid, axis=1)[:, None], rtol=1e-12)
    sharp = photoz.sharpen(pdf, 1.5)
    np.testing.assert_allclose(np.trapezoid(sharp, grid, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(np.argmax(sharp, axis=1), np.argmax(pdf, axis=1))
    # A Normal to the power a is a Normal with scale / sqrt(a).
    np.testing.assert_allclose(sharp[0], stats.norm.pdf(grid, 1.0, 0.2 / np.sqrt(1.5)),
                               atol=1e-6)


class _LogNormalTarget:
    """A stand-in predictive of t = log(1 + z): Normal(0.5, 0.1) in t."""

    def log_prob_grid(self, grid):
        return stats.norm.logpdf(np.atleast_2d(grid), 0.5, 0.1)


def test_redshift_pdf_applies_the_jacobian_of_log1p():
    pdf = photoz.redshift_pdf(_LogNormalTarget(), "log1p")
    expected = stats.lognorm.pdf(1.0 + photoz.GRID, 0.1, scale=np.exp(0.5))  # 1 + z
    np.testing.assert_allclose(pdf[0], expected, rtol=1e-10, atol=1e-300)
    assert np.trapezoid(pdf[0], photoz.GRID) == pytest.approx(1.0, abs=1e-3)


def test_redshift_pdf_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="target must be 'z' or 'log1p'"):
        photoz.redshift_pdf(_LogNormalTarget(), "log")
