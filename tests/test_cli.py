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
    assert "map" in printed.err and "200/200" in printed.err  # progress bar while training


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
        ("\n\n  \n", "is empty"),
        ("x,y\n1,2\n3,4,5\n", "line 3: 3 fields, expected 2"),
        ("x,y\n1,2\n,4\n", "line 3, column 'x': not a number: ''"),
        ("x,y\n1,2\n3, \n", "line 3, column 'y': not a number: ' '"),
        ("x,y\n1,2\n3,nan\n", "line 3, column 'y': not a finite number: 'nan'"),
        ("x,y\n1,-inf\n3,4\n", "line 2, column 'y': not a finite number: '-inf'"),
        ("x,y\n1,2\n3,1e999\n", "not a finite number: '1e999'"),
        ("x,,y\n1,2,3\n", r"line 1: column(s) [2] have no name"),
        ("x,y,x\n1,2,3\n", "line 1: repeated column name(s) ['x']"),
        ('x,y\n1,"2\n', "is not a readable CSV file: unexpected end of data"),
        ('x,y\n1,"2"3\n', "is not a readable CSV file: ',' expected after '\"'"),
        (b"x,y\n1,2\x00\n", r"not a number: '2\x00'"),
        (b"x,y\n\xff\xfe,2\n", "is not a UTF-8 text CSV file"),
        ("\ufeffx,y\n1,2\n3,4\n", None),  # a UTF-8 byte-order mark is fine
    ],
)
def test_malformed_csv_exits_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    if message is None:  # well-formed after all: fits
        assert main(["fit", str(path), "--y", "y", "--num-steps", "5", "--hidden", "2",
                     "--components", "1", "--out", str(tmp_path / "fit.bmdn")]) == 0
        return
    assert main(["fit", str(path), "--y", "y", "--num-steps", "5"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none.bmdn"), str(tmp_path / "none.csv")]) == 2
    assert "No bayes_mdn file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hidden", "8,abc"], "--hidden must be comma-separated layer widths such as 32,32; "
                                "got '8,abc'"),
        (["--components", "0"], "`num_components` must be at least 1; got 0."),
        (["--num-steps", "-1"], "`num_steps` must be at least 1; got -1."),
        (["--y", "x,y"], "no input columns left; name them with --x"),
        (["--x", "w"], "has no column(s) ['w']"),
    ],
)
def test_bad_fit_arguments_exit_2(tmp_path, capsys, csv_file, extra, message):
    arguments = ["fit", str(csv_file), "--y", "y", "--num-steps", "5",
                 "--out", str(tmp_path / "fit.bmdn"), *extra]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_fit_output_is_a_directory_exits_2(tmp_path, capsys, csv_file):
    assert main(["fit", str(csv_file), "--y", "y", "--num-steps", "5", "--hidden", "2",
                 "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_single_data_row_exits_2(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("x,y\n1,2\n")
    assert main(["fit", str(path), "--y", "y", "--num-steps", "5"]) == 2
    assert "fitting needs at least 2 rows" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_model")
    rng = np.random.default_rng(1)
    data = folder / "train.csv"
    table = np.column_stack([rng.normal(size=60), rng.normal(size=60), rng.normal(size=60)])
    np.savetxt(data, table, delimiter=",", header="a,b,target", comments="")
    model_path = folder / "fit.bmdn"
    assert main(["fit", str(data), "--y", "target", "--out", str(model_path),
                 "--components", "2", "--hidden", "4", "--num-steps", "20"]) == 0
    return model_path, table


def test_fit_records_column_names_and_predict_uses_them(tmp_path, fitted_model):
    import bayes_mdn as bm

    model_path, table = fitted_model
    posterior = bm.load(model_path)
    assert posterior.info["feature_names"] == ["a", "b"]
    assert posterior.info["target_names"] == ["target"]
    assert not (tmp_path / "fit.bmdn.columns.json").exists()
    # Columns in another order, plus an extra one: selected by name.
    shuffled = tmp_path / "new.csv"
    np.savetxt(shuffled, np.column_stack([table[:5, 2], table[:5, 1], table[:5, 0]]),
               delimiter=",", header="other,b,a", comments="")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(shuffled), "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == ("mean_target,q05_target,median_target,"
                                               "q95_target")
    predicted = np.loadtxt(out, delimiter=",", skiprows=1)
    expected = posterior.predictive(table[:5, :2]).mean()[:, 0]
    np.testing.assert_allclose(predicted[:, 0], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,c\n1,2\n", "has no column(s) ['b']; columns are ['a', 'c']"),
        ("a,b\n1,x\n", "line 2, column 'b': not a number: 'x'"),
        ("", "is empty"),
        ("a,b\n1\n", "line 2: 1 fields, expected 2"),
    ],
)
def test_malformed_predict_csv_exits_2(tmp_path, capsys, fitted_model, content, message):
    model_path, _ = fitted_model
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["predict", str(model_path), str(path), "--out", str(tmp_path / "p.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_predict_with_a_non_bayes_mdn_file_exits_2(tmp_path, capsys, csv_file):
    fake = tmp_path / "fake.bmdn"
    fake.write_text("x,y\n1,2\n")
    assert main(["predict", str(fake), str(csv_file)]) == 2
    error = capsys.readouterr().err.strip()
    assert "is not a readable bayes_mdn file" in error and "\n" not in error
