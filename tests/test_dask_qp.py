"""The optional bridges: bayes_mdn.dask (a 2-process LocalCluster) and bayes_mdn.qp."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import bayes_mdn as bm
from bayes_mdn.tables import OutputSpec, predict_columns


@pytest.fixture(scope="module")
def posterior():
    key = jax.random.key(0)
    X, y, _, _ = bm.datasets.inverse_sine(key, num_samples=600, train_fraction=0.5)
    return bm.MDN(num_components=3, hidden_sizes=(8,)).fit(
        pd.DataFrame({"x": X[:, 0]}), pd.DataFrame({"z": y[:, 0]}), key=key, method="map",
        num_steps=150)


def test_dask_local_cluster_matches_in_process(posterior, tmp_path, monkeypatch):
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    import bayes_mdn.dask as bmd

    # Worker processes must import this checkout of bayes_mdn.
    root = str(Path(bm.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"id": np.arange(150), "x": rng.uniform(-10, 10, 150)})
    source = tmp_path / "catalogue"
    dd.from_pandas(frame, npartitions=3).to_parquet(str(source), write_index=False)
    dest = tmp_path / "predictions"
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster):
        bmd.predict_parquet(posterior, source, dest, keep=["id"],
                            outputs=["mean", "quantiles", "samples"], num_samples=2,
                            key=jax.random.key(5))
    result = dd.read_parquet(str(dest)).compute().sort_values("id").reset_index(drop=True)
    np.testing.assert_array_equal(result["id"], frame["id"])
    spec = OutputSpec.build(posterior, ["mean", "quantiles"])
    expected = predict_columns(posterior, frame[["x"]].to_numpy(), spec)
    for name, values in expected.items():
        np.testing.assert_allclose(result[name], values, rtol=1e-6, atol=1e-6)
    # Samples: partition i folds i into the key; reproduce partition 0 in process.
    first = frame.iloc[:50]
    spec = OutputSpec.build(posterior, ["samples"], num_samples=2, key=jax.random.key(5))
    samples = predict_columns(posterior, first[["x"]].to_numpy(), spec,
                              key=jax.random.fold_in(jax.random.key(5), 0))
    np.testing.assert_allclose(result["sample1_z"][:50], samples["sample1_z"], rtol=1e-6)


def test_dask_bad_arguments(posterior):
    import dask.dataframe as dd

    import bayes_mdn.dask as bmd

    frame = dd.from_pandas(pd.DataFrame({"id": [1, 2], "w": [0.1, 0.2]}), npartitions=1)
    with pytest.raises(ValueError, match=r"The frame has no column\(s\) \['x'\]"):
        bmd.predict_dask(posterior, frame)
    with pytest.raises(TypeError, match=r"must be a dask\.dataframe\.DataFrame"):
        bmd.predict_dask(posterior, pd.DataFrame({"x": [1.0]}))
    with pytest.raises(TypeError, match=r"must be a bayes_mdn\.Posterior"):
        bmd.fit_bytes("fit.bmdn")


def test_fit_bytes_round_trip(posterior):
    import bayes_mdn.dask as bmd

    content = bmd.fit_bytes(posterior)
    assert content[:2] == b"PK"  # a ZIP archive of arrays + JSON, not a pickle
    loaded = bmd._load_bytes(content)
    assert bmd._load_bytes(content) is loaded  # loaded once per process
    X = np.linspace(-5, 5, 7)[:, None]
    np.testing.assert_array_equal(loaded.predictive(X).mean(), posterior.predictive(X).mean())


def test_qp_round_trip_pdfs_match(posterior, tmp_path):
    qp = pytest.importorskip("qp")
    from bayes_mdn.qp import to_qp, write_qp

    X = np.linspace(-9, 9, 12)[:, None]
    pred = posterior.predictive(X)
    path = tmp_path / "pz.hdf5"
    ids = np.arange(12) + 100
    write_qp(pred, path, num_components=3, ancil={"id": ids})  # S x K = 3: exact
    ensemble = qp.read(str(path))
    assert ensemble.npdf == 12
    np.testing.assert_array_equal(ensemble.ancil["id"], ids)
    grid = np.linspace(-12, 12, 201)
    np.testing.assert_allclose(ensemble.pdf(grid), np.exp(pred.log_prob_grid(grid)),
                               rtol=1e-5, atol=1e-8)
    # Compressed to 2 components: a proper density with the predictive's mean.
    small = to_qp(pred, num_components=2)
    fine = np.linspace(-40, 40, 8001)
    density = small.pdf(fine)
    np.testing.assert_allclose(np.trapezoid(density, fine, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.trapezoid(density * fine, fine, axis=1), pred.mean()[:, 0],
                               rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"name the file \*.hdf5"):
        write_qp(pred, tmp_path / "pz.txt")
    with pytest.raises(ValueError, match=r"`ancil` columns \['id'\] must have one entry"):
        to_qp(pred, ancil={"id": ids[:3]})


def test_predict_qp_streams_a_catalogue_and_refuses_bad_input(posterior, tmp_path):
    qp = pytest.importorskip("qp")
    from bayes_mdn.qp import predict_qp

    source = tmp_path / "catalogue.csv"
    X = np.linspace(-9, 9, 11)
    pd.DataFrame({"id": np.arange(11) + 5, "name": list("abcdefghijk"), "x": X}).to_csv(
        source, index=False)
    dest = tmp_path / "pz.hdf5"
    report = predict_qp(posterior, source, dest, num_components=3, batch_rows=4,
                        progress=False)
    assert report["num_rows"] == 11
    ensemble = qp.read(str(dest))
    np.testing.assert_array_equal(np.ravel(ensemble.ancil["id"]), np.arange(11) + 5)
    grid = np.linspace(-12, 12, 101)
    np.testing.assert_allclose(ensemble.pdf(grid),
                               np.exp(posterior.predictive(X[:, None]).log_prob_grid(grid)),
                               rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match=r"qp stores pass-through columns as numbers; "
                                         r"\['name'\]"):
        predict_qp(posterior, source, tmp_path / "b.hdf5", keep=("id", "name"))
    with pytest.raises(FileNotFoundError, match="The output folder"):
        predict_qp(posterior, source, tmp_path / "missing" / "b.hdf5")
    with pytest.raises(TypeError, match=r"`posterior` must be a bayes_mdn\.Posterior"):
        predict_qp(posterior.predictive(X[:, None]), source, tmp_path / "b.hdf5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue.csv", "pz.hdf5"]
