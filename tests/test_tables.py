"""Streaming prediction of CSV/Parquet tables: bayes_mdn.tables.predict_table."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bayes_mdn as bm
from bayes_mdn import tables
from bayes_mdn.tables import OutputSpec, predict_table


@pytest.fixture(scope="module")
def posterior():
    key = jax.random.key(0)
    X, y, _, _ = bm.datasets.inverse_sine(key, num_samples=600, train_fraction=0.5)
    frame = pd.DataFrame({"x": X[:, 0]})
    target = pd.DataFrame({"z": y[:, 0]})
    return bm.MDN(num_components=3, hidden_sizes=(8,)).fit(frame, target, key=key, method="map",
                                                          num_steps=150)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-10, 10, 203)
    ids = np.arange(1000, 1203)
    path = tmp_path / "catalogue.parquet"
    pq.write_table(pa.table({"id": ids, "other": x * 0 + 1.5, "x": x}), path, row_group_size=64)
    return path, ids, x


def _no_leftovers(folder, name):
    assert not (folder / name).exists()
    assert not (folder / f".{name}.partial").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{name}")]


def test_parquet_to_parquet_matches_in_memory(posterior, table, tmp_path):
    path, ids, x = table
    dest = tmp_path / "out.parquet"
    report = predict_table(posterior, path, dest, outputs=["mean", "quantiles", "median"],
                           batch_rows=50)
    assert report["num_rows"] == 203
    out = pq.read_table(dest).to_pandas()
    assert list(out.columns) == ["id", "mean_z", "q0.05_z", "q0.5_z", "q0.95_z", "median_z"]
    np.testing.assert_array_equal(out["id"], ids)
    pred = posterior.predictive(x[:, None])
    np.testing.assert_allclose(out["mean_z"], pred.mean()[:, 0], rtol=1e-6, atol=1e-6)
    quantiles = pred.quantiles([0.05, 0.5, 0.95])
    for level, values in zip(("0.05", "0.5", "0.95"), quantiles[:, :, 0], strict=True):
        np.testing.assert_allclose(out[f"q{level}_z"], values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["median_z"], out["q0.5_z"])
    assert not (tmp_path / ".out.parquet.partial").exists()


def test_csv_to_csv_and_batch_size_does_not_matter(posterior, table, tmp_path):
    _, ids, x = table
    source = tmp_path / "catalogue.csv"
    pd.DataFrame({"id": ids, "x": x}).to_csv(source, index=False)
    one = tmp_path / "one.csv"
    many = tmp_path / "many.csv"
    predict_table(posterior, source, one, outputs="mean,interval,std", batch_rows=1000)
    predict_table(posterior, source, many, outputs="mean,interval,std", batch_rows=7)
    first, second = pd.read_csv(one), pd.read_csv(many)
    assert list(first.columns) == ["id", "mean_z", "lower0.9_z", "upper0.9_z", "std_z"]
    np.testing.assert_array_equal(first["id"], ids)
    np.testing.assert_allclose(first.to_numpy(), second.to_numpy(), rtol=1e-6, atol=1e-6)
    pred = posterior.predictive(x[:, None])
    np.testing.assert_allclose(first["std_z"], np.sqrt(pred.variance()[:, 0]), rtol=1e-5)


def test_resume_continues_without_duplicating_rows(posterior, table, tmp_path, monkeypatch):
    path, ids, _ = table
    full = tmp_path / "full.parquet"
    predict_table(posterior, path, full, batch_rows=40)
    dest = tmp_path / "out.parquet"
    original = tables.predict_columns
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(tables, "predict_columns", crashing)
    with pytest.raises(KeyboardInterrupt):
        predict_table(posterior, path, dest, batch_rows=40)
    assert not dest.exists()
    partial = tmp_path / ".out.parquet.partial"
    assert sorted(p.name for p in partial.glob("part-*.parquet")) == [
        "part-000000.parquet", "part-000001.parquet"]
    monkeypatch.setattr(tables, "predict_columns", original)
    with pytest.raises(ValueError, match="cannot be resumed with these settings"):
        predict_table(posterior, path, dest, batch_rows=50, resume=True)
    report = predict_table(posterior, path, dest, batch_rows=40, resume=True)
    assert report["resumed_rows"] == 80 and report["num_rows"] == 203
    resumed, expected = pq.read_table(dest).to_pandas(), pq.read_table(full).to_pandas()
    np.testing.assert_array_equal(resumed["id"], ids)
    pd.testing.assert_frame_equal(resumed, expected)
    assert not partial.exists()


def test_every_output(posterior, table, tmp_path):
    path, _, x = table
    dest = tmp_path / "all.parquet"
    grid = np.linspace(-12, 12, 5)
    predict_table(posterior, path, dest, keep=["id", "other"],
                  outputs=["modes", "log_density", "mixture", "samples"], grid=grid,
                  num_components=2, num_modes=4, num_samples=3, key=jax.random.key(3),
                  batch_rows=100)
    out = pq.read_table(dest)
    names = out.column_names
    assert names[:2] == ["id", "other"]
    assert {"mode1_z", "mode4_z", "num_modes_z", "weight1_z", "loc2_z", "scale2_z",
            "sample3_z"} <= set(names)
    assert [name for name in names if name.startswith("log_density_")] == [
        "log_density_-12", "log_density_-6", "log_density_0", "log_density_6", "log_density_12"]
    frame = out.to_pandas()
    pred = posterior.predictive(x[:, None])
    np.testing.assert_allclose(frame[[n for n in names if n.startswith("log_density_")]],
                               pred.log_prob_grid(grid), rtol=1e-5, atol=1e-5)
    # Modes: as many non-null columns as modes found (up to 4), no NaN stored.
    counts = frame["num_modes_z"].to_numpy()
    present = out.column("mode4_z").null_count
    assert present == int(np.sum(counts < 4))
    assert not np.isnan(out.column("mode1_z").to_numpy()).any()
    # The compressed mixture keeps the predictive's mean (moment matching).
    weights = frame[["weight1_z", "weight2_z"]].to_numpy()
    locs = frame[["loc1_z", "loc2_z"]].to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(weights[:, 0] >= weights[:, 1])
    np.testing.assert_allclose((weights * locs).sum(axis=1), pred.mean()[:, 0], rtol=1e-5,
                               atol=1e-5)


def test_compressed_mixture_preserves_mean_and_variance(posterior):
    pred = posterior.predictive(np.linspace(-10, 10, 17)[:, None])
    log_weights, params = tables._compressed_mixture(pred, 2)
    weights = np.exp(log_weights)
    loc, scale = params["loc"][:, :, 0], params["scale"][:, :, 0]
    mean = (weights * loc).sum(axis=1)
    variance = (weights * (scale**2 + loc**2)).sum(axis=1) - mean**2
    np.testing.assert_allclose(mean, pred.mean()[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(variance, pred.variance()[:, 0], rtol=1e-5)


def test_samples_need_a_key(posterior, table, tmp_path):
    path, _, _ = table
    with pytest.raises(TypeError, match=r"`key` is required"):
        predict_table(posterior, path, tmp_path / "s.parquet", outputs=["samples"])


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("id,x\n1,0.5\n2,abc\n", {}, "CSV conversion error to double"),
        ("id,y\n1,0.5\n", {}, r"has no column\(s\) \['x'\]"),
        ("x\n0.5\n", {}, r"has no column\(s\) \['id'\]"),
        ("", {}, "is empty"),
        ("id,x\n", {}, "has no data rows"),
        ("id,x\n1,0.5\n2,0.1,7\n", {}, "Expected 2 columns, got 3"),
        ("id,x\n1,0.5\n2,\n", {}, r"input column 'x' has a missing value in data row 2"),
        ("id,x\n1,0.5\n2,inf\n", {}, "non-finite value"),
        ("id,x\n1,0.5\n", {"outputs": ["average"]}, r"Unknown output\(s\) \['average'\]"),
        ("id,x\n1,0.5\n", {"outputs": ["quantiles"], "quantiles": [0.5, 1.0]},
         "strictly between 0 and 1"),
        ("id,x\n1,0.5\n", {"outputs": ["log_density"]}, "needs `grid`"),
        ("id,x\n1,0.5\n", {"inputs": ["id", "x"]}, "fitted on 1 features"),
        ("mean_z,x\n1,0.5\n", {"keep": ["mean_z"]}, "clash with output columns"),
        ("id,x\n1,0.5\n", {"batch_rows": 0}, "`batch_rows` must be at least 1"),
    ],
)
def test_bad_input_raises_and_leaves_nothing(posterior, tmp_path, content, kwargs, message):
    source = tmp_path / "in.csv"
    source.write_text(content)
    with pytest.raises((ValueError, TypeError), match=message):
        predict_table(posterior, source, tmp_path / "out.parquet", **kwargs)
    _no_leftovers(tmp_path, "out.parquet")


def test_truncated_parquet_raises(posterior, table, tmp_path):
    path, _, _ = table
    content = path.read_bytes()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        predict_table(posterior, broken, tmp_path / "out.csv")
    _no_leftovers(tmp_path, "out.csv")


def test_non_numeric_parquet_input_and_output_format(posterior, tmp_path):
    source = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": [1, 2], "x": ["a", "b"]}), source)
    with pytest.raises(ValueError, match="input column 'x' is not numeric"):
        predict_table(posterior, source, tmp_path / "out.parquet")
    with pytest.raises(ValueError, match="Cannot tell the output format"):
        predict_table(posterior, source, tmp_path / "out.feather")
    with pytest.raises(FileNotFoundError, match="No input file"):
        predict_table(posterior, tmp_path / "none.csv", tmp_path / "out.parquet")


def test_output_spec_rejects_one_output_summaries_for_two_targets():
    key = jax.random.key(1)
    X = np.random.default_rng(0).normal(size=(40, 1))
    y = np.column_stack([X[:, 0], -X[:, 0]]) + 0.1
    post = bm.MDN(num_components=1, hidden_sizes=()).fit(X, y, key=key, num_steps=5)
    with pytest.raises(ValueError, match=r"need one target \(D = 1\); this fit has D = 2"):
        OutputSpec.build(post, ["modes"])
    assert OutputSpec.build(post, ["mean"]).columns() == ["mean_y0", "mean_y1"]


def test_prefetched_keeps_order_raises_where_the_producer_failed_and_stops_early():
    import threading

    assert list(tables._prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 0
        yield 1
        raise ValueError("bad row 2")

    seen = []
    with pytest.raises(ValueError, match="bad row 2"):
        for item in tables._prefetched(failing()):
            seen.append(item)
    assert seen == [0, 1]

    produced = []

    def endless():
        index = 0
        while True:
            produced.append(index)
            yield index
            index += 1

    before = threading.active_count()
    for item in tables._prefetched(endless()):
        if item == 2:
            break
    assert threading.active_count() == before  # the reading thread has ended
    assert len(produced) <= 5


def test_a_failed_part_write_leaves_a_consistent_partial_run(posterior, table, tmp_path,
                                                             monkeypatch):
    """The manifest never counts a part that is not on disk, so resuming after a failed
    write (disk full) gives the uninterrupted result."""
    path, _, _ = table
    full = tmp_path / "full.parquet"
    predict_table(posterior, path, full, batch_rows=40)
    dest = tmp_path / "out.parquet"
    original = pq.write_table
    calls = {"n": 0}

    def failing_write(table_, where, *args, **kwargs):
        if str(where).endswith(".tmp") and "part-" in str(where):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("No space left on device")
        return original(table_, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="No space left"):
        predict_table(posterior, path, dest, batch_rows=40)
    monkeypatch.setattr(pq, "write_table", original)
    partial = tmp_path / ".out.parquet.partial"
    manifest = json.loads((partial / "manifest.json").read_text())
    assert manifest["parts"] == 2
    report = predict_table(posterior, path, dest, batch_rows=40, resume=True)
    assert report["resumed_rows"] == 80
    pd.testing.assert_frame_equal(pq.read_table(dest).to_pandas(),
                                  pq.read_table(full).to_pandas())
