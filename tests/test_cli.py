"""The bayes-mdn command line: demo end to end (small), CSV fit/predict, malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes_mdn.cli import main


def test_demo_writes_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--num-samples", "3000", "--num-steps", "200"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_log_likelihood", "test_log_likelihood", "optimal_log_likelihood",
                "fit_seconds"):
        assert np.isfinite(metrics[key])
    assert metrics["test_log_likelihood"] < metrics["optimal_log_likelihood"] + 0.05
    for name in ("training_curves.png", "conditional_density.png", "predictive_samples.png",
                 "mixtures.png", "demo.bmdn"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr()
    assert "Bayes-optimal" in printed.out
    assert "[map] step" in printed.err  # progress while training


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 300)
    y = np.where(rng.random(300) < 0.5, x, -x) + 0.1 * rng.normal(size=300)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="x,y", comments="")
    return path


def test_fit_then_predict_csv(tmp_path, csv_file):
    model_path = tmp_path / "fit.bmdn"
    assert main(["fit", str(csv_file), "--y", "y", "--out", str(model_path),
                 "--components", "2", "--hidden", "8", "--num-steps", "200"]) == 0
    predictions = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(csv_file), "--out", str(predictions)]) == 0
    table = np.loadtxt(predictions, delimiter=",", skiprows=1)
    assert table.shape == (300, 4)
    assert np.all(table[:, 1] <= table[:, 2]) and np.all(table[:, 2] <= table[:, 3])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("x,y\n", "no data rows"),
        ("x,y\n1,2\n3\n", "line 3: 1 fields, expected 2"),
        ("x,y\n1,2\n3,abc\n", "not a number: 'abc'"),
        ("x,z\n1,2\n3,4\n", "no column"),
    ],
)
def test_malformed_csv_exits_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["fit", str(path), "--y", "y", "--num-steps", "5"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none.bmdn"), str(tmp_path / "none.csv")]) == 2
    assert "No bayes_mdn file" in capsys.readouterr().err
