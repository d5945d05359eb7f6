"""Saving and loading a Posterior: bit-identical predictions, preserved metadata, atomic
writes, and clear errors for anything that is not a readable bayes_mdn file."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np
import numpyro.distributions as dist
import pytest

import bayes_mdn as bm
from bayes_mdn.priors import FanInNormal, Normal

N = 50
QUANTILES = np.array([0.05, 0.5, 0.95])


def _key() -> jax.Array:
    return jax.random.key(0)


def _custom_prior(name: str, shape: tuple[int, ...]) -> dist.Distribution:
    """A user callable prior: cannot be stored in a file."""
    return dist.Normal(0.0, 1.5)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.uniform(-2.0, 2.0, size=(N, 1))
    y = 3.0 * np.sin(X[:, 0]) + 0.3 * rng.normal(size=N) + 10.0
    return X, y


@pytest.fixture(scope="module")
def posterior(data) -> bm.Posterior:
    X, y = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,),
                   prior={"default": FanInNormal(scale=1.2), "loc": Normal(2.0)})
    return model.fit(X, y, key=_key(), num_steps=20, num_evaluations=4,
                     X_test=X[:10], y_test=y[:10])


@pytest.fixture(scope="module")
def saved(posterior, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "fit.bmdn"
    posterior.save(path)
    return path


@pytest.fixture(scope="module")
def loaded(saved) -> bm.Posterior:
    return bm.load(saved)


def _predictions(posterior: bm.Posterior, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    pred = posterior.predictive(X)
    return {
        "log_prob": np.asarray(pred.log_prob(y)),
        "cdf": np.asarray(pred.cdf(y)),
        "mean": np.asarray(pred.mean()),
        "variance": np.asarray(pred.variance()),
        "quantiles": np.asarray(pred.quantiles(QUANTILES)),
        "sample": np.asarray(pred.sample(jax.random.key(3), num_samples=4)),
    }


def _rewrite(source: Path, destination: Path, *, drop=(), replace=None,
             compression=zipfile.ZIP_DEFLATED) -> None:
    """Copy a ZIP archive member by member, dropping or replacing members."""
    replace = replace or {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w", compression) as dst:
        for name in src.namelist():
            if name in drop:
                continue
            dst.writestr(name, replace.get(name, src.read(name)))


def _metadata(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("metadata.json"))


# --------------------------------------------------------------------------- round trip
def test_round_trip_predictions_are_bit_identical(posterior, loaded):
    X_new = np.linspace(-2.5, 2.5, 7)[:, None]
    y_new = 10.0 + np.linspace(-3.0, 3.0, 7)
    before = _predictions(posterior, X_new, y_new)
    after = _predictions(loaded, X_new, y_new)
    for name, value in before.items():
        assert after[name].dtype == value.dtype, name
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_round_trip_model_and_method(posterior, loaded):
    assert loaded.model == posterior.model
    assert loaded.model.to_config() == posterior.model.to_config()
    sites = {site.name: site for site in loaded.model.sites(1, 1)}
    assert loaded.model.prior.for_site(sites["loc.kernel"]) == Normal(2.0)
    assert loaded.model.prior.for_site(sites["hidden_0.kernel"]) == FanInNormal(scale=1.2)
    assert loaded.method == posterior.method == "map"
    assert repr(loaded) == repr(posterior)
    assert (loaded.num_chains, loaded.num_draws) == (1, 1)
    assert (loaded.num_features, loaded.num_outputs) == (1, 1)


def test_round_trip_draws_and_standardizer(posterior, loaded):
    assert set(loaded.draws) == set(posterior.draws)
    for name, value in posterior.draws.items():
        assert loaded.draws[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded.draws[name], value, err_msg=name)
    for name, value in posterior.standardizer.to_arrays().items():
        np.testing.assert_array_equal(loaded.standardizer.to_arrays()[name], value, err_msg=name)


def test_round_trip_history_and_info(posterior, loaded):
    assert set(loaded.history) == set(posterior.history)
    assert set(posterior.history) >= {"loss", "eval_step", "train_log_likelihood",
                                      "test_log_likelihood"}
    for name, value in posterior.history.items():
        assert loaded.history[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded.history[name], value, err_msg=name)
        assert not loaded.history[name].flags.writeable
    assert loaded.history["loss"].shape == (20,)
    assert dict(loaded.info) == dict(posterior.info)
    assert loaded.summary() == posterior.summary()


def test_metadata_records_format_and_versions(saved):
    metadata = _metadata(saved)
    assert metadata["format"] == "bayes_mdn.posterior"
    assert metadata["format_version"] == 1
    assert set(metadata["versions"]) >= {"bayes-mdn", "jax", "numpyro"}
    with zipfile.ZipFile(saved) as archive:
        assert {f"{name}.npy" for name in metadata["arrays"]} | {"metadata.json"} == set(
            archive.namelist())


def test_save_accepts_str_paths_and_module_function(posterior, tmp_path, data):
    X, y = data
    path = tmp_path / "as_string.bmdn"
    bm.io.save(posterior, str(path))
    reloaded = bm.load(str(path))
    np.testing.assert_array_equal(reloaded.predictive(X).log_prob(y),
                                  posterior.predictive(X).log_prob(y))


# --------------------------------------------------------------------------- atomic writes
def test_save_leaves_no_temporary_files(posterior, tmp_path):
    posterior.save(tmp_path / "fit.bmdn")
    assert sorted(os.listdir(tmp_path)) == ["fit.bmdn"]


def test_save_replaces_an_existing_file(posterior, tmp_path, data):
    X, _ = data
    path = tmp_path / "fit.bmdn"
    path.write_bytes(b"an older, unrelated file")
    posterior.save(path)
    assert sorted(os.listdir(tmp_path)) == ["fit.bmdn"]
    np.testing.assert_array_equal(bm.load(path).predictive(X).mean(),
                                  posterior.predictive(X).mean())


def test_failed_save_keeps_the_old_file_and_cleans_up(posterior, tmp_path, monkeypatch):
    path = tmp_path / "fit.bmdn"
    path.write_bytes(b"previous contents")

    def broken_write_array(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np.lib.format, "write_array", broken_write_array)
    with pytest.raises(OSError, match=r"disk full \(simulated\)"):
        posterior.save(path)
    assert path.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["fit.bmdn"]


def test_save_to_a_directory(posterior, tmp_path):
    with pytest.raises(ValueError, match=r"is a directory; pass a file path such as "
                                         r"'fit\.bmdn'\."):
        posterior.save(tmp_path)


def test_save_rejects_non_posterior(tmp_path):
    with pytest.raises(TypeError, match=r"`posterior` must be a bayes_mdn\.Posterior; got "):
        bm.io.save({"draws": {}}, tmp_path / "fit.bmdn")


# --------------------------------------------------------------------------- bad files
def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No bayes_mdn file at '.*missing\.bmdn'\."):
        bm.load(tmp_path / "missing.bmdn")


def test_load_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No bayes_mdn file at"):
        bm.load(tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_load_truncated_file(saved, tmp_path, fraction):
    contents = saved.read_bytes()
    path = tmp_path / "truncated.bmdn"
    path.write_bytes(contents[: int(len(contents) * fraction)])
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\)"):
        bm.load(path)


def test_load_random_bytes(tmp_path):
    path = tmp_path / "random.bmdn"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\)"):
        bm.load(path)


def test_load_zip_without_metadata(saved, tmp_path):
    path = tmp_path / "no_metadata.bmdn"
    _rewrite(saved, path, drop={"metadata.json"})
    with pytest.raises(ValueError, match=r"is not a bayes_mdn file \(no metadata\.json\)\."):
        bm.load(path)


def test_load_unrelated_zip(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"is not a bayes_mdn file \(no metadata\.json\)\."):
        bm.load(path)


@pytest.mark.parametrize("metadata", [{"format": "something.else", "format_version": 1},
                                      ["a", "list"]])
def test_load_wrong_format_name(saved, tmp_path, metadata):
    path = tmp_path / "wrong_format.bmdn"
    _rewrite(saved, path, replace={"metadata.json": json.dumps(metadata)})
    with pytest.raises(ValueError, match=r"is not a bayes_mdn posterior file\."):
        bm.load(path)


def test_load_future_format_version(saved, tmp_path):
    metadata = _metadata(saved)
    metadata["format_version"] = 999
    path = tmp_path / "future.bmdn"
    _rewrite(saved, path, replace={"metadata.json": json.dumps(metadata)})
    with pytest.raises(ValueError, match=r"has format version 999; this bayes_mdn reads version "
                                         r"1\. Upgrade bayes_mdn to load newer files\."):
        bm.load(path)


def test_load_invalid_json(saved, tmp_path):
    path = tmp_path / "bad_json.bmdn"
    _rewrite(saved, path, replace={"metadata.json": "{not json"})
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\)"):
        bm.load(path)


def test_load_metadata_without_array_list(saved, tmp_path):
    metadata = _metadata(saved)
    del metadata["arrays"]
    path = tmp_path / "no_arrays.bmdn"
    _rewrite(saved, path, replace={"metadata.json": json.dumps(metadata)})
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file"):
        bm.load(path)


def test_load_missing_array(saved, tmp_path):
    path = tmp_path / "incomplete.bmdn"
    _rewrite(saved, path, drop={"draws/loc.bias.npy"})
    with pytest.raises(ValueError, match=r"is incomplete: array 'draws/loc\.bias' is missing\."):
        bm.load(path)


def test_load_invalid_model_description(saved, tmp_path):
    metadata = _metadata(saved)
    del metadata["model"]["num_components"]
    path = tmp_path / "bad_model.bmdn"
    _rewrite(saved, path, replace={"metadata.json": json.dumps(metadata)})
    with pytest.raises(ValueError, match=r"has an invalid model description: "):
        bm.load(path)


def test_load_pickled_array_is_refused(saved, tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "pickled.bmdn"
    _rewrite(saved, path, replace={"draws/loc.bias.npy": buffer.getvalue()})
    with pytest.raises(ValueError, match=r"allow_pickle=False"):
        bm.load(path)


def test_load_member_with_bad_checksum(saved, tmp_path):
    # Stored (uncompressed) members, so flipping a payload byte leaves the archive structure
    # intact and only the CRC-32 check can notice.
    path = tmp_path / "stored.bmdn"
    _rewrite(saved, path, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("draws/loc.kernel.npy")
    contents = bytearray(path.read_bytes())
    header = 30 + len(info.filename.encode()) + len(info.extra)
    position = info.header_offset + header + info.compress_size - 1  # last byte of the data
    contents[position] ^= 0xFF
    path.write_bytes(bytes(contents))
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\).*CRC"):
        bm.load(path)


def test_load_corrupted_deflate_stream(saved, tmp_path):
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("metadata.json")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    contents = bytearray(saved.read_bytes())
    header = 30 + len(info.filename.encode()) + len(info.extra)
    contents[info.header_offset + header] = 0xFF  # first deflate block: reserved type 11
    path = tmp_path / "corrupted.bmdn"
    path.write_bytes(bytes(contents))
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\)"):
        bm.load(path)


# --------------------------------------------------------------------------- callable priors
@pytest.fixture(scope="module")
def custom_fit(data):
    X, y = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,), prior=_custom_prior)
    return model.fit(X, y, key=_key(), num_steps=10)


def test_custom_prior_round_trip_predicts_identically(custom_fit, tmp_path, data):
    X, y = data
    path = tmp_path / "custom.bmdn"
    custom_fit.save(path)
    reloaded = bm.load(path)
    before, after = _predictions(custom_fit, X, y), _predictions(reloaded, X, y)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert reloaded.model.prior.default.name == "unavailable"
    assert "_custom_prior" in reloaded.model.prior.default.description


def test_refitting_a_loaded_custom_prior_model_fails_clearly(custom_fit, tmp_path, data):
    X, y = data
    path = tmp_path / "custom.bmdn"
    custom_fit.save(path)
    reloaded = bm.load(path)
    with pytest.raises(ValueError, match=r"This model was saved with a custom callable prior "
                                         r"\(.*_custom_prior.*\), which cannot be stored\. Pass "
                                         r"the prior again"):
        reloaded.model.fit(X, y, key=_key(), num_steps=10)
    # The advertised remedy works and reproduces the original fit.
    restored = dataclasses.replace(reloaded.model, prior=_custom_prior)
    refit = restored.fit(X, y, key=_key(), num_steps=10)
    for name, value in custom_fit.draws.items():
        np.testing.assert_array_equal(refit.draws[name], value, err_msg=name)


# --------------------------------------------------------------------------- array shapes
def test_zero_dimensional_arrays_keep_their_shape(posterior, tmp_path):
    # np.ascontiguousarray would have turned a 0-d array into shape (1,).
    history = {**posterior.history, "final": np.float64(-1.25), "flag": np.array(True)}
    with_scalars = dataclasses.replace(posterior, history=history)
    with_scalars.save(tmp_path / "scalars.bmdn")
    loaded = bm.load(tmp_path / "scalars.bmdn")
    assert loaded.history["final"].shape == () and loaded.history["final"] == -1.25
    assert loaded.history["flag"].shape == () and loaded.history["flag"].dtype == bool


def test_saved_file_is_readable_by_others(posterior, tmp_path):
    # The temporary file is created owner-only; the saved file must not stay that way.
    path = tmp_path / "fit.bmdn"
    posterior.save(path)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)  # an existing file keeps its permissions when replaced
    posterior.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
