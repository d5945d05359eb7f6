"""The inference-method contract, checked for every method of the registry (and a method
registered by a test fixture, to show a new one needs only its module and one registry line):
draws (C, S, ...) of the entry's kind, the history / sample_stats schema, save/load round
trip, the predictive, diagnose, and checkpoint/resume where the entry supports it."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.diagnostics import Diagnostics, diagnose
from bayes_mdn.inference import KINDS, METHODS, MethodEntry
from bayes_mdn.inference._data import initial_params
from bayes_mdn.scaling import Standardizer

N = 40
MODEL = bm.MDN(num_components=2, hidden_sizes=(3,))
#: Tiny settings per method (a method not listed runs with its defaults).
QUICK = {
    "map": {"num_steps": 20, "num_evaluations": 2},
    "ensemble": {"num_members": 2, "num_steps": 20, "num_evaluations": 2},
    "svi": {"num_steps": 20, "num_evaluations": 2, "num_draws": 16, "num_eval_draws": 4},
    "laplace": {"num_steps": 20, "num_evaluations": 2, "num_draws": 16, "hessian": "fisher"},
    "nuts": {"num_warmup": 10, "num_samples": 8, "num_chains": 2, "max_tree_depth": 3},
    "toy": {"num_draws": 6},
}


# --------------------------------------------------------------------------- a toy method
@dataclass(frozen=True)
class ToyOptions:
    """Options of the fixture's method: draws around the data-dependent starting point."""

    num_draws: int = 4
    spread: float = 0.01


def fit_toy(model, data, key, options: ToyOptions) -> bm.Posterior:
    start_key, noise_key = jax.random.split(key)
    start = initial_params(model, data, start_key)
    keys = jax.random.split(noise_key, len(start))
    draws = {name: value + options.spread * jax.random.normal(k, (1, options.num_draws,
                                                                     *value.shape))
             for k, (name, value) in zip(keys, start.items(), strict=True)}
    return bm.Posterior(model=model, method="toy", draws=draws,
                        standardizer=data.standardizer, info={"num_rows": data.num_rows})


@pytest.fixture
def toy_method(monkeypatch):
    # A new method: its module (fit_toy + ToyOptions above) and this one registry line.
    monkeypatch.setitem(METHODS, "toy", MethodEntry(ToyOptions, fit_toy, "independent"))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 1))
    return X, np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)


@pytest.fixture(params=[*METHODS, "toy"])
def method(request) -> str:
    if request.param == "toy":
        request.getfixturevalue("toy_method")
    return request.param


def _fit(method: str, data, **extra) -> bm.Posterior:
    X, y = data
    return MODEL.fit(X, y, key=jax.random.key(1), method=method,
                     **QUICK.get(method, {}), **extra)


# --------------------------------------------------------------------------- the contract
def test_method_contract(method, data, tmp_path):
    entry = METHODS[method]
    assert entry.kind in KINDS
    assert dataclasses.is_dataclass(entry.options)
    X, y = data
    checkpoint = tmp_path / "run.ckpt"
    # One fit per method (compilation dominates): with a checkpoint where supported.
    posterior = _fit(method, data, **({"checkpoint": checkpoint} if entry.checkpoint else {}))
    # Draws (C, S, *site_shape) of the entry's kind.
    assert posterior.method == method and posterior.kind == entry.kind
    shapes = MODEL.latent_shapes(1, 1)
    assert set(posterior.draws) == set(shapes)
    C, S = posterior.num_chains, posterior.num_draws
    for name, value in posterior.draws.items():
        assert value.shape == (C, S, *shapes[name]), name
        assert np.isfinite(np.asarray(value)).all(), name
    if entry.kind == "point":
        assert (C, S) == (1, 1)
    elif entry.kind == "independent":
        assert C == 1
    # History: named numpy arrays; sample statistics (C, S).
    for name, value in posterior.history.items():
        assert isinstance(name, str) and isinstance(value, np.ndarray), name
        assert value.ndim >= 1, name
    for name, value in posterior.sample_stats.items():
        assert value.shape[:2] == (C, S), name
    json.dumps(dict(posterior.info))  # JSON-serialisable
    assert len(posterior.info["reference_X"]) == 32  # diagnostics' reference rows
    # Predictive.
    pred = posterior.predictive(X[:5])
    log_prob = np.asarray(pred.log_prob(y[:5]))
    assert log_prob.shape == (5,) and np.isfinite(log_prob).all()
    # Save / load round trip: same kind, same draws, same predictions.
    path = tmp_path / "fit.bmdn"
    posterior.save(path)
    loaded = bm.load(path)
    assert (loaded.method, loaded.kind) == (method, entry.kind)
    for name, value in posterior.draws.items():
        np.testing.assert_array_equal(np.asarray(loaded.draws[name]), np.asarray(value))
    for name, value in posterior.sample_stats.items():
        np.testing.assert_array_equal(loaded.sample_stats[name], value)
    np.testing.assert_array_equal(np.asarray(loaded.predictive(X[:5]).log_prob(y[:5])),
                                  log_prob)
    # Diagnose (keys on the kind: R-hat/ESS for chains).
    report = diagnose(posterior, warn=False)
    assert isinstance(report, Diagnostics) and report.method == method
    assert bool(report.convergence) == ((C >= 2 or entry.kind == "chains") and S >= 4)
    assert posterior.summary()["kind"] == entry.kind
    # Checkpoint / resume where the entry supports it: resuming the finished run gives it.
    if not entry.checkpoint:
        return
    assert checkpoint.is_file()
    again = _fit(method, data, resume=checkpoint)
    for name, value in posterior.draws.items():
        np.testing.assert_array_equal(np.asarray(again.draws[name]), np.asarray(value),
                                      err_msg=name)


# --------------------------------------------------------------------------- kinds
def test_registry_kind_is_checked(data, monkeypatch):
    monkeypatch.setitem(METHODS, "toy", MethodEntry(ToyOptions, fit_toy, "chain"))
    X, y = data
    with pytest.raises(ValueError, match=r"METHODS\['toy'\].kind must be one of"):
        MODEL.fit(X, y, key=jax.random.key(0), method="toy")


def test_posterior_kind_is_checked():
    draws = {"w": jnp.zeros((1, 1, 2))}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    with pytest.raises(ValueError, match=r"`kind` must be one of \('point', 'independent'"):
        bm.Posterior(model=MODEL, method="map", draws=draws, standardizer=standardizer,
                     kind="mcmc")


def test_old_files_derive_the_kind_from_the_method(data, tmp_path):
    """Files saved before Posterior had a kind (no "kind" in metadata.json) still load."""
    posterior = _fit("ensemble", data)
    path, old = tmp_path / "new.bmdn", tmp_path / "old.bmdn"
    posterior.save(path)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "metadata.json":
                metadata = json.loads(content)
                del metadata["kind"]
                content = json.dumps(metadata).encode()
            target.writestr(item, content)
    assert bm.load(old).kind == "independent"


@pytest.mark.parametrize(("method", "shape", "kind"), [
    ("map", (1, 1), "point"), ("nuts", (2, 3), "chains"), ("svi", (1, 5), "independent"),
    ("elsewhere", (1, 1), "point"), ("elsewhere", (3, 4), "chains"),
    ("elsewhere", (1, 4), "independent")])
def test_hand_built_posteriors_derive_a_kind(method, shape, kind):
    posterior = bm.Posterior(model=MODEL, method=method, draws={"w": jnp.zeros((*shape, 2))},
                             standardizer=Standardizer(np.zeros(1), np.ones(1), np.zeros(1),
                                                       np.ones(1)))
    assert posterior.kind == kind
