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
    assert table.shape == (300, 4)  # mean and three quantiles; no id column in this file
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
    table = np.column_stack([np.arange(60), rng.normal(size=60), rng.normal(size=60),
                             rng.normal(size=60)])
    np.savetxt(data, table, delimiter=",", header="id,a,b,target", comments="",
               fmt=["%d", "%.17g", "%.17g", "%.17g"])
    model_path = folder / "fit.bmdn"
    assert main(["fit", str(data), "--y", "target", "--out", str(model_path),
                 "--components", "2", "--hidden", "4", "--num-steps", "20"]) == 0
    return model_path, table


def test_fit_records_column_names_and_predict_uses_them(tmp_path, fitted_model):
    import bayes_mdn as bm

    model_path, table = fitted_model
    posterior = bm.load(model_path)
    assert posterior.info["feature_names"] == ["a", "b"]  # "id" is dropped by default
    assert posterior.info["target_names"] == ["target"]
    assert not (tmp_path / "fit.bmdn.columns.json").exists()
    # Columns in another order, plus an extra one: selected by name.
    shuffled = tmp_path / "new.csv"
    np.savetxt(shuffled, np.column_stack([table[:5, 3], table[:5, 2], table[:5, 1]]),
               delimiter=",", header="other,b,a", comments="")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(shuffled), "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0].replace('"', "") == (
        "mean_target,q0.05_target,q0.5_target,q0.95_target")
    predicted = np.loadtxt(out, delimiter=",", skiprows=1)
    expected = posterior.predictive(table[:5, 1:3]).mean()[:, 0]
    np.testing.assert_allclose(predicted[:, 0], expected, rtol=1e-6)


def test_predict_parquet_keeps_ids_and_every_option(tmp_path, fitted_model):
    import pandas as pd

    import bayes_mdn as bm

    model_path, table = fitted_model
    source = tmp_path / "catalogue.parquet"
    pd.DataFrame({"id": table[:, 0].astype(int) + 7, "a": table[:, 1], "b": table[:, 2]}
                 ).to_parquet(source)
    out = tmp_path / "pz.parquet"
    assert main(["predict", str(model_path), str(source), "--out", str(out), "--outputs",
                 "median,interval,samples", "--quantiles", "0.1,0.9", "--grid=-2:2:3",
                 "--reduce", "2", "--batch-rows", "16", "--num-samples", "2",
                 "--no-progress"]) == 0
    frame = pd.read_parquet(out)
    np.testing.assert_array_equal(frame["id"], table[:, 0].astype(int) + 7)
    assert list(frame.columns) == [
        "id", "median_target", "lower0.9_target", "upper0.9_target", "sample1_target",
        "sample2_target", "weight1_target", "loc1_target", "scale1_target", "weight2_target",
        "loc2_target", "scale2_target", "log_density_-2", "log_density_0", "log_density_2"]
    posterior = bm.load(model_path)
    np.testing.assert_allclose(frame["median_target"],
                               posterior.predictive(table[:, 1:3]).quantiles(0.5)[0, :, 0],
                               rtol=1e-6, atol=1e-6)


def _assert_one_line_error(capsys, message):
    error = capsys.readouterr().err.strip()
    assert message in error, error
    assert "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,c\n1,2\n", "has no column(s) ['b']; columns are ['a', 'c']"),
        ("a,b\n1,x\n", "CSV conversion error to double: invalid value 'x'"),
        ("", "is empty"),
        ("a,b\n1\n", "Expected 2 columns, got 1"),
        ("a,b,c\n1,2,3\n4,5\n", "Expected 3 columns, got 2"),
        ("a,b\n1,\n", "input column 'b' has a missing value in data row 1"),
        ("a,b\n", "has no data rows"),
    ],
)
def test_malformed_predict_input_exits_2_and_writes_nothing(tmp_path, capsys, fitted_model,
                                                            content, message):
    model_path, _ = fitted_model
    path = tmp_path / "bad.csv"
    path.write_text(content)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(model_path), str(path), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_truncated_parquet_exits_2_and_writes_nothing(tmp_path, capsys, fitted_model):
    import pandas as pd

    model_path, table = fitted_model
    source = tmp_path / "in.parquet"
    pd.DataFrame({"a": table[:, 1], "b": table[:, 2]}).to_parquet(source)
    content = source.read_bytes()
    source.write_bytes(content[: len(content) - 40])
    assert main(["predict", str(model_path), str(source), "--out",
                 str(tmp_path / "p.csv")]) == 2
    _assert_one_line_error(capsys, "is not a readable Parquet file (truncated or corrupted?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
    assert main(["evaluate", str(model_path), str(source)]) == 2
    _assert_one_line_error(capsys, "is not a readable Parquet file")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--outputs", "mean,average"], "--outputs: unknown summary ['average']"),
        (["--quantiles", "0.1,x"], "--quantiles must be comma-separated numbers"),
        (["--quantiles", "0.1,1.5"], "must be levels strictly between 0 and 1"),
        (["--grid", "0:1"], "--grid must be start:stop:num"),
        (["--batch-rows", "0"], "--batch-rows must be at least 1"),
        (["--keep", "name"], "has no column(s) ['name']"),
        (["--x", "a"], "`inputs` names 1 columns; the model was fitted on 2 features"),
        (["--out", "p.txt2"], "Cannot tell the output format"),
        (["--format", "xls"], "argument --format: invalid choice: 'xls'"),
    ],
)
def test_bad_predict_options_exit_2(tmp_path, capsys, fitted_model, extra, message):
    model_path, table = fitted_model
    source = tmp_path / "in.csv"
    np.savetxt(source, table[:4, 1:3], delimiter=",", header="a,b", comments="")
    arguments = ["predict", str(model_path), str(source), "--out", str(tmp_path / "p.parquet")]
    if "--out" in extra:
        arguments = [*arguments[:3], "--out", str(tmp_path / extra[1])]
        extra = []
    assert main([*arguments, *extra]) == 2
    _assert_one_line_error(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_predict_with_a_non_bayes_mdn_file_exits_2(tmp_path, capsys, csv_file):
    fake = tmp_path / "fake.bmdn"
    fake.write_text("x,y\n1,2\n")
    assert main(["predict", str(fake), str(csv_file)]) == 2
    _assert_one_line_error(capsys, "is not a readable bayes_mdn file")


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("ensemble", ["--num-members", "2", "--num-steps", "10"]),
        pytest.param("svi", ["--guide", "lowrank", "--num-steps", "10", "--num-draws", "4"],
                     marks=pytest.mark.slow),
        pytest.param("laplace", ["--num-steps", "10", "--num-draws", "4", "--hessian",
                                 "fisher"], marks=pytest.mark.slow),
        pytest.param("nuts", ["--num-chains", "1", "--num-warmup", "5", "--num-samples", "3"],
                     marks=pytest.mark.slow),
    ],
)
def test_fit_every_method(tmp_path, csv_file, method, extra):
    import bayes_mdn as bm

    out = tmp_path / "fit.bmdn"
    assert main(["fit", str(csv_file), "--y", "y", "--method", method, "--components", "1",
                 "--hidden", "2", "--activation", "relu", "--prior", "normal",
                 "--prior-scale", "2", "--out", str(out), *extra]) == 0
    posterior = bm.load(out)
    assert posterior.method == method
    assert posterior.model.activation == "relu" and posterior.model.hidden_sizes == (2,)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--guide", "mvn"], "--guide does not apply to --method map"),
        (["--num-chains", "2"], "--num-chains does not apply to --method map"),
        (["--method", "bayes"], "argument --method: invalid choice: 'bayes'"),
        (["--family", "cauchy"], "argument --family: invalid choice: 'cauchy'"),
        (["--prior", "flat", "--prior-scale", "1"], "--prior-scale does not apply"),
        (["--prior-scale", "-1"], "--prior-scale must be positive"),
        (["--method", "svi", "--prior", "flat"], "needs a proper prior"),
        (["--drop", "w"], "has no column(s) ['w']"),
        (["--x", "x", "--y", "x"], "are both inputs (--x) and targets (--y)"),
        (["--num-steps", "abc"], "argument --num-steps: invalid int value: 'abc'"),
    ],
)
def test_bad_fit_options_exit_2(tmp_path, capsys, csv_file, extra, message):
    arguments = ["fit", str(csv_file), "--y", "y", "--num-steps", "5", "--out",
                 str(tmp_path / "fit.bmdn"), *extra]
    assert main(arguments) == 2
    _assert_one_line_error(capsys, message)
    assert not (tmp_path / "fit.bmdn").exists()


def test_validation_refits_by_default_and_no_refit_keeps_the_stopped_fit(tmp_path, csv_file):
    import bayes_mdn as bm

    common = ["fit", str(csv_file), "--y", "y", "--num-steps", "30", "--hidden", "2",
              "--validation", "0.2", "--patience", "3"]
    assert main([*common, "--out", str(tmp_path / "refit.bmdn")]) == 0
    refit = bm.load(tmp_path / "refit.bmdn")
    assert refit.info["refit"] is True
    assert "validation_log_likelihood" in refit.history
    assert main([*common, "--no-refit", "--out", str(tmp_path / "kept.bmdn")]) == 0
    kept = bm.load(tmp_path / "kept.bmdn")
    assert not kept.info.get("refit")
    assert "validation_log_likelihood" in kept.history


def test_fit_parquet_and_warnings_reach_stderr(tmp_path, capsys, monkeypatch):
    import warnings

    import pandas as pd

    import bayes_mdn as bm

    rng = np.random.default_rng(3)
    source = tmp_path / "train.parquet"
    pd.DataFrame({"id": [f"g{i}" for i in range(80)], "x": rng.normal(size=80),
                  "y": rng.normal(size=80)}).to_parquet(source)
    original = bm.MDN.fit

    def warning_fit(self, *args, **kwargs):
        warnings.warn("column 'x' holds the sentinel 99.0\nin 3 rows", UserWarning,
                      stacklevel=2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bm.MDN, "fit", warning_fit)
    out = tmp_path / "fit.bmdn"
    assert main(["fit", str(source), "--y", "y", "--num-steps", "5", "--hidden", "2",
                 "--out", str(out)]) == 0  # the string id column is dropped, never parsed
    err = capsys.readouterr().err
    assert "bayes-mdn fit: warning: UserWarning: column 'x' holds the sentinel 99.0 in 3 rows" \
        in err.splitlines()
    assert bm.load(out).info["feature_names"] == ["x"]


def test_evaluate_writes_metrics_and_figures(tmp_path, capsys, fitted_model):
    model_path, table = fitted_model
    data = tmp_path / "test.csv"
    np.savetxt(data, table[:, 1:], delimiter=",", header="a,b,target", comments="")
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(model_path), str(data), "--out", str(out),
                 "--batch-rows", "16", "--levels", "0.5,0.9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(capsys.readouterr().out)
    assert metrics["num_points"] == 60
    for name in ("log_score", "crps", "rmse", "pit_ks_pvalue", "pit_cvm_pvalue"):
        assert np.all(np.isfinite(metrics[name]))
    assert set(metrics["coverage"]) == {"0.5", "0.9"}
    assert 0 <= metrics["coverage"]["0.9"] <= 1
    # Figures: the calibration pair and the conditional densities.
    assert (out / "calibration.png").stat().st_size > 0
    assert (out / "conditional_density.png").stat().st_size > 0
    # The same metrics as the library's in-memory calibration report.
    import bayes_mdn as bm

    pred = bm.load(model_path).predictive(table[:, 1:3])
    report = bm.metrics.calibration_report(pred, table[:, 3], levels=[0.5, 0.9])
    assert metrics["log_score"] == pytest.approx(report["log_score"], rel=1e-6)
    assert metrics["crps"] == pytest.approx(report["crps"], rel=1e-5)
    assert metrics["rmse"] == pytest.approx(report["rmse"], rel=1e-6)
    assert metrics["coverage"]["0.9"] == pytest.approx(report["coverage"][0.9])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--y", "nothere"], "has no column(s) ['nothere']"),
        (["--levels", "0.9,1"], "--levels must lie strictly between 0 and 1"),
    ],
)
def test_bad_evaluate_input_exits_2(tmp_path, capsys, fitted_model, extra, message):
    model_path, table = fitted_model
    data = tmp_path / "test.csv"
    np.savetxt(data, table[:, 1:], delimiter=",", header="a,b,target", comments="")
    assert main(["evaluate", str(model_path), str(data), "--out", str(tmp_path / "ev"),
                 *extra]) == 2
    _assert_one_line_error(capsys, message)
    assert not (tmp_path / "ev").exists()


def test_info_reports_the_fit(capsys, fitted_model):
    model_path, _ = fitted_model
    assert main(["info", str(model_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "map"
    assert report["model"]["num_components"] == 2 and report["model"]["hidden_sizes"] == [4]
    assert report["num_features"] == 2 and report["feature_names"] == ["a", "b"]
    assert report["training_rows"] == 60
    assert "effective_components" in report["diagnostics"]
    assert main(["info", str(model_path), "--no-diagnostics"]) == 0
    text = capsys.readouterr().out
    assert "method: map" in text and "diagnostics" not in text
    assert main(["info", str(model_path) + ".missing"]) == 2
    _assert_one_line_error(capsys, "No bayes_mdn file")


def test_predict_to_qp_reads_back_with_qp(tmp_path, capsys, fitted_model):
    qp = pytest.importorskip("qp")
    import pandas as pd

    import bayes_mdn as bm

    model_path, table = fitted_model
    source = tmp_path / "catalogue.parquet"
    ids = table[:, 0].astype(int) + 7
    pd.DataFrame({"id": ids, "a": table[:, 1], "b": table[:, 2]}).to_parquet(source)
    out = tmp_path / "pz.hdf5"
    # MAP with K = 2: four components hold the predictive exactly.
    assert main(["predict", str(model_path), str(source), "--out", str(out), "--reduce", "4",
                 "--batch-rows", "16", "--no-progress"]) == 0
    assert "wrote 60 PDFs" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue.parquet", "pz.hdf5"]
    ensemble = qp.read(str(out))
    assert ensemble.npdf == 60
    np.testing.assert_array_equal(np.ravel(ensemble.ancil["id"]), ids)
    grid = np.linspace(-6, 6, 121)
    expected = np.exp(bm.load(model_path).predictive(table[:, 1:3]).log_prob_grid(grid))
    np.testing.assert_allclose(ensemble.pdf(grid), expected, rtol=1e-4, atol=1e-7)
    # --format qp with another suffix is refused; --outputs does not apply.
    assert main(["predict", str(model_path), str(source), "--format", "qp", "--out",
                 str(tmp_path / "pz.parquet")]) == 2
    _assert_one_line_error(capsys, r"name the file *.hdf5")
    assert main(["predict", str(model_path), str(source), "--out", str(tmp_path / "b.hdf5"),
                 "--outputs", "mean"]) == 2
    _assert_one_line_error(capsys, "--outputs does not apply to a qp file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue.parquet", "pz.hdf5"]
