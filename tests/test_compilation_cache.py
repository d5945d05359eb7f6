"""bm.enable_compilation_cache: a second process loads the fit programs instead of compiling.

The process-level behaviour is checked in subprocesses (the cache is a process-wide JAX
setting); the in-process tests restore JAX's settings afterwards so that no other test runs
with a cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

import bayes_mdn as bm
from bayes_mdn import _compilation_cache

SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes", "jax_enable_compilation_cache")

FIT_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kwargs: hits.append(event) if event.endswith("cache_hits") else None)
    import bayes_mdn as bm
    folder = bm.enable_compilation_cache(sys.argv[1])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(37, 1))
    y = np.sin(2 * X[:, 0]) + 0.2 * rng.normal(size=37)
    model = bm.MDN(num_components=2, hidden_sizes=(3,))
    post = model.fit(X, y, key=jax.random.key(0), num_steps=7, num_evaluations=1)
    print(json.dumps({"folder": str(folder), "hits": len(hits),
                      "loss": post.history["loss"].tolist()}))
""")


@pytest.fixture
def restore_jax_cache_settings():
    saved = {name: getattr(jax.config, name) for name in SETTINGS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    jax_cache.reset_cache()


def _fit_in_fresh_process(tmp_path: Path, cache: Path, hash_seed: str) -> dict:
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    done = subprocess.run([sys.executable, str(script), str(cache)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _optimisation_entries(cache: Path) -> list[str]:
    """Cache entries of the optimisation program (the one that takes seconds to compile;
    whether a tiny program is written depends on its compile time, i.e. on the load)."""
    return sorted(path.name for path in cache.iterdir() if path.name.startswith("jit_run_block-"))


def test_a_second_process_loads_the_fit_programs_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _fit_in_fresh_process(tmp_path, cache, hash_seed="0")
    assert first["folder"] == str(cache.resolve())
    entries = _optimisation_entries(cache)
    assert len(entries) == 1, sorted(path.name for path in cache.iterdir())
    second = _fit_in_fresh_process(tmp_path, cache, hash_seed="0")
    assert _optimisation_entries(cache) == entries  # loaded, not compiled anew
    assert second["hits"] >= 1
    assert second["loss"] == first["loss"]  # the cached executable computes the same


def test_a_process_with_another_hash_seed_also_loads_the_fit_programs(tmp_path):
    # numpyro's Trace_ELBO emits its per-site terms in set order, so the traced program used
    # to depend on PYTHONHASHSEED (random by default) and missed the cache; SortedTraceELBO
    # visits the sites in sorted order.
    cache = tmp_path / "cache"
    first = _fit_in_fresh_process(tmp_path, cache, hash_seed="1")
    entries = _optimisation_entries(cache)
    second = _fit_in_fresh_process(tmp_path, cache, hash_seed="2")
    assert _optimisation_entries(cache) == entries
    assert second["hits"] >= 1
    assert second["loss"] == first["loss"]


def test_enable_sets_jax_options_and_returns_the_folder(tmp_path,
                                                          restore_jax_cache_settings):
    folder = bm.enable_compilation_cache(tmp_path / "new" / "cache",
                                         min_compile_time_secs=0.5)
    assert folder == (tmp_path / "new" / "cache").resolve() and folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
    assert jax.config.jax_enable_compilation_cache
    other = bm.enable_compilation_cache(str(tmp_path / "other"))  # switching folders
    assert jax.config.jax_compilation_cache_dir == str(other)
    assert (jax.config.jax_persistent_cache_min_compile_time_secs
            == _compilation_cache.DEFAULT_MIN_COMPILE_TIME_SECS)


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYES_MDN_CACHE_DIR", str(tmp_path / "chosen"))
    assert _compilation_cache.default_cache_dir() == tmp_path / "chosen"
    monkeypatch.delenv("BAYES_MDN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compilation_cache.default_cache_dir() == tmp_path / "xdg" / "bayes_mdn" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _compilation_cache.default_cache_dir() == (
        Path.home() / ".cache" / "bayes_mdn" / "jax")


def test_errors(tmp_path):
    with pytest.raises(TypeError, match="`path` must be a string or path-like"):
        bm.enable_compilation_cache(3)
    with pytest.raises(TypeError, match="`min_compile_time_secs` must be a number"):
        bm.enable_compilation_cache(tmp_path, min_compile_time_secs="1")
    with pytest.raises(ValueError, match="`min_compile_time_secs` must be >= 0"):
        bm.enable_compilation_cache(tmp_path, min_compile_time_secs=-1.0)
    file = tmp_path / "a_file"
    file.write_text("")
    with pytest.raises(ValueError, match="`path` must be a folder"):
        bm.enable_compilation_cache(file)
    assert jax.config.jax_compilation_cache_dir is None  # nothing was changed
