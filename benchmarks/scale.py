"""Scale: minibatch SVI on 10^4 to 10^7 rows, and prediction at 10^6 inputs x 1000 draws.

Model: the seed's MDN (K = 20 Normal components, hidden layers (15, 15), tanh, the default
fan-in Normal prior), float32, on the CPU. Data: the seed's generator (y ~ U(-10.5, 10.5),
x = 7 sin(0.75 y) + 0.5 y + N(0, 1)) made in NumPy float32 in chunks, so a process holds one
copy of X and y (N x 2 x 4 bytes) and no float64 temporaries of that size.

1. Fit. For each N (default 10^4, 10^5, 10^6, 10^7), a fresh subprocess imports, makes the
   data and initialises JAX (its peak RSS then is the *baseline*: a process that only
   imports and builds the data), then runs ``MDN.fit(method="svi", guide="normal",
   subsample_size=B)``: a cold fit of one block of steps (compiles every program), then
   ``--repeats`` warm fits of ``--steps`` steps in blocks of the same size (the fastest is
   reported; their compilations are counted: 0). Instrumentation, nothing else changed:
   a wrapper around ``bayes_mdn.inference.svi.run_blocks`` splits a fit into *prepare*
   (validation, float64 standardisation, the device copy, choosing the 8192 evaluation
   rows, initialisation), *steps* (the compiled blocks of SVI steps, plus one evaluation
   per block on those 8192 rows) and *finish* (guide draws, reference points); and the
   fit's closing Pareto k diagnostic (importance log-weights of 200 guide draws on all N
   rows) is replaced by equal weights and timed on its own, at the warm fit's estimate and
   compiled ahead of time, for N <= ``--pareto-max-rows`` (beyond: extrapolated linearly in
   N, marked ``~``). A thread samples the resident set size (``/proc/self/statm``) every
   5 ms for each phase's peak; the process's peak is ``getrusage(RUSAGE_SELF).ru_maxrss``.
   Reported: seconds of the steps, rows/s = steps x B / seconds and its ratio to the
   smallest N's (linear growth of the epoch: ratio 1), time per epoch = N / (rows/s) and
   its ratio to the smallest N's (linear: N / N_0), the data's bytes, the baseline, the
   fits' peak above the baseline (``extra_MB``, compilation included), the growth in the
   warm fit's prepare and steps phases, and the system share of the warm fit's CPU time.
2. Predict. A subprocess fits an SVI posterior with S = 1000 draws on 4000 rows and saves
   it; for each M, a fresh subprocess loads it and times ``mean()``, ``log_prob(y)`` (M in
   ``--inputs``, default 10^5, 10^6) and ``quantiles([0.05, 0.5, 0.95])`` (M in
   ``--quantile-inputs``, default 10^3, 10^4: bisection evaluates the mixture cdf 40 times
   per level, about 40x the cost of ``mean``) of ``posterior.predictive(X_new)``, each
   compiled first on one chunk of inputs. Each query's peak RSS above the RSS before it
   (``extra_MB``) is set against its outputs, the smallest M's figure and the 4 M S K bytes
   an unchunked float32 evaluation would hold (80 GB at M = 10^6); speed as inputs/s
   relative to the smallest M's.

Targets (issue 8): time per epoch grows linearly with rows (here: rows/s at every N at
least ``1 / LINEAR_TOLERANCE`` of the smallest N's); peak memory flat beyond the data (the
fits' peak above the baseline grows from the smallest N's by at most ``FLAT_COPIES`` x the
data's bytes plus ``SLACK_MB``); prediction in bounded memory (a query's peak above its
start grows from the smallest M's by at most its outputs' bytes plus ``SLACK_MB``).
Speed figures are ratios within one run; on a shared machine their noise is large.

    python benchmarks/scale.py [--quick] [--sizes 1e4 1e5 1e6 1e7] [--steps 1000]
                               [--batch-size 1000] [--pareto-max-rows 1e6]
                               [--inputs 1e5 1e6] [--quantile-inputs 1e3 1e4] [--draws 1000]
                               [--max-elements N]

``--quick``: N = 10^4, 10^5 (200 steps, Pareto k timed at 10^4 only), 100 draws, M up to
10^4 (quantiles 2000). Writes results/scale.{json,md} (``--quick``: results/scale_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
K, HIDDEN = 20, (15, 15)
MB = 2.0**20
#: Rows of the data the prediction posterior is fitted on, and its SVI steps.
PREDICT_FIT_ROWS, PREDICT_FIT_STEPS = 4000, 300
#: Guide draws kept by the scale fits (not used; only the predictive part needs 1000).
FIT_DRAWS = 100
QUANTILE_LEVELS = (0.05, 0.5, 0.95)
#: Linear growth: rows/s at every N at least 1 / LINEAR_TOLERANCE of the smallest N's.
LINEAR_TOLERANCE = 1.5
#: Flat memory: the fit's peak above the baseline may grow by FLAT_COPIES x the data's
#: bytes (the standardised device copy a fit holds) plus SLACK_MB over the smallest N's.
FLAT_COPIES = 1.0
SLACK_MB = 64.0
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# ----------------------------------------------------------------------------- memory
def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RssMonitor:
    """Samples this process's current resident set size in a daemon thread.

    Parameters
    ----------
    interval : float
        Seconds between samples.

    Notes
    -----
    Reads ``/proc/self/statm`` (Linux); elsewhere the current RSS is not available and
    :meth:`current` returns the peak so far (``ru_maxrss``) instead.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc = Path("/proc/self/statm").exists()
        self._peak = self.current()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()

    def current(self) -> int:
        """Current resident set size in bytes."""
        if not self._proc:
            return peak_rss()
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self) -> None:
        while True:
            self._peak = max(self._peak, self.current())
            time.sleep(self._interval)

    def reset(self) -> None:
        """Start a new phase: its peak starts at the current RSS."""
        self._peak = self.current()

    def peak(self) -> int:
        """Highest RSS sampled since the last :meth:`reset`, in bytes."""
        return max(self._peak, self.current())


# ----------------------------------------------------------------------------- data
def make_data(num_rows: int, seed: int = 0, chunk: int = 1 << 20
              ) -> tuple[np.ndarray, np.ndarray]:
    """The seed's generator in float32, written chunk by chunk into preallocated arrays.

    Parameters
    ----------
    num_rows : int
        N.
    seed : int
        NumPy generator seed.
    chunk : int
        Rows generated at once (bounds the temporaries).

    Returns
    -------
    X : numpy.ndarray, shape (N, 1), float32
    y : numpy.ndarray, shape (N, 1), float32
    """
    rng = np.random.default_rng(seed)
    X = np.empty((num_rows, 1), np.float32)
    y = np.empty((num_rows, 1), np.float32)
    for start in range(0, num_rows, chunk):
        stop = min(start + chunk, num_rows)
        part = rng.uniform(-10.5, 10.5, size=(stop - start, 1)).astype(np.float32)
        y[start:stop] = part
        X[start:stop] = (7.0 * np.sin(0.75 * part) + 0.5 * part
                         + rng.standard_normal((stop - start, 1), dtype=np.float32))
    return X, y


def cpu_usage() -> dict[str, float]:
    """This process's CPU seconds (user, system) and minor page faults so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": usage.ru_utime, "system_s": usage.ru_stime,
            "minor_faults": float(usage.ru_minflt)}


def cpu_since(start: dict[str, float]) -> dict[str, float]:
    """:func:`cpu_usage` minus `start`."""
    return {name: value - start[name] for name, value in cpu_usage().items()}


def _count_compilations(counter: list[int]) -> None:
    """Add one to ``counter[0]`` per XLA backend compilation from now on."""
    import jax

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        if event == COMPILE_EVENT:
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)


# ----------------------------------------------------------------------------- workers
def _constant_log_weights(params: Any, key: Any, X: Any, y: Any, y_scale: Any) -> np.ndarray:
    """Stand-in for SVI's closing importance log-weights (the Pareto k of the guide): equal
    weights, so ``info["pareto_k"]`` is 0.0. The real computation is timed on its own."""
    from bayes_mdn.inference._data import NUM_PARETO_DRAWS

    return np.zeros(NUM_PARETO_DRAWS, np.float32)


def fit_worker(num_rows: int, num_steps: int, batch_size: int, block_size: int,
               time_pareto: bool, repeats: int) -> dict[str, Any]:
    """One size of the fit part, in this (fresh) process; see the module docstring.

    Parameters
    ----------
    num_rows : int
        N.
    num_steps : int
        Steps of the timed (warm) fit; a multiple of `block_size`.
    batch_size : int
        B, the minibatch size (``subsample_size``).
    block_size : int
        Steps per compiled block (the cold fit runs one block).
    time_pareto : bool
        Also time the real importance log-weights of the Pareto k diagnostic (200 guide
        draws x all N rows) at the warm fit's estimate, compiled ahead of time.
    repeats : int
        Warm fits; the one with the fastest steps is reported (the others' times are kept).

    Returns
    -------
    dict
        Timings (seconds) and memory figures (bytes) of the cold and the warm fit.
    """
    started = time.perf_counter()
    import dataclasses

    import jax
    import jax.numpy as jnp

    import bayes_mdn as bm
    import bayes_mdn.inference.svi as svi_module

    monitor = RssMonitor()
    X, y = make_data(num_rows)
    jax.block_until_ready(jnp.zeros(8) + 1.0)  # the backend is up before the baseline
    baseline_peak, baseline_current = peak_rss(), monitor.current()
    setup_s = time.perf_counter() - started

    # Instrumentation: phase marks around the block loop; the Pareto k stubbed (see above).
    marks: list[tuple[float, int, int]] = []
    captured: dict[str, Any] = {}
    original_run_blocks, original_kernels = svi_module.run_blocks, svi_module._svi_kernels

    def timed_run_blocks(*args: Any, **kwargs: Any) -> Any:
        marks.append((time.perf_counter(), monitor.peak(), monitor.current()))
        monitor.reset()
        result = original_run_blocks(*args, **kwargs)
        jax.block_until_ready(result.estimate)
        marks.append((time.perf_counter(), monitor.peak(), monitor.current()))
        monitor.reset()
        captured.update(estimate=result.estimate, data=args[3])
        return result

    def stubbed_kernels(*args: Any, **kwargs: Any) -> Any:
        kernels = original_kernels(*args, **kwargs)
        captured["importance_log_weights"] = kernels.importance_log_weights
        return dataclasses.replace(kernels, importance_log_weights=_constant_log_weights)

    svi_module.run_blocks, svi_module._svi_kernels = timed_run_blocks, stubbed_kernels
    compilations = [0]
    _count_compilations(compilations)
    model = bm.MDN(num_components=K, hidden_sizes=HIDDEN)
    options = dict(method="svi", guide="normal", subsample_size=batch_size,
                   num_draws=FIT_DRAWS)

    def fit(key: int, steps: int) -> tuple[Any, dict[str, float]]:
        marks.clear()
        captured.clear()  # the previous fit's data must not count against this one's peak
        monitor.reset()
        start_rss, start_cpu = monitor.current(), cpu_usage()
        begin = time.perf_counter()
        posterior = model.fit(X, y, key=jax.random.key(key), num_steps=steps,
                              num_evaluations=steps // block_size, **options)
        jax.block_until_ready(posterior.draws)
        end = time.perf_counter()
        (enter, prepare_peak, steps_start), (leave, steps_peak, finish_start) = marks
        return posterior, {
            "total_s": end - begin, "prepare_s": enter - begin, "steps_s": leave - enter,
            "finish_s": end - leave, "start_rss": start_rss, "prepare_peak": prepare_peak,
            "steps_start_rss": steps_start, "steps_peak": steps_peak,
            "finish_start_rss": finish_start, "finish_peak": monitor.peak(),
            "cpu": cpu_since(start_cpu)}

    before = compilations[0]
    _, cold = fit(0, block_size)
    cold_compilations = compilations[0] - before
    before = compilations[0]
    warm_fits = [fit(1 + index, num_steps) for index in range(repeats)]
    warm_compilations = compilations[0] - before
    posterior, warm = min(warm_fits, key=lambda pair: pair[1]["steps_s"])
    loss = np.asarray(posterior.history["loss"])
    result = {
        "num_rows": num_rows, "num_steps": num_steps, "batch_size": batch_size,
        "block_size": block_size, "data_bytes": int(X.nbytes + y.nbytes),
        "setup_s": setup_s, "baseline_peak": baseline_peak,
        "baseline_current": baseline_current, "cold": cold, "warm": warm,
        "cold_compilations": cold_compilations, "warm_compilations": warm_compilations,
        "warm_steps_s": [timing["steps_s"] for _, timing in warm_fits],
        "loss_first_block": float(np.mean(loss[:block_size])),
        "loss_last_block": float(np.mean(loss[-block_size:])),
        "train_log_likelihood": float(posterior.history["train_log_likelihood"][-1]),
        "fit_peak": peak_rss(),
    }
    if time_pareto:
        data, estimate = captured["data"], captured["estimate"]
        arguments = (estimate, jax.random.key(2), data.X, data.y, data.y_scale)
        begin = time.perf_counter()
        compiled = captured["importance_log_weights"].lower(*arguments).compile()
        compile_s = time.perf_counter() - begin
        monitor.reset()
        start_rss = monitor.current()
        begin = time.perf_counter()
        log_weights = jax.block_until_ready(compiled(*arguments))
        result["pareto"] = {"seconds": time.perf_counter() - begin, "compile_s": compile_s,
                            "peak_above_start": monitor.peak() - start_rss,
                            "pareto_k": bm.diagnostics.pareto_k(log_weights)}
    result["process_peak"] = peak_rss()
    return result


def _queries() -> dict[str, Callable[[Any, np.ndarray], np.ndarray]]:
    """The timed predictive queries: name -> (predictive, y) -> result."""
    return {
        "mean": lambda pred, y: pred.mean(),
        "quantiles": lambda pred, y: pred.quantiles(list(QUANTILE_LEVELS)),
        "log_prob": lambda pred, y: pred.log_prob(y),
    }


def posterior_worker(num_draws: int, path: str) -> dict[str, Any]:
    """Fit the prediction part's SVI posterior (S draws, 4000 rows) and save it to `path`."""
    import jax

    import bayes_mdn as bm

    X_train, y_train = make_data(PREDICT_FIT_ROWS)
    model = bm.MDN(num_components=K, hidden_sizes=HIDDEN)
    begin = time.perf_counter()
    posterior = model.fit(X_train, y_train, key=jax.random.key(0), method="svi",
                          guide="normal", num_steps=PREDICT_FIT_STEPS, num_draws=num_draws,
                          num_evaluations=1)
    fit_s = time.perf_counter() - begin
    posterior.save(path)
    return {"fit_s": fit_s, "num_draws": num_draws}


def predict_worker(num_inputs: int, path: str, queries: list[str],
                   max_elements: int | None = None) -> dict[str, Any]:
    """The prediction part for M inputs, in this (fresh) process; see the module docstring.

    Parameters
    ----------
    num_inputs : int
        M.
    path : str
        The saved posterior (from :func:`posterior_worker`).
    queries : list of str
        Names from :func:`_queries`, timed in this order.
    max_elements : int, optional
        ``Posterior.predictive``'s memory budget (default: the library's).

    Returns
    -------
    dict
        Per query: seconds, peak RSS above the RSS before it (bytes), output bytes.
    """
    import jax
    import jax.numpy as jnp

    import bayes_mdn as bm

    monitor = RssMonitor()
    jax.block_until_ready(jnp.zeros(8) + 1.0)
    posterior = bm.load(path)
    X_new, y_new = make_data(num_inputs, seed=1)
    budget = {} if max_elements is None else {"max_elements": max_elements}
    pred = posterior.predictive(X_new, **budget)
    functions = _queries()
    # Compile every query on a slice of one input chunk first: the slice is chunked like
    # the full query (the chunk plan is private API, read here for that only).
    chunks = {name: pred._chunk_plan(len(QUANTILE_LEVELS) if name == "quantiles" else 1)[0]
              for name in queries}
    warmup_s = {}
    for name in queries:
        begin = time.perf_counter()
        functions[name](pred[:chunks[name]], y_new[:chunks[name]])
        warmup_s[name] = time.perf_counter() - begin
    compilations = [0]
    _count_compilations(compilations)
    baseline_peak = peak_rss()
    results = {}
    for name in queries:
        before = compilations[0]
        monitor.reset()
        start_rss, start_cpu = monitor.current(), cpu_usage()
        begin = time.perf_counter()
        output = np.asarray(functions[name](pred, y_new))
        seconds = time.perf_counter() - begin
        cpu = cpu_since(start_cpu)
        results[name] = {"seconds": seconds, "start_rss": start_rss,
                         "peak_above_start": monitor.peak() - start_rss,
                         "output_bytes": int(output.nbytes),
                         "output_shape": list(output.shape),
                         "finite": bool(np.all(np.isfinite(output))),
                         "compilations": compilations[0] - before,
                         "warmup_s": warmup_s[name], "input_chunk": chunks[name],
                         "cpu": cpu}
        del output
    return {"num_inputs": num_inputs, "num_draws": pred.num_draws,
            "num_components": pred.num_components,
            "input_bytes": int(X_new.nbytes + y_new.nbytes),
            "max_elements": pred.max_elements, "baseline_peak": baseline_peak,
            "queries": results, "process_peak": peak_rss()}


def run_worker(arguments: list[str]) -> dict[str, Any]:
    """Run this script with `arguments` in a fresh Python process; return its JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {arguments} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------- tables
def _count(value: int) -> str:
    """10000 -> "1e4"; other counts as they are."""
    exponent = round(np.log10(value))
    return f"1e{exponent}" if value == 10**exponent else str(value)


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def fit_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per N, with ratios against the smallest N.

    ``pareto_s``: seconds of the closing Pareto k's importance log-weights, measured where
    timed, otherwise extrapolated linearly in N from the largest N timed (marked ``~``).
    """
    base = results[0]
    timed_pareto = [r for r in results if "pareto" in r]

    def rate(result: dict[str, Any]) -> float:
        return result["num_steps"] * result["batch_size"] / result["warm"]["steps_s"]

    def extra(result: dict[str, Any]) -> float:
        return (result["fit_peak"] - result["baseline_peak"]) / MB

    rows = []
    for result in results:
        n, warm = result["num_rows"], result["warm"]
        throughput = rate(result) / rate(base)
        epoch_s = n / rate(result)
        grown = extra(result) - extra(base)
        allowed = FLAT_COPIES * (result["data_bytes"] - base["data_bytes"]) / MB + SLACK_MB
        if "pareto" in result:
            pareto_s: Any = result["pareto"]["seconds"]
            pareto_mb: Any = result["pareto"]["peak_above_start"] / MB
        elif timed_pareto:
            reference = timed_pareto[-1]
            pareto_s = f"~{reference['pareto']['seconds'] * n / reference['num_rows']:.3g}"
            pareto_mb = "-"
        else:
            pareto_s = pareto_mb = "-"
        rows.append({
            "part": "fit (svi, minibatch)", "size": f"N={_count(n)}",
            "steps x batch": f"{result['num_steps']} x {result['batch_size']}",
            "seconds": warm["steps_s"],
            "ms_per_step": 1e3 * warm["steps_s"] / result["num_steps"],
            "per_s": rate(result), "speed_ratio": throughput, "epoch_s": epoch_s,
            "epoch_ratio": epoch_s / (base["num_rows"] / rate(base)),
            "linear_ratio": n / base["num_rows"],
            "other_fit_s": warm["prepare_s"] + warm["finish_s"], "pareto_s": pareto_s,
            "sys_cpu_share": warm["cpu"]["system_s"]
            / max(1e-9, warm["cpu"]["user_s"] + warm["cpu"]["system_s"]),
            "data_MB": result["data_bytes"] / MB, "baseline_MB": result["baseline_peak"] / MB,
            "peak_MB": result["fit_peak"] / MB, "extra_MB": extra(result),
            "prepare_extra_MB": (warm["prepare_peak"] - warm["start_rss"]) / MB,
            "steps_extra_MB": (warm["steps_peak"] - warm["steps_start_rss"]) / MB,
            "pareto_extra_MB": pareto_mb,
            "target": f"speed_ratio >= {1 / LINEAR_TOLERANCE:.2g}; extra_MB growth <= "
                      f"{FLAT_COPIES:g} x data + {SLACK_MB:g} MB",
            "status": "baseline" if result is base else
            f"{verdict(throughput >= 1 / LINEAR_TOLERANCE)} (time); "
            f"{verdict(grown <= allowed)} (memory)",
        })
    return rows


def predict_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per (query, M), with ratios against the query's smallest M."""
    rows = []
    names = list(dict.fromkeys(name for result in results for name in result["queries"]))
    for name in names:
        runs = [result for result in results if name in result["queries"]]
        base = runs[0]
        reference = base["queries"][name]
        for result in runs:
            m, s, k = result["num_inputs"], result["num_draws"], result["num_components"]
            query = result["queries"][name]
            speed = (reference["seconds"] / base["num_inputs"]) / (query["seconds"] / m)
            grown = (query["peak_above_start"] - reference["peak_above_start"]) / MB
            allowed = (query["output_bytes"] - reference["output_bytes"]) / MB + SLACK_MB
            rows.append({
                "part": f"predict {name}", "size": f"M={_count(m)} x S={s} x K={k}",
                "seconds": query["seconds"], "per_s": m / query["seconds"],
                "speed_ratio": speed, "data_MB": result["input_bytes"] / MB,
                "output_MB": query["output_bytes"] / MB,
                "baseline_MB": query["start_rss"] / MB, "peak_MB": result["process_peak"] / MB,
                "extra_MB": query["peak_above_start"] / MB,
                "unchunked_MB": 4.0 * m * s * k / MB,
                "sys_cpu_share": query["cpu"]["system_s"]
                / max(1e-9, query["cpu"]["user_s"] + query["cpu"]["system_s"]),
                "target": f"extra_MB growth <= outputs + {SLACK_MB:g} MB",
                "status": "baseline" if result is base else verdict(grown <= allowed),
            })
    return rows


# ----------------------------------------------------------------------------- main
def _sizes(values: list[float] | None, default: list[float]) -> list[int]:
    return [int(value) for value in (default if values is None else values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--sizes", nargs="*", type=float, default=None,
                        help="training rows N (default 1e4 1e5 1e6 1e7)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the timed fit")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=None,
                        help="warm fits per N, fastest steps reported (default 3)")
    parser.add_argument("--pareto-max-rows", type=float, default=None,
                        help="time the closing Pareto k up to this N (default 1e6)")
    parser.add_argument("--inputs", nargs="*", type=float, default=None,
                        help="inputs M for mean and log_prob (default 1e5 1e6)")
    parser.add_argument("--quantile-inputs", nargs="*", type=float, default=None,
                        help="inputs M for quantiles (default 1e3 1e4)")
    parser.add_argument("--draws", type=int, default=None, help="posterior draws S")
    parser.add_argument("--max-elements", type=int, default=None,
                        help="predictive memory budget (default: the library's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fit", "predict"])
    parser.add_argument("--worker", choices=["fit", "posterior", "predict"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--block-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--time-pareto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queries", nargs="*", default=list(_queries()),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "fit":
        print(json.dumps(fit_worker(args.rows, args.steps, args.batch_size, args.block_size,
                                    args.time_pareto, args.repeats)))
        return
    if args.worker == "posterior":
        print(json.dumps(posterior_worker(args.draws, args.path)))
        return
    if args.worker == "predict":
        print(json.dumps(predict_worker(args.rows, args.path, args.queries,
                                        args.max_elements)))
        return

    quick = args.quick
    sizes = _sizes(args.sizes, [1e4, 1e5] if quick else [1e4, 1e5, 1e6, 1e7])
    inputs = _sizes(args.inputs, [2e3, 1e4] if quick else [1e5, 1e6])
    quantile_inputs = _sizes(args.quantile_inputs, [500, 2000] if quick else [1e3, 1e4])
    pareto_max_rows = args.pareto_max_rows or (1e4 if quick else 1e6)
    num_steps = args.steps or (200 if quick else 1000)
    repeats = args.repeats or (1 if quick else 3)
    num_draws = args.draws or (100 if quick else 1000)
    block_size = max(1, num_steps // 4)
    num_steps = block_size * (num_steps // block_size)
    payload: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "model": {"K": K, "hidden": HIDDEN, "family": "normal", "prior": "default"},
        "fit": {"sizes": sizes, "num_steps": num_steps, "batch_size": args.batch_size,
                "block_size": block_size, "repeats": repeats, "guide": "normal",
                "num_draws": FIT_DRAWS,
                "pareto_max_rows": pareto_max_rows},
        "predict": {"inputs": inputs, "quantile_inputs": quantile_inputs,
                    "num_draws": num_draws, "fit_rows": PREDICT_FIT_ROWS,
                    "fit_steps": PREDICT_FIT_STEPS, "quantile_levels": QUANTILE_LEVELS,
                    "max_elements": args.max_elements},
        "targets": {"linear_tolerance": LINEAR_TOLERANCE, "flat_copies": FLAT_COPIES,
                    "slack_mb": SLACK_MB},
    }
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "fit" not in args.skip:
        results = []
        for n in sizes:
            arguments = ["--worker", "fit", "--rows", str(n), "--steps", str(num_steps),
                         "--batch-size", str(args.batch_size), "--block-size",
                         str(block_size), "--repeats", str(repeats)]
            result = run_worker(arguments + (["--time-pareto"] if n <= pareto_max_rows
                                             else []))
            results.append(result)
            pareto = result.get("pareto", {}).get("seconds", float("nan"))
            print(f"fit N={_count(n)}: {num_steps} steps {result['warm']['steps_s']:.2f} s, "
                  f"fit {result['warm']['total_s']:.2f} s (cold {result['cold']['total_s']:.2f}"
                  f" s), pareto k {pareto:.2f} s, peak {result['process_peak'] / MB:.0f} MB, "
                  f"wall {result['wall_s']:.1f} s", flush=True)
        payload["fit_results"] = results
        rows += fit_rows(results)
    if "predict" not in args.skip:
        results = []
        with tempfile.TemporaryDirectory(prefix="bayes_mdn_scale_") as folder:
            path = str(Path(folder) / "posterior.bmdn")
            payload["predict"]["posterior"] = run_worker(
                ["--worker", "posterior", "--draws", str(num_draws), "--path", path])
            for m in sorted(set(inputs) | set(quantile_inputs)):
                queries = [name for name in _queries()
                           if m in (quantile_inputs if name == "quantiles" else inputs)]
                budget = ([] if args.max_elements is None
                          else ["--max-elements", str(args.max_elements)])
                result = run_worker(["--worker", "predict", "--rows", str(m), "--path", path,
                                     *budget, "--queries", *queries])
                results.append(result)
                print(f"predict M={_count(m)}: " + ", ".join(
                    f"{name} {q['seconds']:.2f} s (+{q['peak_above_start'] / MB:.0f} MB)"
                    for name, q in result["queries"].items())
                    + f", wall {result['wall_s']:.1f} s", flush=True)
        payload["predict_results"] = results
        rows += predict_rows(results)
    payload["wall_s"] = time.perf_counter() - started
    sys.path.insert(0, str(HERE))
    from _common import write_results

    write_results("scale_quick" if quick else "scale", payload, rows)

if __name__ == "__main__":
    main()
