"""Speed in the seed setting against a hand-written NumPyro version and a PyTorch loop.

Seed setting: 4000 training points of the inverse-sine problem, K = 20 Normal components,
hidden layers (15, 15), tanh, fan-in Normal priors (scale 2, scale head 0.5), full-batch
Adam (lr 0.01), float32, on the CPU. Three programs compute the same MAP fit:

* ``bayes_mdn``: ``MDN.fit(method="map", num_steps=1000)``;
* ``hand-written NumPyro``: the same model written directly in NumPyro, optimised by optax
  Adam in one ``lax.scan`` (``_handwritten.make_map``);
* ``PyTorch``: a plain eager training loop of the same network and objective
  (``_torch_mdn.py``); skipped, with a message, when torch is not installed.

Measured, every figure as a ratio against a baseline measured in the same run, with
repetitions interleaved (A, B, C, A, B, C, ...) and medians reported:

1. steady state: ms per full-batch step of a warm fit (programs already compiled), as the
   total of a 1000-step fit / 1000 and as the marginal cost (2000-step fit - 1000-step fit)
   / 1000; the torch loop runs with XLA's thread count (the CPUs this process may use) or
   one thread, whichever a short probe finds faster (oversubscribed OpenMP threads can make
   torch ~30x slower on a loaded machine), so the torch baseline is its best;
2. fresh process: each program in a subprocess that imports, makes the data, fits 1000
   steps and exits; the wall time of the whole subprocess and the in-process time of the
   fit alone. bayes_mdn also runs with its persistent compilation cache
   (``bm.enable_compilation_cache``) already filled by an earlier process. The subprocesses
   also count JAX compilations (``jax.monitoring`` events) and name the programs;
3. SVI (mean-field, 1000 steps, from the MAP point) and NUTS (1 chain, 50 warm-up + 50
   draws, max tree depth 5, from the MAP point) against their hand-written twins, warm
   (both compiled) and, for NUTS, cold (first call, compilation included).

Targets (issue 8): steady-state step >= 2x faster than the torch loop; fresh-process fit
<= 1.5x the torch loop's fresh process; overhead against the hand-written twin <= 1.15.

    python benchmarks/speed_seed.py [--quick] [--repeats 5]

Writes results/speed_seed.{json,md} (``--quick``: results/speed_seed_quick.*).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
K, HIDDEN = 20, (15, 15)
PRIOR_SCALE, SCALE_HEAD_PRIOR = 2.0, 0.5
NUM_ROWS = 4000
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
TARGET_TORCH_SPEEDUP = 2.0
TARGET_FRESH_RATIO = 1.5
TARGET_OVERHEAD = 1.15


# ----------------------------------------------------------------------------- shared
def seed_data(num_rows: int = NUM_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seed's generator (y ~ U(-10.5, 10.5), x = 7 sin(0.75 y) + 0.5 y + N(0, 1)) in
    NumPy, standardised, float32: the same arrays for all three programs (bayes_mdn
    standardises again inside fit, a no-op up to rounding)."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(-10.5, 10.5, size=(num_rows, 1))
    X = 7.0 * np.sin(0.75 * y) + 0.5 * y + rng.normal(size=(num_rows, 1))
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean(0)) / y.std(0)
    return X.astype(np.float32), y.astype(np.float32)


def handwritten_start(seed: int = 0) -> dict[str, np.ndarray]:
    """A starting point like bayes_mdn's (spread locations, near-uniform weights), made in
    NumPy so that it compiles nothing."""
    rng = np.random.default_rng(seed)
    params, fan_in = {}, 1
    for i, width in enumerate(HIDDEN):
        params[f"hidden_{i}.kernel"] = rng.normal(size=(fan_in, width)) / np.sqrt(fan_in)
        params[f"hidden_{i}.bias"] = np.zeros(width)
        fan_in = width
    for name in ("logits", "loc", "scale"):
        params[f"{name}.kernel"] = 0.1 * rng.normal(size=(fan_in, K)) / np.sqrt(fan_in)
        params[f"{name}.bias"] = np.zeros(K)
    params["loc.bias"] = np.linspace(-1.6, 1.6, K)
    return {name: value.astype(np.float32) for name, value in params.items()}


def seed_prior():
    import bayes_mdn as bm

    return {"default": bm.priors.FanInNormal(PRIOR_SCALE),
            "scale": bm.priors.FanInNormal(SCALE_HEAD_PRIOR)}


def block(value):
    """Wait for JAX outputs (a no-op for NumPy and torch results)."""
    if "jax" in sys.modules:
        import jax

        return jax.block_until_ready(value)
    return value


def clock(function) -> float:
    started = time.perf_counter()
    block(function())
    return time.perf_counter() - started


def median(values) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------- workers
def _compile_listener(events: list):
    import jax

    def listener(event, duration, **kwargs):
        if event in (COMPILE_EVENT, TRACE_EVENT, LOWER_EVENT):
            events.append((event.rsplit("/", 1)[-1], str(kwargs.get("fun_name")), duration))

    jax.monitoring.register_event_duration_secs_listener(listener)


def worker(program: str, num_steps: int, cache_dir: str | None) -> dict:
    """One fresh-process fit; returns its timings (and JAX compile events)."""
    started = time.perf_counter()
    events: list = []
    if program == "torch":
        import _torch_mdn

        X, y = seed_data()
        net = _torch_mdn.TorchMDN(num_features=X.shape[1],
                                  threads=int(os.environ.get("SPEED_SEED_TORCH_THREADS", 0)))
        fit_started = time.perf_counter()
        losses = net.fit(X, y, num_steps)
        final = float(losses[-1])
    elif program == "handwritten":
        import _handwritten as hw
        import jax

        _compile_listener(events)
        X, y = seed_data()
        start = handwritten_start()
        fit_started = time.perf_counter()
        run = hw.make_map(hw.make_model(K, HIDDEN, PRIOR_SCALE, SCALE_HEAD_PRIOR), X, y,
                          num_steps)
        _, losses = jax.block_until_ready(run(start))
        final = float(losses[-1])
    else:  # bayes_mdn
        import jax

        _compile_listener(events)
        import bayes_mdn as bm

        if cache_dir:
            bm.enable_compilation_cache(cache_dir)
        X, y = seed_data()
        model = bm.MDN(num_components=K, hidden_sizes=HIDDEN, prior=seed_prior())
        key = jax.random.key(0)
        fit_started = time.perf_counter()
        posterior = model.fit(X, y, key=key, method="map", num_steps=num_steps)
        final = float(posterior.history["loss"][-1])
    ended = time.perf_counter()
    return {"program": program, "fit_s": ended - fit_started,
            "setup_s": fit_started - started, "final_loss": final, "events": events}


def run_worker(program: str, num_steps: int, cache_dir: str | None = None,
               torch_threads: int = 0, hash_seed: str | None = None) -> dict:
    """Run :func:`worker` in a fresh Python process; add the subprocess's wall time.
    `hash_seed`: a fixed PYTHONHASHSEED (default: Python's, random per process)."""
    env = dict(os.environ, SPEED_SEED_TORCH_THREADS=str(torch_threads))
    env.pop("PYTHONHASHSEED", None)
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", program,
               "--num-steps", str(num_steps)]
    if cache_dir:
        command += ["--cache-dir", cache_dir]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"worker {program} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def summarise_events(events: list) -> dict:
    """Counts and seconds of backend compilations, traces and lowerings, by function."""
    summary = {}
    for kind, key in (("backend_compile_duration", "compile"),
                      ("jaxpr_trace_duration", "trace"),
                      ("jaxpr_to_mlir_module_duration", "lower")):
        chosen = [(name, seconds) for event, name, seconds in events if event == kind]
        by_name: dict[str, list[float]] = {}
        for name, seconds in chosen:
            by_name.setdefault(name, []).append(seconds)
        summary[key] = {"count": len(chosen), "seconds": sum(s for _, s in chosen),
                        "by_function": {name: [len(v), sum(v)] for name, v in
                                        sorted(by_name.items(), key=lambda kv: -sum(kv[1]))}}
    return summary


# ----------------------------------------------------------------------------- steady state
def torch_threads_probe(X, y, repeats: int) -> tuple[int, dict[int, float]]:
    """ms per step of the torch loop at XLA's thread count and at one thread (20-step runs,
    interleaved); returns the faster count and the medians."""
    import _torch_mdn

    counts = sorted({_torch_mdn.num_threads(), 1})
    times: dict[int, list[float]] = {n: [] for n in counts}
    nets = {n: _torch_mdn.TorchMDN(threads=n) for n in counts}
    for n in counts:
        nets[n].fit(X, y, 5)
    for _ in range(repeats):
        for n in counts:
            _torch_mdn.torch.set_num_threads(n)
            times[n].append(clock(lambda n=n: nets[n].fit(X, y, 20)) / 20 * 1e3)
    medians = {n: median(v) for n, v in times.items()}
    return min(medians, key=medians.get), medians


def steady_state(X, y, num_steps: int, repeats: int, torch_threads: int | None) -> dict:
    import _handwritten as hw
    import jax

    import bayes_mdn as bm

    model = bm.MDN(num_components=K, hidden_sizes=HIDDEN, prior=seed_prior())
    twin = hw.make_model(K, HIDDEN, PRIOR_SCALE, SCALE_HEAD_PRIOR)
    start = handwritten_start()
    lengths = (num_steps, 2 * num_steps)
    hw_runs = {n: hw.make_map(twin, X, y, n) for n in lengths}
    seeds = itertools.count(1)
    programs = {}
    for n in lengths:
        programs[("bayes_mdn", n)] = lambda n=n: model.fit(
            X, y, key=jax.random.key(next(seeds)), method="map", num_steps=n
        ).draws["loc.kernel"]
        # The same fit recording the train log-likelihood once instead of 50 times.
        programs[("bayes_mdn_1eval", n)] = lambda n=n: model.fit(
            X, y, key=jax.random.key(next(seeds)), method="map", num_steps=n,
            num_evaluations=1).draws["loc.kernel"]
        programs[("handwritten", n)] = lambda n=n: hw_runs[n](start)
    if torch_threads is not None:
        import _torch_mdn

        net = _torch_mdn.TorchMDN(threads=torch_threads)
        for n in lengths:
            programs[("torch", n)] = lambda n=n: net.fit(X, y, n)
    for function in programs.values():  # compile / warm up
        block(function())
    times: dict = {name: [] for name in programs}
    for _ in range(repeats):
        for name, function in programs.items():
            times[name].append(clock(function))
    names = sorted({name for name, _ in programs})
    result = {}
    for name in names:
        short, long = np.asarray(times[(name, lengths[0])]), np.asarray(times[(name, lengths[1])])
        result[name] = {"total_ms_per_step": 1e3 * median(short) / num_steps,
                        "marginal_ms_per_step": 1e3 * median(long - short) / num_steps,
                        "fit_s": median(short), "times_short": short.tolist(),
                        "times_long": long.tolist()}
    # Paired ratios (same repetition), medians.
    for name in names:
        for baseline in names:
            short_ratio = np.asarray(times[(name, lengths[0])]) / np.asarray(
                times[(baseline, lengths[0])])
            result[name][f"ratio_to_{baseline}"] = median(short_ratio)
    return result


# ----------------------------------------------------------------------------- SVI and NUTS
def svi_and_nuts(X, y, svi_steps: int, nuts: dict, repeats: int) -> list[dict]:
    import _handwritten as hw
    import jax
    from numpyro.infer import MCMC, NUTS

    import bayes_mdn as bm

    model = bm.MDN(num_components=K, hidden_sizes=HIDDEN, prior=seed_prior())
    twin = hw.make_model(K, HIDDEN, PRIOR_SCALE, SCALE_HEAD_PRIOR)
    map_fit = model.fit(X, y, key=jax.random.key(0), method="map", num_steps=1000)
    point = {name: value[0, 0] for name, value in map_fit.draws.items()}
    rows = []

    # SVI, mean-field: bayes_mdn's defaults (lr 0.005, init scale 0.01, 1000 draws).
    num_draws = 1000
    svi_options = dict(method="svi", guide="normal", init=map_fit, num_steps=svi_steps,
                       num_draws=num_draws)
    base_svi = hw.make_svi(twin, X, y, "normal", svi_steps, num_draws, learning_rate=0.005,
                           init_scale=0.01)
    seeds = itertools.count(1)
    ours = lambda: model.fit(X, y, key=jax.random.key(next(seeds)), **svi_options  # noqa: E731
                             ).draws["loc.kernel"]
    theirs = lambda: base_svi(point, jax.random.key(next(seeds)))  # noqa: E731
    ours_1eval = lambda: model.fit(  # noqa: E731
        X, y, key=jax.random.key(next(seeds)), num_evaluations=1, **svi_options
    ).draws["loc.kernel"]
    for function in (ours, ours_1eval, theirs):
        block(function())
    ours_s, ours_1eval_s, theirs_s = [], [], []
    for _ in range(repeats):
        ours_s.append(clock(ours))
        ours_1eval_s.append(clock(ours_1eval))
        theirs_s.append(clock(theirs))
    rows.append({"method": f"svi mean-field ({svi_steps} steps)", "timing": "warm",
                 "bayes_mdn_s": median(ours_s), "handwritten_s": median(theirs_s),
                 "ratio": median(np.asarray(ours_s) / np.asarray(theirs_s))})
    rows.append({"method": f"svi mean-field ({svi_steps} steps), num_evaluations=1",
                 "timing": "warm (info)", "bayes_mdn_s": median(ours_1eval_s),
                 "handwritten_s": median(theirs_s),
                 "ratio": median(np.asarray(ours_1eval_s) / np.asarray(theirs_s))})

    # NUTS, one chain from the MAP point. The hand-written twin: MCMC.run wrapped in jit
    # (warm) and plain (cold: numpyro compiles its loop on every run).
    def handwritten_nuts(key):
        mcmc = MCMC(NUTS(twin, max_tree_depth=nuts["max_tree_depth"]),
                    num_warmup=nuts["num_warmup"], num_samples=nuts["num_samples"],
                    num_chains=1, progress_bar=False)
        mcmc.run(key, X, y, init_params=point, extra_fields=("num_steps",))
        return mcmc.get_samples()["loc.kernel"], mcmc.get_extra_fields()["num_steps"].sum()

    nuts_options = dict(method="nuts", init=map_fit, num_chains=1, **nuts)
    leapfrogs = {"bayes_mdn": [], "handwritten": []}

    def ours_nuts():
        fit = model.fit(X, y, key=jax.random.key(next(seeds)), **nuts_options)
        leapfrogs["bayes_mdn"].append(fit.info["num_leapfrog_steps"])
        return fit.draws["loc.kernel"]

    jitted = jax.jit(handwritten_nuts)

    def theirs_nuts(function=jitted):
        draws, steps = block(function(jax.random.key(next(seeds))))
        leapfrogs["handwritten"].append(int(steps))
        return draws

    cold_ours = clock(ours_nuts)
    cold_theirs = clock(lambda: theirs_nuts(handwritten_nuts))
    rows.append({"method": "nuts 1 chain", "timing": "cold (incl. compile)",
                 "bayes_mdn_s": cold_ours, "handwritten_s": cold_theirs,
                 "ratio": cold_ours / cold_theirs})
    block(theirs_nuts())  # compile the jitted twin
    for values in leapfrogs.values():
        values.clear()
    ours_s, theirs_s = [], []
    for _ in range(repeats):
        ours_s.append(clock(ours_nuts))
        theirs_s.append(clock(theirs_nuts))
    ratio = median(np.asarray(ours_s) / np.asarray(theirs_s))
    per_leapfrog = median((np.asarray(ours_s) / np.asarray(leapfrogs["bayes_mdn"]))
                          / (np.asarray(theirs_s) / np.asarray(leapfrogs["handwritten"])))
    rows.append({"method": "nuts 1 chain", "timing": "warm",
                 "bayes_mdn_s": median(ours_s), "handwritten_s": median(theirs_s),
                 "ratio": ratio, "ratio_per_leapfrog": per_leapfrog,
                 "leapfrogs_bayes_mdn": median(leapfrogs["bayes_mdn"]),
                 "leapfrogs_handwritten": median(leapfrogs["handwritten"])})
    return rows


# ----------------------------------------------------------------------------- fresh process
#: Fresh-process variants: name -> (program, use the cache, PYTHONHASHSEED). With a random
#: hash seed (Python's default) MAP's optimisation program misses the cache: numpyro's
#: Trace_ELBO emits its per-site terms in set order, so the traced program differs between
#: processes. The fixed-seed variant shows what the cache gives once that is fixed.
FRESH_VARIANTS = {
    "torch": ("torch", False, None),
    "handwritten": ("handwritten", False, None),
    "bayes_mdn": ("bayes_mdn", False, None),
    "bayes_mdn+cache": ("bayes_mdn", True, None),
    "bayes_mdn+cache, fixed hash seed": ("bayes_mdn", True, "0"),
}


def fresh_processes(num_steps: int, repeats: int, torch_threads: int | None) -> dict:
    programs = [name for name in FRESH_VARIANTS if torch_threads is not None or name != "torch"]
    results: dict[str, list[dict]] = {name: [] for name in programs}
    with tempfile.TemporaryDirectory(prefix="bayes_mdn_cache_") as cache_dir:
        # Fill the cache (with and without a fixed hash seed).
        filling = run_worker("bayes_mdn", num_steps, cache_dir=cache_dir)
        run_worker("bayes_mdn", num_steps, cache_dir=cache_dir, hash_seed="0")
        for _ in range(repeats):
            for name in programs:
                program, cached, hash_seed = FRESH_VARIANTS[name]
                results[name].append(run_worker(program, num_steps,
                                                cache_dir=cache_dir if cached else None,
                                                torch_threads=torch_threads or 0,
                                                hash_seed=hash_seed))
        num_entries = len(os.listdir(cache_dir))
    summary = {}
    for name, runs in results.items():
        summary[name] = {"wall_s": median(r["wall_s"] for r in runs),
                         "fit_s": median(r["fit_s"] for r in runs),
                         "walls": [r["wall_s"] for r in runs],
                         "fits": [r["fit_s"] for r in runs],
                         "events": summarise_events(runs[0]["events"])}
        for baseline in programs:
            summary[name][f"wall_ratio_to_{baseline}"] = median(
                a["wall_s"] / b["wall_s"] for a, b in zip(runs, results[baseline], strict=True))
            summary[name][f"fit_ratio_to_{baseline}"] = median(
                a["fit_s"] / b["fit_s"] for a, b in zip(runs, results[baseline], strict=True))
    summary["cache"] = {"entries": num_entries, "filling_run_wall_s": filling["wall_s"],
                        "filling_run_fit_s": filling["fit_s"]}
    return summary


# ----------------------------------------------------------------------------- main
def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["steady", "fresh", "svi_nuts"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--num-steps", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.worker:
        print(json.dumps(worker(args.worker, args.num_steps, args.cache_dir)))
        return

    repeats = args.repeats or (2 if args.quick else 5)
    num_steps = 200 if args.quick else 1000
    nuts = (dict(num_warmup=10, num_samples=10, max_tree_depth=3) if args.quick else
            dict(num_warmup=50, num_samples=50, max_tree_depth=5))

    import _torch_mdn

    X, y = seed_data()
    payload: dict = {"num_rows": NUM_ROWS, "K": K, "hidden": HIDDEN, "num_steps": num_steps,
                     "repeats": repeats, "nuts": nuts,
                     "targets": {"torch_speedup": TARGET_TORCH_SPEEDUP,
                                 "fresh_ratio_to_torch": TARGET_FRESH_RATIO,
                                 "overhead_ratio": TARGET_OVERHEAD}}
    torch_threads = None
    if _torch_mdn.available():
        torch_threads, probe = torch_threads_probe(X, y, repeats=3)
        payload["torch"] = {"version": _torch_mdn.torch.__version__,
                            "xla_threads": _torch_mdn.num_threads(),
                            "probe_ms_per_step": probe, "threads_used": torch_threads}
        print(f"torch probe (ms/step by thread count): {probe}; using {torch_threads}",
              flush=True)
    else:
        print("torch is not installed: the PyTorch rows are skipped. For them, install a "
              "CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu",
              flush=True)
        payload["torch"] = None

    rows = []
    if "steady" not in args.skip:
        steady = steady_state(X, y, num_steps, repeats, torch_threads)
        payload["steady_state"] = steady
        print(json.dumps(steady, indent=1), flush=True)
        ours = steady["bayes_mdn"]
        rows.append({"measure": f"steady-state ms/step ({num_steps}-step fit / {num_steps})",
                     "bayes_mdn": ours["total_ms_per_step"],
                     "handwritten": steady["handwritten"]["total_ms_per_step"],
                     "torch": steady["torch"]["total_ms_per_step"] if torch_threads else "-",
                     "ratio": ours["ratio_to_handwritten"],
                     "target": f"<= {TARGET_OVERHEAD} x handwritten",
                     "status": verdict(ours["ratio_to_handwritten"] <= TARGET_OVERHEAD)})
        rows.append({"measure": f"steady-state marginal ms/step (({2 * num_steps} - "
                                f"{num_steps} steps) / {num_steps})",
                     "bayes_mdn": ours["marginal_ms_per_step"],
                     "handwritten": steady["handwritten"]["marginal_ms_per_step"],
                     "torch": steady["torch"]["marginal_ms_per_step"] if torch_threads else "-",
                     "ratio": ours["marginal_ms_per_step"]
                     / steady["handwritten"]["marginal_ms_per_step"],
                     "target": "(info)", "status": "-"})
        one = steady["bayes_mdn_1eval"]
        rows.append({"measure": "steady-state ms/step, bayes_mdn with num_evaluations=1",
                     "bayes_mdn": one["total_ms_per_step"],
                     "handwritten": steady["handwritten"]["total_ms_per_step"],
                     "torch": steady["torch"]["total_ms_per_step"] if torch_threads else "-",
                     "ratio": one["ratio_to_handwritten"], "target": "(info)", "status": "-"})
        if torch_threads:
            speedup = 1 / ours["ratio_to_torch"]
            rows.append({"measure": "steady-state speed-up over torch (torch time / ours)",
                         "bayes_mdn": speedup, "handwritten":
                         1 / steady["handwritten"]["ratio_to_torch"], "torch": 1.0,
                         "ratio": speedup, "target": f">= {TARGET_TORCH_SPEEDUP}",
                         "status": verdict(speedup >= TARGET_TORCH_SPEEDUP)})
            marginal = (steady["torch"]["marginal_ms_per_step"]
                        / ours["marginal_ms_per_step"])
            rows.append({"measure": "marginal speed-up over torch", "bayes_mdn": marginal,
                         "handwritten": steady["torch"]["marginal_ms_per_step"]
                         / steady["handwritten"]["marginal_ms_per_step"],
                         "torch": 1.0, "ratio": marginal,
                         "target": f">= {TARGET_TORCH_SPEEDUP}",
                         "status": verdict(marginal >= TARGET_TORCH_SPEEDUP)})
    if "fresh" not in args.skip:
        fresh = fresh_processes(num_steps, repeats, torch_threads)
        payload["fresh_process"] = fresh
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "events"}
                          for k, v in fresh.items()}, indent=1), flush=True)
        for name in [n for n in FRESH_VARIANTS if n.startswith("bayes_mdn")]:
            row = fresh[name]
            torch_row = fresh.get("torch")
            for what in ("wall", "fit"):
                label = ("fresh process wall s" if what == "wall"
                         else "fresh process fit() s (in process)")
                ratio = row[f"{what}_ratio_to_torch"] if torch_row else float("nan")
                rows.append({
                    "measure": f"{label}: {name}",
                    "bayes_mdn": row[f"{what}_s"],
                    "handwritten": fresh["handwritten"][f"{what}_s"],
                    "torch": torch_row[f"{what}_s"] if torch_row else "-",
                    "ratio": ratio,
                    "target": f"<= {TARGET_FRESH_RATIO} x torch" if what == "wall"
                    else "(info)",
                    "status": (verdict(ratio <= TARGET_FRESH_RATIO) if what == "wall"
                               and torch_row else "-")})
            rows.append({"measure": f"fresh process wall, ratio to handwritten: {name}",
                         "bayes_mdn": row["wall_ratio_to_handwritten"], "handwritten": 1.0,
                         "torch": fresh["torch"]["wall_ratio_to_handwritten"]
                         if torch_threads else "-",
                         "ratio": row["wall_ratio_to_handwritten"], "target": "(info)",
                         "status": "-"})
    if "svi_nuts" not in args.skip:
        inference_rows = svi_and_nuts(X, y, num_steps, nuts, repeats)
        payload["svi_nuts"] = inference_rows
        for row in inference_rows:
            info = "info" in row["timing"]
            rows.append({"measure": f"{row['method']} s ({row['timing']})",
                         "bayes_mdn": row["bayes_mdn_s"], "handwritten": row["handwritten_s"],
                         "torch": "-", "ratio": row["ratio"],
                         "target": "(info)" if info else f"<= {TARGET_OVERHEAD} x handwritten",
                         "status": "-" if info else verdict(row["ratio"] <= TARGET_OVERHEAD)})
            if "ratio_per_leapfrog" in row:
                # Trajectory lengths differ between the two chains: time per sampling-phase
                # leapfrog step (warm-up steps are not counted by either).
                rows.append({"measure": "nuts warm, per sampling leapfrog step (columns: "
                             "leapfrog steps)", "bayes_mdn": row["leapfrogs_bayes_mdn"],
                             "handwritten": row["leapfrogs_handwritten"], "torch": "-",
                             "ratio": row["ratio_per_leapfrog"],
                             "target": f"<= {TARGET_OVERHEAD} x handwritten",
                             "status": verdict(row["ratio_per_leapfrog"] <= TARGET_OVERHEAD)})
    from _common import write_results

    write_results("speed_seed_quick" if args.quick else "speed_seed", payload, rows)


if __name__ == "__main__":
    main()
