"""SG-MCMC (``method="sgmcmc"``, cyclical SGHMC with minibatches) against NUTS, and at scale.

(a) Seed problem, n = 4000 training points and the 20 000 test points of
    ``inference_seed.py`` (same data key, model K = 20, (15, 15), prior FanInNormal(2) with
    FanInNormal(0.5) on the scale head). Both samplers start from the same deep ensemble
    (8 members x 2000 MAP steps, one member per chain) and are timed cold (trace, compile,
    run: one call each). NUTS has the setting of ``inference_seed.py`` (4 chains, 100 warm-up,
    50 draws, tree depth 5; recorded there: test log-likelihood -1.319). The SG-MCMC step
    size is tuned on the training rows only: the 4000 are split 3600 / 400, an ensemble is
    fitted on the 3600, each candidate step size samples from it, and the best validation
    log-likelihood wins; the final fit then uses all 4000. Reported: test log-likelihood
    (``SCORE_DRAWS`` predictive draws), its difference to NUTS in the same run (target:
    within 0.01), coverage of the central 90 % interval, fit seconds and the time ratio
    SG-MCMC / NUTS (target: below 1), function-space R-hat / ESS from ``summary()``, and the
    ensemble the chains start from (the starting point's own score).

(b) Scale: the seed generator's data at N = 10^4, 10^5, 10^6 rows (``scale.make_data``,
    float32), one fresh subprocess per N. A cold fit of one cycle compiles; then warm fits of
    ``--cycles`` and 2 x ``--cycles`` cycles (fixed steps per cycle, 4 chains, B rows per
    step) are timed, the compiled cycles on their own (the fit's other phases: validation,
    standardisation, scoring, are O(N) or fixed). Memory: the resident set size sampled every
    5 ms during the cycles, its peak above the RSS when the cycles start (flat per step:
    the same for 1x and 2x steps and at every N), and the process's peak above the baseline
    (a process that imported and made the data). Time: seconds per step at each N (flat in
    N) and the 2x / 1x cycle-time ratio (linear in steps: 2), in wall-clock seconds (the
    fastest of ``REPEATS`` warm fits) and in the process's CPU seconds (user + system), which
    other processes' load on a shared machine disturbs far less.

    PYTHONPATH=$PWD python benchmarks/sgmcmc_seed.py [--quick] [--part a b]
        [--sizes 1e4 1e5 1e6] [--cycles 2] [--steps-per-cycle 500] [--batch-size 1000]

Writes results/sgmcmc_seed.{json,md} and results/sgmcmc_scale.{json,md} (``--quick``:
``*_quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MB = 2.0**20
NUM_TRAIN, NUM_TEST, NUM_VALIDATION = 4000, 20_000, 400
SCORE_DRAWS, COVERAGE_DRAWS = 400, 100
#: Warm fits per (N, steps) in part (b); the fastest is reported.
REPEATS = 3
NUTS = dict(num_chains=4, num_warmup=100, num_samples=50, max_tree_depth=5)
ENSEMBLE = dict(num_members=8, num_steps=2000, ema_decay=0.995)
SGMCMC = dict(num_chains=4, num_cycles=4, num_steps_per_cycle=500, num_samples_per_cycle=25,
              thinning=4, batch_size=500)
STEP_SIZES = (0.001, 0.003, 0.01)
QUICK = dict(nuts=dict(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4),
             ensemble=dict(num_members=2, num_steps=300, ema_decay=0.99),
             sgmcmc=dict(num_chains=2, num_cycles=2, num_steps_per_cycle=100,
                         num_samples_per_cycle=10, thinning=2, batch_size=500),
             step_sizes=(0.003, 0.01))


def model_of():
    import bayes_mdn as bm
    from bayes_mdn.priors import FanInNormal

    return bm.MDN(num_components=20, hidden_sizes=(15, 15),
                  prior={"default": FanInNormal(2.0), "scale": FanInNormal(0.5)})


def score(posterior, X_test, y_test) -> tuple[float, float]:
    total = posterior.num_chains * posterior.num_draws
    predictive = posterior.predictive(X_test, num_draws=min(SCORE_DRAWS, total))
    test_ll = float(np.mean(predictive.log_prob(y_test)))
    coarse = posterior.predictive(X_test, num_draws=min(COVERAGE_DRAWS, total))
    low, high = coarse.quantiles([0.05, 0.95])[:, :, 0]
    coverage = float(np.mean((y_test[:, 0] >= low) & (y_test[:, 0] <= high)))
    return test_ll, coverage


def clock(function):
    import jax

    started = time.perf_counter()
    result = jax.block_until_ready(function())
    return result, time.perf_counter() - started


# ----------------------------------------------------------------------------- (a) seed
def seed_part(quick: bool) -> dict[str, Any]:
    import jax

    import bayes_mdn as bm

    nuts_options = QUICK["nuts"] if quick else NUTS
    ensemble_options = QUICK["ensemble"] if quick else ENSEMBLE
    sg_options = QUICK["sgmcmc"] if quick else SGMCMC
    step_sizes = QUICK["step_sizes"] if quick else STEP_SIZES
    total = NUM_TRAIN + NUM_TEST
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=NUM_TRAIN / total)
    exact = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    model = model_of()
    rows: list[dict[str, Any]] = []

    def record(method: str, posterior, seconds: float, **extra: Any) -> None:
        test_ll, coverage = score(posterior, X_test, y_test)
        summary = posterior.summary()
        rows.append({"method": method, "test_ll": test_ll, "gap_to_exact": exact - test_ll,
                     "coverage_90": coverage, "fit_s": seconds,
                     "max_rhat": summary["max_rhat"], "min_ess_bulk": summary["min_ess_bulk"],
                     **extra})
        print(rows[-1], flush=True)

    # Tuning on the training rows only: 3600 fit / 400 validation.
    order = np.random.default_rng(0).permutation(NUM_TRAIN)
    fit_rows, val_rows = order[NUM_VALIDATION:], order[:NUM_VALIDATION]
    tune_ensemble = model.fit(X[fit_rows], y[fit_rows], key=jax.random.key(3),
                              method="ensemble", **ensemble_options)
    tuning = []
    for step_size in step_sizes:
        try:
            fitted = model.fit(X[fit_rows], y[fit_rows], key=jax.random.key(9),
                               method="sgmcmc", init=tune_ensemble, step_size=step_size,
                               **sg_options)
            validation = float(np.mean(fitted.predictive(X[val_rows]).log_prob(y[val_rows])))
        except FloatingPointError:
            validation = float("-inf")
        tuning.append({"step_size": step_size, "validation_ll": validation})
        print(tuning[-1], flush=True)
    best = max(tuning, key=lambda entry: entry["validation_ll"])["step_size"]

    ensemble, ensemble_s = clock(lambda: model.fit(X, y, key=jax.random.key(3),
                                                   method="ensemble", **ensemble_options))
    record(f"ensemble ({ensemble_options['num_members']}), the start", ensemble, ensemble_s)
    nuts, nuts_s = clock(lambda: model.fit(X, y, key=jax.random.key(8), method="nuts",
                                           init=ensemble, **nuts_options))
    record(f"nuts ({nuts_options['num_chains']} chains)", nuts, nuts_s,
           gradient_rows=int(nuts.info["num_leapfrog_steps"]) * NUM_TRAIN)
    sg, sg_s = clock(lambda: model.fit(X, y, key=jax.random.key(8), method="sgmcmc",
                                       init=ensemble, step_size=best, **sg_options))
    _, sg_warm_s = clock(lambda: model.fit(X, y, key=jax.random.key(10), method="sgmcmc",
                                           init=ensemble, step_size=best,
                                           **sg_options).flat_draws())
    record(f"sgmcmc ({sg_options['num_chains']} chains), step_size {best}", sg, sg_s,
           warm_fit_s=sg_warm_s,
           gradient_rows=int(sg.info["num_gradient_steps"]) * sg_options["batch_size"])
    nuts_row, sg_row = rows[1], rows[2]
    summary = {"exact_ll": exact, "step_size": best, "tuning": tuning,
               "nuts_test_ll": nuts_row["test_ll"], "sgmcmc_test_ll": sg_row["test_ll"],
               "sgmcmc_minus_nuts": sg_row["test_ll"] - nuts_row["test_ll"],
               "within_0.01": abs(sg_row["test_ll"] - nuts_row["test_ll"]) <= 0.01
               or sg_row["test_ll"] > nuts_row["test_ll"],
               "time_ratio_cold": sg_row["fit_s"] / nuts_row["fit_s"],
               "time_ratio_warm_sgmcmc": sg_warm_s / nuts_row["fit_s"],
               "gradient_rows_ratio": sg_row["gradient_rows"] / nuts_row["gradient_rows"]}
    return {"settings": {"nuts": nuts_options, "ensemble": ensemble_options,
                         "sgmcmc": sg_options, "step_sizes": list(step_sizes)},
            "summary": summary, "rows": rows}


# ----------------------------------------------------------------------------- (b) scale
def cpu_s() -> float:
    """CPU seconds (user + system, every thread) of this process so far: on a shared
    machine far less sensitive to other processes' load than wall-clock seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale_worker(num_rows: int, cycles: int, steps_per_cycle: int, batch_size: int
                 ) -> dict[str, Any]:
    """One N, in this (fresh) process: cold fit of one cycle, warm fits of `cycles` and
    2 x `cycles` cycles; the compiled cycles timed and their RSS sampled."""
    sys.path.insert(0, str(HERE))
    from scale import RssMonitor, make_data, peak_rss

    monitor = RssMonitor()
    import jax
    import jax.numpy as jnp

    import bayes_mdn.inference.sgmcmc as sg

    X, y = make_data(num_rows)
    jax.block_until_ready(jnp.zeros(8) + 1.0)
    baseline_peak = peak_rss()
    marks: list[dict[str, float]] = []  # one per compiled cycle of the current fit
    original = sg._program

    def instrumented(*args: Any, **kwargs: Any):
        program = original(*args, **kwargs)

        def cycle(*cycle_args: Any):
            if not marks:
                monitor.reset()
            start, start_rss, start_cpu = time.perf_counter(), monitor.current(), cpu_s()
            out = jax.block_until_ready(program.cycle(*cycle_args))
            marks.append({"start": start, "start_rss": start_rss, "end": time.perf_counter(),
                          "peak": monitor.peak(), "cpu": cpu_s() - start_cpu})
            return out

        return dataclasses.replace(program, cycle=cycle)

    sg._program = instrumented
    model = model_of()
    options = dict(method="sgmcmc", num_chains=4, num_steps_per_cycle=steps_per_cycle,
                   num_samples_per_cycle=10, thinning=2, batch_size=batch_size)
    started = time.perf_counter()
    model.fit(X, y, key=jax.random.key(0), num_cycles=1, **options)
    cold_s = time.perf_counter() - started
    fits = {}
    for label, count in (("1x", cycles), ("2x", 2 * cycles)):
        runs = []
        for repeat in range(REPEATS):  # the fastest of REPEATS warm fits (noisy machine)
            marks.clear()
            begin = time.perf_counter()
            posterior = model.fit(X, y, key=jax.random.key(1 + repeat), num_cycles=count,
                                  **options)
            total_s = time.perf_counter() - begin
            steps = count * steps_per_cycle
            cycles_s = marks[-1]["end"] - marks[0]["start"]
            cycles_cpu_s = sum(m["cpu"] for m in marks)
            runs.append({"num_steps": steps, "total_s": total_s, "cycles_s": cycles_s,
                         "s_per_step": cycles_s / steps, "cycles_cpu_s": cycles_cpu_s,
                         "cpu_s_per_step": cycles_cpu_s / steps,
                         "cycles_peak_above_start_MB": (max(m["peak"] for m in marks)
                                                        - marks[0]["start_rss"]) / MB,
                         "train_ll": float(posterior.history["train_log_likelihood"][-1])})
        fits[label] = min(runs, key=lambda run: run["cycles_s"])
        fits[label]["cycles_s_all"] = [run["cycles_s"] for run in runs]
        fits[label]["cycles_cpu_s_all"] = [run["cycles_cpu_s"] for run in runs]
    return {"num_rows": num_rows, "batch_size": batch_size, "steps_per_cycle": steps_per_cycle,
            "data_MB": (X.nbytes + y.nbytes) / MB, "cold_s": cold_s,
            "baseline_peak_MB": baseline_peak / MB,
            "process_peak_above_baseline_MB": (peak_rss() - baseline_peak) / MB, **{
                f"{label}_{name}": value for label, entry in fits.items()
                for name, value in entry.items()}}


def scale_part(sizes: list[int], cycles: int, steps_per_cycle: int, batch_size: int
               ) -> dict[str, Any]:
    rows = []
    for num_rows in sizes:
        command = [sys.executable, __file__, "--worker", "--rows", str(num_rows),
                   "--cycles", str(cycles), "--steps-per-cycle", str(steps_per_cycle),
                   "--batch-size", str(batch_size)]
        output = subprocess.run(command, check=True, capture_output=True, text=True,
                                env={**os.environ, "BAYES_MDN_PROGRESS": "0"})
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    first = rows[0]
    for row in rows:
        row["s_per_step_vs_smallest_N"] = row["1x_s_per_step"] / first["1x_s_per_step"]
        row["2x_over_1x_cycles_s"] = row["2x_cycles_s"] / row["1x_cycles_s"]
        row["cpu_s_per_step_vs_smallest_N"] = (row["1x_cpu_s_per_step"]
                                               / first["1x_cpu_s_per_step"])
        row["2x_over_1x_cycles_cpu_s"] = row["2x_cycles_cpu_s"] / row["1x_cycles_cpu_s"]
    summary = {
        "max_s_per_step_vs_smallest_N": max(r["s_per_step_vs_smallest_N"] for r in rows),
        "2x_over_1x_cycles_s": [r["2x_over_1x_cycles_s"] for r in rows],
        "cpu_s_per_step_vs_smallest_N": [r["cpu_s_per_step_vs_smallest_N"] for r in rows],
        "2x_over_1x_cycles_cpu_s": [r["2x_over_1x_cycles_cpu_s"] for r in rows],
        "max_cycles_peak_above_start_MB": max(max(r["1x_cycles_peak_above_start_MB"],
                                                  r["2x_cycles_peak_above_start_MB"])
                                              for r in rows),
        "cycles_peak_2x_minus_1x_MB": [r["2x_cycles_peak_above_start_MB"]
                                       - r["1x_cycles_peak_above_start_MB"] for r in rows],
    }
    return {"settings": {"sizes": sizes, "cycles": cycles, "steps_per_cycle": steps_per_cycle,
                         "batch_size": batch_size, "num_chains": 4},
            "summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", nargs="+", choices=("a", "b"), default=["a", "b"])
    parser.add_argument("--sizes", type=float, nargs="+", default=None)
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--steps-per-cycle", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cycles = args.cycles or (1 if args.quick else 2)
    steps = args.steps_per_cycle or (100 if args.quick else 500)
    if args.worker:
        print(json.dumps(scale_worker(int(args.rows), cycles, steps, args.batch_size)))
        return
    sys.path.insert(0, str(HERE))
    from _common import write_results

    suffix = "_quick" if args.quick else ""
    load = os.getloadavg()
    if "a" in args.part:
        result = seed_part(args.quick)
        rows = result.pop("rows")
        write_results(f"sgmcmc_seed{suffix}", {**result, "loadavg_at_start": load}, rows)
        print(json.dumps(result["summary"], indent=1, default=float))
    if "b" in args.part:
        sizes = [int(s) for s in (args.sizes or ([1e4, 1e5] if args.quick
                                                 else [1e4, 1e5, 1e6]))]
        result = scale_part(sizes, cycles, steps, args.batch_size)
        rows = result.pop("rows")
        write_results(f"sgmcmc_scale{suffix}", {**result, "loadavg_at_start": load}, rows)
        print(json.dumps(result["summary"], indent=1, default=float))


if __name__ == "__main__":
    main()
