"""Compilation on the hot paths: a fit compiles once per model, data shape and options, and
a predictive once per model and input shape. A refit with another key and other data of the
same shape, or a predictive at new inputs of the same shape, traces and compiles nothing.

Counted with jax.monitoring events: every backend compilation and every jaxpr trace (a
tracing-cache miss) records one. Each test first checks that its first call does record
compilations (a configuration no other test uses), so that a renamed event cannot make the
zero counts pass vacuously.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import numpy as np
import pytest

import bayes_mdn as bm

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class Counter:
    """Names of the functions compiled and traced while listening."""

    def __init__(self) -> None:
        self.compiled: list[str] = []
        self.traced: list[str] = []

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.compiled.append(str(kwargs.get("fun_name")))
        elif event == TRACE_EVENT:
            self.traced.append(str(kwargs.get("fun_name")))


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    counter = Counter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        yield counter
    finally:
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is None:  # older jax
            from jax._src import monitoring

            unregister = monitoring._unregister_event_duration_listener_by_callback
        unregister(counter)


@pytest.fixture(scope="module")
def data():
    """Two data sets of the same shape (different values) and two test sets likewise."""
    rng = np.random.default_rng(0)

    def draw(rows):
        X = rng.normal(size=(rows, 1))
        return X, np.sin(2 * X[:, 0]) + 0.2 * rng.normal(size=rows)

    return draw(43), draw(43), draw(29), draw(29)


@pytest.mark.parametrize(("method", "options"), [
    ("map", {"num_steps": 23, "num_evaluations": 1}),
    ("svi", {"num_steps": 23, "num_evaluations": 1, "num_draws": 17, "num_eval_draws": 3}),
    ("ensemble", {"num_steps": 23, "num_evaluations": 1, "num_members": 3}),
])
def test_refit_with_new_key_and_data_of_the_same_shape_compiles_nothing(data, method,
                                                                        options):
    (X, y), (X2, y2), _, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    with counting() as first:
        model.fit(X, y, key=jax.random.key(0), method=method, **options)
    assert first.compiled, "no compilation recorded: has the monitoring event been renamed?"
    with counting() as second:
        posterior = model.fit(X2, y2, key=jax.random.key(1), method=method, **options)
    assert second.compiled == [] and second.traced == []
    assert np.isfinite(posterior.history["loss"]).all()


def test_refit_of_nuts_compiles_nothing(data):
    """numpyro's MCMC.run alone recompiles its sampling loop on every call; the fit runs
    it inside one cached jit instead."""
    (X, y), (X2, y2), _, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(3,))
    options = dict(method="nuts", num_chains=2, num_warmup=7, num_samples=5, max_tree_depth=3)
    with counting() as first:
        model.fit(X, y, key=jax.random.key(0), **options)
    assert first.compiled
    with counting() as second:
        posterior = model.fit(X2, y2, key=jax.random.key(1), **options)
    assert second.compiled == [] and second.traced == []
    assert posterior.draws["loc.bias"].shape[:2] == (2, 5)


def test_predictive_at_new_inputs_of_the_same_shape_compiles_nothing(data):
    (X, y), _, (X_test, y_test), (X_test2, y_test2) = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    posterior = model.fit(X, y, key=jax.random.key(0), method="ensemble", num_members=3,
                          num_steps=10, num_evaluations=1)
    with counting() as first:
        np.asarray(posterior.predictive(X_test).log_prob(y_test))
    assert first.compiled
    with counting() as second:
        log_prob = np.asarray(posterior.predictive(X_test2).log_prob(y_test2))
    assert second.compiled == [] and second.traced == []
    assert log_prob.shape == (29,) and np.isfinite(log_prob).all()
