"""Several devices: NUTS chains spread over devices (``chain_method="parallel"``) and
data-parallel MAP/SVI (``shard_data``) agree with their one-device fits.

The two-device checks run in a subprocess with two simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``: the flag must be set before jax
starts), each comparing a two-device fit against the one-device fit of the same model, data
and key in that process. The option checks run here, on this process's one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import bayes_mdn as bm

TWO_DEVICES = "--xla_force_host_platform_device_count=2"

# Shared by the subprocess scripts: data, and spies that record how arrays were placed.
PRELUDE = """
import json
import jax
import numpy as np
import bayes_mdn as bm

assert jax.device_count() == 2 and jax.local_device_count() == 2, jax.devices()
result = {"device_count": jax.device_count()}

def placement(array):
    sharding = array.sharding
    return {"num_devices": len(sharding.device_set),
            "spec": [None if axis is None else str(axis)
                     for axis in getattr(sharding, "spec", ())],
            "shard_rows": sorted(shard.data.shape[0] for shard in array.addressable_shards)}

compiled = []
def count_compiles(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        compiled.append(kwargs.get("fun_name"))
jax.monitoring.register_event_duration_secs_listener(count_compiles)
"""


def run_two_devices(script: str) -> dict:
    """Run `script` (after PRELUDE) with two CPU devices; it prints ``result`` as JSON."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {TWO_DEVICES}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    code = PRELUDE + textwrap.dedent(script) + "\nprint(json.dumps(result))\n"
    process = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=900)
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_two_device_map_and_svi_match_one_device_fits():
    """Rows sharded over two devices (61 rows: one masked padding row), parameters
    replicated: the same optimisation as on one device, up to reduction order."""
    result = run_two_devices("""
        from bayes_mdn.inference import _optim

        placed = []
        shard_rows = _optim.shard_rows
        def spy(data, devices):
            rows = shard_rows(data, devices)
            placed.append({"X": placement(rows.X), "num_padding": rows.num_padding,
                           "mask": None if rows.row_mask is None
                           else np.asarray(rows.row_mask).tolist()})
            return rows
        _optim.shard_rows = spy

        X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=122,
                                                        train_fraction=0.5)
        model = bm.MDN(num_components=3, hidden_sizes=(5,))
        for method, options in [("map", {"num_steps": 150, "num_evaluations": 5}),
                                ("svi", {"num_steps": 100, "num_evaluations": 5,
                                         "num_draws": 20, "num_eval_draws": 4})]:
            for shard_data in (False, True):
                posterior = model.fit(X, y, key=jax.random.key(1), method=method,
                                      shard_data=shard_data, X_test=X_test, y_test=y_test,
                                      **options)
                result[f"{method}_{shard_data}"] = {
                    "num_devices": posterior.info["num_devices"],
                    "loss": posterior.history["loss"].tolist(),
                    "test_ll": posterior.history["test_log_likelihood"].tolist(),
                    "log_prob": np.asarray(posterior.predictive(X_test).log_prob(y_test)
                                           ).tolist(),
                    "draw_devices": len(next(iter(posterior.draws.values())).devices()),
                }
        result["placed"] = placed
        # A refit with another key compiles nothing.
        compiled.clear()
        model.fit(X, y, key=jax.random.key(2), method="map", shard_data=True,
                  X_test=X_test, y_test=y_test, num_steps=150, num_evaluations=5)
        result["refit_compiles"] = list(compiled)
        """)
    assert result["device_count"] == 2
    # Sharded fits only (map, svi, the map refit), each over both devices; 61 rows =
    # 2 x 31 with one padding row.
    assert len(result["placed"]) == 3
    for placed in result["placed"]:
        assert placed["X"] == {"num_devices": 2, "spec": ["rows"], "shard_rows": [31, 31]}
        assert placed["num_padding"] == 1
        assert placed["mask"] == [True] * 61 + [False]
    assert result["refit_compiles"] == []
    for method in ("map", "svi"):
        one, two = result[f"{method}_False"], result[f"{method}_True"]
        assert (one["num_devices"], two["num_devices"]) == (1, 2)
        assert two["draw_devices"] == 1  # the draws come back to the default device
        for name in ("loss", "test_ll", "log_prob"):
            np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{method} {name}")


def _posterior_mean_and_mcse(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and Monte Carlo standard error of each column of (C, S, Q) draws."""
    from numpyro.diagnostics import effective_sample_size

    flat = draws.reshape(-1, draws.shape[-1])
    ess = np.array([effective_sample_size(draws[..., q]) for q in range(draws.shape[-1])])
    return flat.mean(0), flat.std(0) / np.sqrt(ess)


def test_two_device_nuts_agrees_in_distribution_with_one_device():
    """Conjugate Bayesian linear regression (K = 1, no hidden layer, fixed scale): two chains
    on two devices and two vectorised chains on one device target the same posterior;
    their posterior means agree within 4 Monte Carlo standard errors, and each is within
    4 MCSE of the closed form."""
    result = run_two_devices("""
        from bayes_mdn.inference import nuts

        outputs = []
        to_host = nuts._to_host
        def spy(tree):
            outputs.append([placement(leaf) for leaf in jax.tree.leaves(tree)])
            return to_host(tree)
        nuts._to_host = spy

        rng = np.random.default_rng(0)
        X = rng.normal(size=(61, 2))
        y = X @ np.array([0.8, -0.3]) + 2.0 + 0.7 * rng.normal(size=61)
        model = bm.MDN(num_components=1, hidden_sizes=(),
                       family=bm.families.Normal(fixed_scale=0.7), prior=bm.priors.Normal(1.5))
        result["X"], result["y"] = X.tolist(), y.tolist()
        for chain_method in ("vectorized", "parallel"):
            outputs.clear()
            posterior = model.fit(X, y, key=jax.random.key(3), method="nuts", num_chains=2,
                                  num_warmup=200, num_samples=400, chain_method=chain_method)
            draws = np.concatenate([np.asarray(posterior.draws["loc.kernel"])[..., 0],
                                    np.asarray(posterior.draws["loc.bias"])], axis=-1)
            result[chain_method] = {"draws": draws.tolist(), "info": {
                name: posterior.info[name] for name in ("chain_method", "num_devices")},
                "placement": outputs[0]}
        # A refit with another key compiles nothing.
        compiled.clear()
        model.fit(X, y, key=jax.random.key(5), method="nuts", num_chains=2, num_warmup=200,
                  num_samples=400, chain_method="parallel")
        result["refit_compiles"] = list(compiled)
        # "auto" spreads 4 chains over both devices, 2 per device (run in the slow test).
        result["auto"] = list(nuts.NutsOptions(num_chains=4).resolved_chain_method())
        try:
            model.fit(X, y, key=jax.random.key(4), method="nuts", num_chains=3,
                      chain_method="parallel")
        except ValueError as error:
            result["error"] = str(error)
        """)
    assert result["vectorized"]["info"] == {"chain_method": "vectorized", "num_devices": 1}
    assert result["parallel"]["info"] == {"chain_method": "parallel", "num_devices": 2}
    assert result["auto"] == ["parallel", 2]
    assert result["refit_compiles"] == []
    # The parallel run's draws were computed sharded over both devices, one chain each;
    # the vectorised run's on one device.
    for placed in result["parallel"]["placement"]:
        assert placed == {"num_devices": 2, "spec": ["chains"], "shard_rows": [1, 1]}
    assert all(placed["num_devices"] == 1 for placed in result["vectorized"]["placement"])
    assert "num_chains=3 cannot be split evenly over 2 devices" in result["error"]

    # Closed form in standardised units (the draws are the standardised network's).
    X, y = np.asarray(result["X"]), np.asarray(result["y"])
    x_s, y_s = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    design = np.column_stack([x_s, np.ones(len(X))])
    noise = 0.7 / y.std()
    covariance = np.linalg.inv(design.T @ design / noise**2 + np.eye(3) / 1.5**2)
    exact = covariance @ design.T @ y_s / noise**2
    one_mean, one_mcse = _posterior_mean_and_mcse(np.asarray(result["vectorized"]["draws"]))
    two_mean, two_mcse = _posterior_mean_and_mcse(np.asarray(result["parallel"]["draws"]))
    assert np.all(np.abs(two_mean - one_mean) < 4 * np.hypot(one_mcse, two_mcse))
    assert np.all(np.abs(one_mean - exact) < 4 * one_mcse + 1e-3)
    assert np.all(np.abs(two_mean - exact) < 4 * two_mcse + 1e-3)
    np.testing.assert_allclose(np.asarray(result["parallel"]["draws"]).reshape(-1, 3).std(0),
                               np.sqrt(np.diag(covariance)), rtol=0.2)


@pytest.mark.slow
def test_two_device_checkpoint_and_resume_continue_the_same_chains(tmp_path):
    """A parallel NUTS run (4 chains, 2 per device) and a data-parallel MAP fit resumed
    from checkpoints equal the uninterrupted runs bit for bit (the restored state is
    sharded again)."""
    result = run_two_devices(f"""
        rng = np.random.default_rng(0)
        X = rng.normal(size=(41, 1))
        y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=41)
        model = bm.MDN(num_components=2, hidden_sizes=(3,))
        path = {str(tmp_path)!r}
        nuts = dict(method="nuts", num_warmup=10, num_chains=4, max_tree_depth=3,
                    chain_method="parallel")
        full = model.fit(X, y, key=jax.random.key(1), num_samples=8, **nuts)
        model.fit(X, y, key=jax.random.key(1), num_samples=4, checkpoint=path + "/n.ckpt",
                  **nuts)
        resumed = model.fit(X, y, key=jax.random.key(1), num_samples=8,
                            resume=path + "/n.ckpt", **nuts)
        assert resumed.draws["loc.bias"].shape[:2] == (4, 8)
        result["nuts"] = [resumed.info["num_devices"]] + [
            bool(np.array_equal(np.asarray(full.draws[name]), np.asarray(resumed.draws[name])))
            for name in full.draws]
        opt = dict(method="map", shard_data=True, num_evaluations=3)
        full = model.fit(X, y, key=jax.random.key(2), num_steps=30, **opt)
        model.fit(X, y, key=jax.random.key(2), num_steps=20, checkpoint=path + "/m.ckpt",
                  checkpoint_every=10, **opt)
        resumed = model.fit(X, y, key=jax.random.key(2), num_steps=30,
                            resume=path + "/m.ckpt", **opt)
        result["map"] = [resumed.info["num_devices"]] + [
            bool(np.array_equal(np.asarray(full.draws[name]), np.asarray(resumed.draws[name])))
            for name in full.draws]
        """)
    assert result["nuts"][0] == 2 and all(result["nuts"][1:])
    assert result["map"][0] == 2 and all(result["map"][1:])


DISTRIBUTED = """
import json
import sys

import jax

process_id, port = int(sys.argv[1]), sys.argv[2]
try:  # CPU collectives across processes (newer jax versions may choose gloo themselves)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
except (AttributeError, ValueError):
    pass
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=process_id)
import numpy as np
import bayes_mdn as bm

X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=122,
                                                train_fraction=0.5)
posterior = bm.MDN(num_components=3, hidden_sizes=(5,)).fit(
    X, y, key=jax.random.key(1), method="map", shard_data=True, num_steps=100,
    num_evaluations=4)
print(json.dumps({"device_count": jax.device_count(),
                  "local_device_count": jax.local_device_count(),
                  "num_devices": posterior.info["num_devices"],
                  "loss": posterior.history["loss"].tolist(),
                  "log_prob": np.asarray(posterior.predictive(X_test).log_prob(y_test)
                                         ).tolist()}))
"""


@pytest.mark.slow
def test_data_parallel_map_across_two_processes_with_jax_distributed():
    """Two processes of one CPU device each, joined by jax.distributed.initialize: the rows
    are sharded across both processes and each holds the same fit, that of one device."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(TWO_DEVICES, "")
    processes = [subprocess.Popen([sys.executable, "-c", DISTRIBUTED, str(rank), str(port)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for rank in range(2)]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-4000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))

    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=122,
                                                    train_fraction=0.5)
    reference = bm.MDN(num_components=3, hidden_sizes=(5,)).fit(
        X, y, key=jax.random.key(1), method="map", num_steps=100, num_evaluations=4)
    for output in outputs:
        assert (output["device_count"], output["local_device_count"]) == (2, 1)
        assert output["num_devices"] == 2
        np.testing.assert_allclose(output["loss"], reference.history["loss"], rtol=1e-4)
        np.testing.assert_allclose(output["log_prob"],
                                   reference.predictive(X_test).log_prob(y_test), rtol=1e-4,
                                   atol=1e-5)


# --------------------------------------------------------------------------- one device
@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 1))
    return X, np.sin(X[:, 0]) + 0.1 * rng.normal(size=30)


@pytest.mark.parametrize(("value", "error", "message"), [
    ("yes", ValueError, r"`shard_data` must be True, False or 'auto'; got 'yes'\."),
    (1, TypeError, r"`shard_data` must be True, False or 'auto'; got 1 \(int\)\."),
    (None, TypeError, r"`shard_data` must be True, False or 'auto'; got None"),
])
def test_shard_data_is_validated_before_fitting(small_data, value, error, message):
    X, y = small_data
    with pytest.raises(error, match=message):
        bm.MDN().fit(X, y, key=jax.random.key(0), method="map", shard_data=value)


def test_shard_data_needs_full_batch_svi(small_data):
    X, y = small_data
    with pytest.raises(ValueError, match=r"`shard_data=True` needs full-batch optimisation"):
        bm.MDN().fit(X, y, key=jax.random.key(0), method="svi", shard_data=True,
                     subsample_size=10)


def test_shard_data_on_one_device_is_the_unsharded_fit(small_data):
    """True shards over a one-device mesh and 'auto' does not shard: same result."""
    X, y = small_data
    model = bm.MDN(num_components=2, hidden_sizes=(3,))
    options = dict(method="map", num_steps=20, num_evaluations=2)
    plain = model.fit(X, y, key=jax.random.key(0), **options)
    for shard_data in (True, "auto"):
        sharded = model.fit(X, y, key=jax.random.key(0), shard_data=shard_data, **options)
        assert sharded.info["num_devices"] == 1
        np.testing.assert_allclose(sharded.history["loss"], plain.history["loss"], rtol=1e-6)


@pytest.mark.skipif(jax.local_device_count() > 1, reason="needs a single device")
def test_parallel_chains_need_several_devices(small_data):
    X, y = small_data
    with pytest.raises(ValueError, match=r"jax\.local_device_count\(\) is 1\. Use "
                                         r"chain_method='vectorized'"):
        bm.MDN().fit(X, y, key=jax.random.key(0), method="nuts", chain_method="parallel")


@pytest.mark.skipif(jax.local_device_count() > 1, reason="needs a single device")
def test_chain_method_auto_and_none_resolve_on_one_device():
    from bayes_mdn.inference import NutsOptions

    assert NutsOptions().chain_method == "auto"
    assert NutsOptions(chain_method=None).chain_method == "auto"
    assert NutsOptions(num_chains=2).resolved_chain_method() == ("vectorized", 1)
    assert NutsOptions(num_chains=2, chain_method="sequential").resolved_chain_method() == (
        "sequential", 1)
