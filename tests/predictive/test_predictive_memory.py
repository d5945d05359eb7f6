"""Chunking of PredictiveMixture over inputs and draws: same results, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import exact_posterior, random_posterior

import bayes_mdn as bm
from bayes_mdn import predictive
from bayes_mdn.predictive import _kernels

BUDGET = predictive.DEFAULT_MAX_ELEMENTS
NUM_DRAWS, NUM_COMPONENTS, NUM_INPUTS = 1000, 20, 10**6


def _every_query(pred: bm.PredictiveMixture) -> dict[str, object]:
    y = np.linspace(-3.0, 6.0, pred.num_inputs)
    key = jax.random.key(7)
    return {
        "log_prob": pred.log_prob(y),
        "cdf": pred.cdf(y),
        "mean": pred.mean(),
        "variance": pred.variance(),
        "variance_decomposition": pred.variance_decomposition(),
        "quantiles": pred.quantiles([0.01, 0.2, 0.5, 0.8, 0.99]),
        "log_prob_grid": pred.log_prob_grid(np.linspace(-6.0, 9.0, 13)),
        "sample": pred.sample(key, num_samples=11),
        "hdr": pred.hdr(0.8, grid_size=256),
        "entropy_quadrature": pred.entropy_decomposition(grid_size=128),
        "entropy_monte_carlo": pred.entropy_decomposition(key=key, method="monte_carlo",
                                                          num_samples=16),
        "mixture_parameters": pred.mixture_parameters(),
    }


def _assert_same(expected: dict[str, object], actual: dict[str, object]) -> None:
    for name, value in expected.items():
        for want, got in zip(jax.tree.leaves(value), jax.tree.leaves(actual[name]), strict=True):
            assert np.all(np.isfinite(got)), name
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.fixture(scope="module")
def seven_draws():
    """7 draws of K = 2 components (hidden width 2, so K x D counts per draw) at 5 inputs."""
    posterior = random_posterior(7, 2, hidden_sizes=(2,))
    X = np.random.default_rng(1).normal(size=(5, 2))
    reference = posterior.predictive(X)
    assert reference._chunk_plan() == (8, 7)  # one call, all draws at once
    return posterior, X, reference


@pytest.mark.filterwarnings("ignore:.*too coarse:UserWarning")
def test_draw_chunking_does_not_change_results(seven_draws):
    # A budget of 4 terms: one input per call, draws in chunks of 2 + 2 + 2 + 1 (the last
    # chunk padded with a masked copy); quantiles re-run the network per bisection step.
    posterior, X, reference = seven_draws
    chunked = posterior.predictive(X, max_elements=4)
    assert chunked._chunk_plan() == (1, 2)
    assert chunked._chunk_plan(5) == (1, 1)
    _assert_same(_every_query(reference), _every_query(chunked))


def test_cached_draw_chunks_give_the_same_quantiles(seven_draws):
    # 50 terms: log_prob takes 2 inputs with all draws per call; 5 quantile levels split the
    # draws 4 + 3 (padded to 8) and keep both chunks' mixtures for the bisection.
    posterior, X, reference = seven_draws
    chunked = posterior.predictive(X, max_elements=50)
    assert chunked._chunk_plan() == (2, 7)
    assert chunked._chunk_plan(5) == (1, 4)
    levels = [0.01, 0.2, 0.5, 0.8, 0.99]
    y = np.linspace(-3.0, 6.0, len(X))
    _assert_same({"quantiles": reference.quantiles(levels), "log_prob": reference.log_prob(y)},
                 {"quantiles": chunked.quantiles(levels), "log_prob": chunked.log_prob(y)})


@pytest.mark.parametrize(("extra", "per_input"), [(1, 0), (3, 0), (99, 0), (512, 0), (2048, 0),
                                                  (1, 1000 * NUM_COMPONENTS)])
def test_chunk_plan_obeys_budget_at_scale(extra, per_input):
    rng = np.random.default_rng(0)
    shape = (NUM_DRAWS, NUM_COMPONENTS)
    posterior = exact_posterior(rng.normal(size=shape), rng.normal(size=shape),
                                rng.uniform(0.5, 2.0, size=shape))
    pred = posterior.predictive(np.zeros((NUM_INPUTS, 1)))
    input_chunk, draw_chunk = pred._chunk_plan(extra, per_input)
    assert input_chunk & (input_chunk - 1) == 0, "input chunks are powers of two"
    assert 1 <= draw_chunk <= NUM_DRAWS
    assert input_chunk * (draw_chunk * NUM_COMPONENTS * extra + per_input) <= BUDGET
    if NUM_DRAWS * NUM_COMPONENTS * extra > BUDGET:  # one input's mixture is over budget
        assert input_chunk == 1 and draw_chunk < NUM_DRAWS
        num_chunks = -(-NUM_DRAWS // draw_chunk)
        assert num_chunks * draw_chunk - NUM_DRAWS < num_chunks, "balanced draw chunks"
    else:
        assert draw_chunk == NUM_DRAWS


def test_wide_hidden_layer_counts_against_the_budget():
    posterior = random_posterior(1000, 20, hidden_sizes=(256,))
    input_chunk, draw_chunk = posterior.predictive(np.zeros((10**6, 2)))._chunk_plan()
    assert input_chunk * draw_chunk * 256 <= BUDGET


@pytest.mark.parametrize("query", ["log_prob", "quantiles", "log_prob_grid", "entropy",
                                   "sample"])
def test_compiled_kernels_stay_within_a_few_budgets(query):
    # S = 1000 draws, K = 20, M = 1e6: XLA's own accounting of the scratch memory of one call
    # at the planned chunk shapes, without running it. All draws at once would need
    # 1e6 x 1000 x 20 x 4 bytes = 80 GB for log_prob alone.
    rng = np.random.default_rng(0)
    shape = (NUM_DRAWS, NUM_COMPONENTS)
    posterior = exact_posterior(rng.normal(size=shape), rng.normal(size=shape),
                                rng.uniform(0.5, 2.0, size=shape))
    pred = posterior.predictive(np.zeros((NUM_INPUTS, 1)))
    draws = {name: jnp.asarray(value) for name, value in pred.draws.items()}
    y_shift, y_scale = pred._scalers()

    def rows(chunk, *shape):
        return jax.ShapeDtypeStruct((chunk, *shape), jnp.float32)

    if query == "log_prob":
        m, b = pred._chunk_plan()
        lowered = _kernels._log_prob_kernel.lower(pred.model, b, draws, y_shift, y_scale,
                                                    rows(m, 1), rows(m, 1))
    elif query == "quantiles":
        m, b = pred._chunk_plan(512)  # 512 levels: the draws are split
        lowered = _kernels._quantile_kernel.lower(pred.model, b, 40, True, draws, y_shift,
                                                    y_scale, rows(m, 1), rows(512))
    elif query == "log_prob_grid":
        m, b = pred._chunk_plan(2048)
        lowered = _kernels._log_prob_grid_kernel.lower(pred.model, b, draws, y_shift,
                                                         y_scale, rows(m, 1), rows(m, 2048))
    elif query == "entropy":
        m, b = pred._chunk_plan(1024)
        lowered = _kernels._entropy_grid_kernel.lower(pred.model, b, 1024, draws, y_shift,
                                                        y_scale, rows(m, 1), rows(m), rows(m))
    else:
        m, b = pred._chunk_plan(1, 1000 * NUM_COMPONENTS)  # as sample(key, 1000) plans it
        lowered = _kernels._sample_kernel.lower(pred.model, b, 1000, draws, y_shift, y_scale,
                                                  rows(m, 1), jax.random.key(0), 0)
    stats = lowered.compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    assert stats.temp_size_in_bytes <= 6 * 4 * BUDGET


_PEAK_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from _posteriors import exact_posterior
    S, K, M = 1000, 20, 10**6
    rng = np.random.default_rng(0)
    posterior = exact_posterior(rng.normal(size=(S, K)), rng.normal(size=(S, K)),
                                rng.uniform(0.5, 2.0, size=(S, K)))
    y = rng.normal(size=M)
    pred = posterior.predictive(np.zeros((M, 1)))
    pred[:300].log_prob(y[:300])  # compile the kernel at the planned chunk shape first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log_prob = pred.log_prob(y)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "finite": bool(np.isfinite(log_prob).all()),
                      "shape": list(log_prob.shape)}))
""")


@pytest.mark.slow
def test_log_prob_at_scale_has_bounded_peak_memory(request):
    # Runs 2e10 (input, draw, component) terms: minutes on two CPU cores. A fresh process, so
    # that the peak resident size is not an earlier test's high-water mark.
    tests_dir = str(request.path.parent.parent)  # tests/, where _posteriors.py is
    result = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, tests_dir],
                            capture_output=True, text=True, check=True, timeout=3600)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finite"] and report["shape"] == [NUM_INPUTS]
    assert report["growth_kib"] * 1024 < 512 * 2**20  # vs 80 GB for all terms at once


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_chunked_outputs_are_gathered_in_order_into_fresh_arrays(batch_axis):
    from bayes_mdn.predictive._chunks import _map_chunks

    X = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)

    def kernel(X_chunk, index):  # rows on `batch_axis`; padded rows are zeros
        rows = X_chunk.sum(axis=1)
        stacked = np.stack([rows, rows + index])
        return {"rows": rows if batch_axis == 0 else rows[None],
                "pair": stacked.T if batch_axis == 0 else stacked}

    out = _map_chunks(kernel, (X,), 8, batch_axis=batch_axis)
    rows = X.sum(axis=1)
    chunk_index = np.arange(23) // 8
    expected_pair = np.stack([rows, rows + chunk_index])
    if batch_axis == 0:
        np.testing.assert_array_equal(out["rows"], rows)
        np.testing.assert_array_equal(out["pair"], expected_pair.T)
    else:
        np.testing.assert_array_equal(out["rows"], rows[None])
        np.testing.assert_array_equal(out["pair"], expected_pair)
    assert out["pair"].flags.writeable and out["pair"].flags.owndata
