"""The same key gives bit-identical results in separate processes; different keys differ."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import sys

    import jax
    import numpy as np

    import bayes_mdn as bm

    out, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1))
    y = np.where(rng.random(64) < 0.5, X[:, 0], -X[:, 0]) + 0.1 * rng.normal(size=64)
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    results = {}
    for seed in seeds:
        post = model.fit(X, y, key=jax.random.key(seed), num_steps=30, num_evaluations=3)
        pred = post.predictive(np.linspace(-2, 2, 5)[:, None])
        results[f"loss_{seed}"] = post.history["loss"]
        results[f"log_prob_{seed}"] = pred.log_prob(np.zeros(5))
        results[f"sample_{seed}"] = pred.sample(jax.random.key(seed), num_samples=3)
        for name, value in post.draws.items():
            results[f"draw_{seed}_{name}"] = np.asarray(value)
    np.savez(out, **results)
""")


def _launch(tmp_path, name: str, seeds: list[int], hash_seed: str) -> tuple:
    out = tmp_path / f"{name}.npz"
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    process = subprocess.Popen([sys.executable, str(script), str(out), *map(str, seeds)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return process, out


def test_same_key_is_bit_identical_across_processes_and_keys_differ(tmp_path):
    # Two processes at once (different hash seeds): key 0 in both, key 1 in the first.
    first, first_out = _launch(tmp_path, "first", [0, 1], "1")
    second, second_out = _launch(tmp_path, "second", [0], "2")
    for process in (first, second):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()[-2000:]
    a, b = np.load(first_out, allow_pickle=False), np.load(second_out, allow_pickle=False)
    assert len(b.files) > 5 and set(b.files) < set(a.files)
    for name in b.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # A different key: a different fit, everywhere.
    for kind in ("loss", "log_prob", "sample"):
        assert not np.array_equal(a[f"{kind}_0"], a[f"{kind}_1"]), kind
    assert not np.array_equal(a["draw_0_loc.bias"], a["draw_1_loc.bias"])
