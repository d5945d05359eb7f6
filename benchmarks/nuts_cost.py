"""NUTS cost: time per effective sample as the data and the network grow, and where the time
of one leapfrog step goes.

Seed problem (inverse sine, ``bm.datasets.inverse_sine``), the n = 200 NUTS network of
``inference_seed.py`` (K = 5 Normal components, one tanh layer of 20, ``FanInNormal(2)``),
float32, on the CPU; every chain starts from a short MAP fit.

1. Cost growth (issue 8, item 3). ``MDN.fit(method="nuts")`` with 2 chains, max tree depth 6,
   for N in {200, 2000, 20 000} training rows at that network, and for hidden widths
   {10, 20, 50} at N = 2000. Per configuration: seconds of the run with compilation excluded
   (a second call with the same shapes, which reuses the cached program; at N = 20 000, to
   keep the budget, the first call's seconds minus the JAX compile/trace/lower events
   recorded during it), the sampling-phase leapfrog steps the library counts
   (``info["num_leapfrog_steps"]``; warm-up steps are not counted by the library), the
   function-space effective sample size (bulk ESS of each draw's log predictive density at
   a fixed reference set of 32 held-out inputs, ``bm.diagnostics.diagnose``; the minimum
   over the 32) and seconds per effective sample, each as a ratio against the smallest
   configuration of its sweep, measured in the same run. ``ms_per_leapfrog`` divides the
   seconds by the sampling leapfrogs scaled by (warm-up + draws) / draws, i.e. it assumes
   warm-up trajectories as long as the sampling ones (the trees are at the maximum depth
   nearly always here; part 2 counts both phases exactly at n = 200).
2. Per-leapfrog cost (issue 8, item 5). One chain, n = 200 network, depth 6. The sampler
   runs as numpyro's ``NUTS.init`` + ``NUTS.sample`` in one jitted ``lax.fori_loop`` over
   warm-up and draws that adds up every transition's ``num_steps`` (so warm-up leapfrogs
   are counted too); leapfrog steps per second of:

   * the hand-written NumPyro twin (``_handwritten.make_model``, default ``NUTS`` as in
     ``_handwritten.nuts_fit``): the baseline;
   * bayes_mdn's model (``MDN.numpyro_model``, the kernel and model ``fit`` runs), and with
     ``dense_mass`` and ``find_heuristic_step_size`` (``forward_mode_differentiation`` is
     timed as one gradient in the profile: a whole run takes minutes);
   * a fused log-density (``fused_potential`` below: the same log joint, the three head
     matmuls as one and the mixture computed with rows along the minor axis, (K, N)
     instead of (N, K)) given to numpyro's ``NUTS(potential_fn=...)``;
   * BlackJAX NUTS (window adaptation, ``max_num_doublings=6``) on both log-densities,
     when blackjax is installed;
   * ``MDN.fit`` itself, as (sampling leapfrogs of a 2S-draw fit - of an S-draw fit) /
     (seconds of the one - of the other), same key (the first S draws coincide);
   * XLA CPU flags and x64, each in a fresh subprocess (flags are read at start-up; runs of
     half the length), against a default subprocess in the same round.

   Profile: microseconds of one ``value_and_grad`` of each potential, alone in a jitted
   ``lax.fori_loop`` of 1000 evaluations (no dispatch), of one velocity-Verlet step, and per
   leapfrog inside NUTS; NUTS minus gradient (fastest repetitions of each) is the sampler's
   bookkeeping. Variants of the fused potential attribute its gain (one head matmul instead
   of three; activations as (width, N), data along the minor axis, instead of (N, width)).
   FLOPs from XLA's cost analysis of the compiled gradient.

Target (issue 8, item 5): bayes_mdn's leapfrog steps per second on one CPU chain >= 2x the
hand-written twin's, within numpyro's or BlackJAX's kernels. Speed figures are ratios
against baselines of the same run, repetitions interleaved, medians reported (and, for the
samplers, the minimum over repetitions: the machine is shared, and the fastest repetition is
the least disturbed one).

    python benchmarks/nuts_cost.py [--quick] [--repeats 3] [--skip growth leapfrog flags]

Writes results/nuts_cost.{json,md} (``--quick``: results/nuts_cost_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
K, HIDDEN, PRIOR_SCALE = 5, (20,), 2.0
MIN_SCALE = 1e-3
MAX_TREE_DEPTH = 6
MAP_STEPS = 1000
NUM_REFERENCE = 32
TARGET_SPEEDUP = 2.0
LOG_2PI = float(np.log(2 * np.pi))
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                  "/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration")
#: Subprocess variants of part 2: name -> environment added to the default one.
ENV_VARIANTS = {
    "default": {},
    "XLA thunk runtime off": {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"},
    "XLA prefer 512-bit vectors": {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"},
    "XLA single-threaded Eigen": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "XLA xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
    "x64 on": {"JAX_ENABLE_X64": "1"},
}


# ----------------------------------------------------------------------------- shared
def median(values: Any) -> float:
    """Median of `values` as a float."""
    return float(statistics.median(list(values)))


def seed_data(num_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`num_rows` training rows of the seed problem.

    Parameters
    ----------
    num_rows : int
        N.
    seed : int
        Key of ``bm.datasets.inverse_sine``.

    Returns
    -------
    X, y : numpy.ndarray, shapes (N, 1) and (N, 1)
    """
    import jax

    import bayes_mdn as bm

    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(seed), num_samples=2 * num_rows,
                                          train_fraction=0.5)
    return np.asarray(X), np.asarray(y)


def reference_set() -> tuple[np.ndarray, np.ndarray]:
    """The fixed reference inputs and targets (M = 32 rows not used for training) at which
    the function-space ESS is computed, the same for every configuration."""
    import jax

    import bayes_mdn as bm

    _, _, X, y = bm.datasets.inverse_sine(jax.random.key(12345), num_samples=2 * NUM_REFERENCE,
                                          train_fraction=0.5)
    return np.asarray(X), np.asarray(y)


def make_model(hidden: tuple[int, ...] = HIDDEN):
    """The MDN of the n = 200 NUTS setting, with hidden layers `hidden`."""
    import bayes_mdn as bm

    return bm.MDN(num_components=K, hidden_sizes=hidden,
                  prior=bm.priors.FanInNormal(PRIOR_SCALE))


def clock(function: Callable[[], Any]) -> float:
    """Seconds of `function()`, JAX outputs waited for."""
    import jax

    started = time.perf_counter()
    jax.block_until_ready(function())
    return time.perf_counter() - started


class CompileClock:
    """Sums the seconds of JAX's trace, lowering and backend-compile events while active."""

    def __init__(self) -> None:
        import jax

        self.active = False
        self.seconds = 0.0

        def listener(event: str, duration: float, **kwargs: Any) -> None:
            if self.active and event in COMPILE_EVENTS:
                self.seconds += duration

        jax.monitoring.register_event_duration_secs_listener(listener)

    def measure(self, function: Callable[[], Any]) -> tuple[Any, float, float]:
        """Run `function`; return (result, seconds, compile seconds during it)."""
        self.seconds, self.active = 0.0, True
        try:
            started = time.perf_counter()
            result = function()
            seconds = time.perf_counter() - started
        finally:
            self.active = False
        return result, seconds, self.seconds


# ----------------------------------------------------------------------------- part 1
def function_space_ess(posterior, X_ref: np.ndarray, y_ref: np.ndarray) -> dict[str, Any]:
    """Bulk ESS (minimum over the reference points) and the worst R-hat of the draws' log
    predictive density at the reference set."""
    import bayes_mdn as bm

    report = bm.diagnostics.diagnose(posterior, X_ref, y_ref, num_points=len(X_ref),
                                     warn=False)
    entry = report.convergence["log_density"]
    return {"ess_bulk": entry["ess_bulk"], "rhat": entry["rhat"]}


def growth_run(label: str, num_rows: int, hidden: tuple[int, ...], nuts: Mapping[str, int],
               twice: bool, reference: tuple[np.ndarray, np.ndarray],
               compile_clock: CompileClock) -> dict[str, Any]:
    """One NUTS configuration of part 1: fit (twice if `twice`), time, ESS.

    Returns
    -------
    dict
        One result row.
    """
    import jax

    X, y = seed_data(num_rows)
    model = make_model(hidden)
    start = model.fit(X, y, key=jax.random.key(1), method="map", num_steps=MAP_STEPS)
    options = dict(method="nuts", init=start, num_chains=nuts["num_chains"],
                   num_warmup=nuts["num_warmup"], num_samples=nuts["num_samples"],
                   max_tree_depth=MAX_TREE_DEPTH)
    first, cold_s, compile_s = compile_clock.measure(
        lambda: model.fit(X, y, key=jax.random.key(2), **options))
    row: dict[str, Any] = {"sweep": label, "N": num_rows, "hidden": str(hidden),
                           "params": model.num_parameters(1, 1), **nuts,
                           "cold_s": cold_s, "compile_s": compile_s}
    if twice:
        posterior, seconds, recompile = compile_clock.measure(
            lambda: model.fit(X, y, key=jax.random.key(3), **options))
        row.update(seconds=seconds, timing="second call", recompile_s=recompile)
    else:
        posterior, seconds = first, cold_s - compile_s
        row.update(seconds=seconds, timing="first call - compile")
    info = posterior.info
    sampling = info["num_leapfrog_steps"]
    iterations = nuts["num_warmup"] + nuts["num_samples"]
    estimated_total = sampling * iterations / nuts["num_samples"]
    ess = function_space_ess(posterior, *reference)
    row.update(sampling_leapfrogs=sampling,
               frac_max_depth=info["fraction_max_tree_depth"],
               mean_step_size=float(np.mean(posterior.sample_stats["step_size"])),
               divergent=info["num_divergent"],
               ms_per_leapfrog=1e3 * seconds / estimated_total,
               leapfrog_per_s=estimated_total / seconds,
               ess_bulk=ess["ess_bulk"], rhat=ess["rhat"],
               s_per_ess=seconds / ess["ess_bulk"] if ess["ess_bulk"] else float("nan"))
    print(json.dumps(row, default=float), flush=True)
    return row


def cost_growth(sizes: list[int], widths: list[int], width_rows: int,
                nuts_for: Callable[[int, tuple[int, ...]], dict[str, int]],
                twice_for: Callable[[int], bool]) -> list[dict[str, Any]]:
    """Part 1: both sweeps; rows with ratios against each sweep's smallest configuration."""
    reference = reference_set()
    compile_clock = CompileClock()
    done: dict[tuple[int, tuple[int, ...]], dict[str, Any]] = {}
    rows = []
    sweeps = [("N", [(n, HIDDEN) for n in sizes]),
              ("width", [(width_rows, (w,)) for w in widths])]
    for label, configs in sweeps:
        sweep_rows = []
        for num_rows, hidden in configs:
            key = (num_rows, hidden)
            if key not in done:
                done[key] = growth_run(label, num_rows, hidden, nuts_for(num_rows, hidden),
                                       twice_for(num_rows), reference, compile_clock)
            sweep_rows.append({**done[key], "sweep": label})
        base = sweep_rows[0]
        for row in sweep_rows:
            row["seconds_ratio"] = row["seconds"] / base["seconds"]
            row["ms_per_leapfrog_ratio"] = row["ms_per_leapfrog"] / base["ms_per_leapfrog"]
            row["s_per_ess_ratio"] = row["s_per_ess"] / base["s_per_ess"]
        rows.extend(sweep_rows)
    return rows


# ----------------------------------------------------------------------------- part 2
def fused_potential(model, params_like: Mapping[str, Any], X_std, y_std,
                    layout: str = "columns", heads: str = "fused") -> Callable:
    """The negative log joint of `model` (FanInNormal prior, Normal mixture, tanh layers) as
    one function of the latent dict, written for XLA's CPU backend.

    Parameters
    ----------
    model : bayes_mdn.MDN
        Its prior must be ``FanInNormal(PRIOR_SCALE)`` and its family ``Normal`` (not
        checked here; the caller compares the value and gradient with the model's own
        potential).
    params_like : mapping of str to Array
        A latent point (names and shapes).
    X_std, y_std : Array, shapes (N, P) and (N, 1)
        Standardised data.
    layout : {"columns", "rows", "columns_net"}
        ``"columns"``: every activation and the mixture as (width, N), data along the
        minor axis; ``"rows"``: (N, width), as the library computed before session 6;
        ``"columns_net"``: the network as (width, N), transposed back for numpyro's
        ``MixtureSameFamily`` (what ``bayes_mdn.network.apply`` now does).
    heads : {"fused", "separate"}
        One matmul for the logits, loc and scale heads, or one each.

    Returns
    -------
    callable
        ``params -> scalar`` potential energy.
    """
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    import bayes_mdn as bm

    prior = bm.priors.FanInNormal(PRIOR_SCALE)
    hidden = [f"hidden_{i}" for i in range(len(model.hidden_sizes))]
    names = ("logits", "loc", "scale")
    stds = {}
    for name, value in params_like.items():
        fan_in = np.shape(value)[0]
        stds[name] = (prior.scale / np.sqrt(fan_in) if name.endswith("kernel")
                      else prior.bias_scale)
    log_norm = sum(np.size(v) * (np.log(stds[n]) + 0.5 * LOG_2PI)
                   for n, v in params_like.items())
    X_t, y_row = jnp.asarray(X_std).T, jnp.asarray(y_std)[:, 0]

    def potential(params):
        log_prior = sum(0.5 * jnp.sum(jnp.square(params[n] / s)) for n, s in stds.items())
        if layout == "rows":
            h = X_t.T
            for name in hidden:
                h = jnp.tanh(h @ params[f"{name}.kernel"] + params[f"{name}.bias"])
            if heads == "fused":
                out = (h @ jnp.concatenate([params[f"{n}.kernel"] for n in names], 1)
                       + jnp.concatenate([params[f"{n}.bias"] for n in names]))
                logits, loc, raw = out[:, :K], out[:, K:2 * K], out[:, 2 * K:]
            else:
                logits, loc, raw = (h @ params[f"{n}.kernel"] + params[f"{n}.bias"]
                                    for n in names)
            axis, y_b = 1, y_row[:, None]
        else:
            h = X_t
            for name in hidden:
                h = jnp.tanh(params[f"{name}.kernel"].T @ h + params[f"{name}.bias"][:, None])
            if heads == "fused":
                out = (jnp.concatenate([params[f"{n}.kernel"] for n in names], 1).T @ h
                       + jnp.concatenate([params[f"{n}.bias"] for n in names])[:, None])
                logits, loc, raw = out[:K], out[K:2 * K], out[2 * K:]
            else:
                logits, loc, raw = (params[f"{n}.kernel"].T @ h + params[f"{n}.bias"][:, None]
                                    for n in names)
            axis, y_b = 0, y_row[None, :]
            if layout == "columns_net":
                logits, loc, raw, axis, y_b = logits.T, loc.T, raw.T, 1, y_row[:, None]
        scale = jax.nn.softplus(raw) + MIN_SCALE
        if layout == "columns_net":
            mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                             dist.Normal(loc, scale))
            log_lik = jnp.sum(mixture.log_prob(y_row))
        else:
            u = (y_b - loc) / scale
            joint = logits - 0.5 * u * u - jnp.log(scale)
            log_lik = jnp.sum(jax.nn.logsumexp(joint, axis=axis)
                              - jax.nn.logsumexp(logits, axis=axis)) - 0.5 * LOG_2PI * y_row.size
        return log_prior + log_norm - log_lik

    return potential


class Seed200:
    """The data, model, MAP start and potentials of part 2 (n = 200 network).

    Parameters
    ----------
    start_file : str, optional
        An ``.npz`` of the MAP point written by :meth:`save_start` (subprocesses reuse it);
        without it a MAP fit is run.
    """

    def __init__(self, start_file: str | None = None) -> None:
        import _handwritten as hw
        import jax
        import jax.numpy as jnp
        from numpyro.infer.util import potential_energy

        from bayes_mdn.inference._data import prepare_data

        X, y = seed_data(200)
        self.model = make_model()
        self.X, self.y = X, y
        self.data = prepare_data(self.model, X, y)
        dtype = self.data.X.dtype
        if start_file is None:
            self.map_fit = self.model.fit(X, y, key=jax.random.key(1), method="map",
                                          num_steps=MAP_STEPS)
            point = {n: np.asarray(v[0, 0]) for n, v in self.map_fit.draws.items()}
        else:
            self.map_fit = None
            with np.load(start_file) as saved:
                point = {n: saved[n] for n in saved.files}
        self.point = {n: jnp.asarray(v, dtype) for n, v in point.items()}
        self.twin = hw.make_model(K, HIDDEN, PRIOR_SCALE)
        args, kwargs = (self.data.X, self.data.y), {"y_scale": self.data.y_scale}
        self.potentials: dict[str, Callable] = {
            "bayes_mdn model": lambda p: potential_energy(self.model.numpyro_model, args,
                                                          kwargs, p),
            "handwritten twin": lambda p: potential_energy(self.twin, args, {}, p),
            "fused": fused_potential(self.model, self.point, *args),
        }
        self.profile_potentials: dict[str, Callable] = {
            "fused, one head matmul, rows (N, K)": fused_potential(
                self.model, self.point, *args, layout="rows"),
            "fused, three head matmuls, rows (N, K)": fused_potential(
                self.model, self.point, *args, layout="rows", heads="separate"),
            "fused, three head matmuls, columns (K, N)": fused_potential(
                self.model, self.point, *args, heads="separate"),
            "fused net (K, N), numpyro mixture (N, K)": fused_potential(
                self.model, self.point, *args, layout="columns_net"),
        }

    def save_start(self, path: str) -> None:
        """Write the MAP point to `path` (``.npz``)."""
        np.savez(path, **{n: np.asarray(v) for n, v in self.point.items()})

    def check_potentials(self) -> dict[str, float]:
        """Largest relative difference of every potential's value and gradient from the
        library's at the MAP point (float32 rounding: ~1e-6)."""
        import jax
        import jax.numpy as jnp

        reference = self.potentials["bayes_mdn model"]
        value, grad = jax.value_and_grad(reference)(self.point)
        flat = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grad)])
        result = {}
        for name, potential in {**self.potentials, **self.profile_potentials}.items():
            other_value, other_grad = jax.value_and_grad(potential)(self.point)
            other = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(other_grad)])
            result[name] = max(float(abs(other_value - value) / abs(value)),
                               float(jnp.max(jnp.abs(other - flat)) / jnp.max(jnp.abs(flat))))
        return result


def gradient_programs(case: Seed200, potentials: Mapping[str, Callable], length: int
                      ) -> dict[str, Callable[[], Any]]:
    """Per potential, a jitted ``lax.fori_loop`` of `length` ``value_and_grad`` evaluations
    (each step moves the point by 1e-7 x gradient, so no evaluation can be hoisted), and one
    of `length` velocity-Verlet steps (numpyro's integrator, unit mass)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc_util import velocity_verlet

    programs = {}
    for name, potential in potentials.items():
        value_and_grad = jax.value_and_grad(potential)

        def gradients(point, value_and_grad=value_and_grad):
            def body(_, p):
                return jax.tree.map(lambda a, g: a - 1e-7 * g, p, value_and_grad(p)[1])

            return jax.lax.fori_loop(0, length, body, point)

        init, update = velocity_verlet(potential, lambda m, r: 0.5 * sum(
            jnp.sum(m * x * x) for x in jax.tree.leaves(r)))

        def verlet(point, init=init, update=update):
            momentum = jax.tree.map(lambda a: jnp.full_like(a, 0.01), point)
            state = init(point, momentum)
            state = jax.lax.fori_loop(0, length, lambda _, s: update(1e-4, 1.0, s), state)
            return state.z

        gradient_jit, verlet_jit = jax.jit(gradients), jax.jit(verlet)
        programs[("grad", name)] = lambda f=gradient_jit: f(case.point)
        programs[("verlet", name)] = lambda f=verlet_jit: f(case.point)
    return programs


def forward_gradient_us(case: Seed200, repeats: int, length: int = 10) -> float:
    """Microseconds of one forward-mode gradient (``jax.jacfwd``, what numpyro's
    ``forward_mode_differentiation=True`` computes per leapfrog) of the library's potential,
    in a jitted ``lax.fori_loop`` of `length` evaluations."""
    import jax

    potential = case.potentials["bayes_mdn model"]
    jacobian = jax.jacfwd(potential)

    @jax.jit
    def run(point):
        def body(_, p):
            return jax.tree.map(lambda a, g: a - 1e-7 * g, p, jacobian(p))

        return jax.lax.fori_loop(0, length, body, point)

    jax.block_until_ready(run(case.point))
    return 1e6 * median(clock(lambda: run(case.point)) for _ in range(repeats)) / length


def gradient_flops(potential: Callable, point: Mapping[str, Any]) -> float | None:
    """FLOPs of one ``value_and_grad`` of `potential` by XLA's cost analysis, or None."""
    import jax

    try:
        analysis = jax.jit(jax.value_and_grad(potential)).lower(point).compile().cost_analysis()
    except Exception:  # cost analysis is best effort
        return None
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return None if flops is None else float(flops)


def numpyro_program(case: Seed200, num_warmup: int, num_samples: int, *,
                    potential: str | None = None, twin: bool = False,
                    **nuts_options: Any) -> Callable[[Any], Any]:
    """Jitted ``key -> (total leapfrog steps, warm-up steps, final step size)``: numpyro's NUTS
    from the MAP point, warm-up and draws in one ``lax.fori_loop``, every step counted.

    Parameters
    ----------
    potential : str, optional
        A key of ``case.potentials`` given as ``potential_fn``; default: a model
        (`twin`: the hand-written twin, else bayes_mdn's ``numpyro_model``).
    **nuts_options
        Passed to ``numpyro.infer.NUTS``.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer import NUTS

    if potential is not None:
        kernel = NUTS(potential_fn=case.potentials[potential], max_tree_depth=MAX_TREE_DEPTH,
                      **nuts_options)
        model_args, model_kwargs = (), {}
    else:
        model = case.twin if twin else case.model.numpyro_model
        kernel = NUTS(model, max_tree_depth=MAX_TREE_DEPTH, **nuts_options)
        model_args = (case.data.X, case.data.y)
        model_kwargs = {} if twin else {"y_scale": case.data.y_scale}

    @jax.jit
    def run(key):
        state = kernel.init(key, num_warmup, init_params=case.point, model_args=model_args,
                            model_kwargs=model_kwargs)

        def body(index, carry):
            state, total, warmup = carry
            state = kernel.sample(state, model_args, model_kwargs)
            steps = state.num_steps.astype(jnp.int32)
            return state, total + steps, warmup + jnp.where(index < num_warmup, steps, 0)

        zero = jnp.int32(0)
        state, total, warmup = jax.lax.fori_loop(0, num_warmup + num_samples, body,
                                                 (state, zero, zero))
        return total, warmup, state.adapt_state.step_size

    return run


def blackjax_program(case: Seed200, potential: str, num_warmup: int, num_samples: int
                     ) -> Callable[[Any], Any]:
    """Like :func:`numpyro_program` with BlackJAX's NUTS and window adaptation."""
    import blackjax
    import jax

    def log_density(params):
        return -case.potentials[potential](params)

    @jax.jit
    def run(key):
        warmup_key, sample_key = jax.random.split(key)
        adaptation = blackjax.window_adaptation(blackjax.nuts, log_density,
                                                max_num_doublings=MAX_TREE_DEPTH)
        (state, parameters), info = adaptation.run(warmup_key, case.point,
                                                   num_steps=num_warmup)
        step = blackjax.nuts(log_density, **parameters).step

        def one(state, key):
            state, draw_info = step(key, state)
            return state, draw_info.num_integration_steps

        state, steps = jax.lax.scan(one, state, jax.random.split(sample_key, num_samples))
        warmup = info.info.num_integration_steps.sum()
        return warmup + steps.sum(), warmup, parameters["step_size"]

    return run


def leapfrog_variants(case: Seed200, num_warmup: int, num_samples: int
                      ) -> dict[str, Callable[[Any], Any]]:
    """Part 2's in-process sampler variants (name -> jitted program)."""
    variants = {
        "handwritten twin, numpyro NUTS (baseline)": numpyro_program(
            case, num_warmup, num_samples, twin=True),
        "bayes_mdn model, numpyro NUTS": numpyro_program(case, num_warmup, num_samples),
        "bayes_mdn model, dense_mass": numpyro_program(case, num_warmup, num_samples,
                                                       dense_mass=True),
        "bayes_mdn model, find_heuristic_step_size": numpyro_program(
            case, num_warmup, num_samples, find_heuristic_step_size=True),
        "fused potential, numpyro NUTS": numpyro_program(case, num_warmup, num_samples,
                                                         potential="fused"),
    }
    try:
        import blackjax  # noqa: F401
    except ImportError:
        print("blackjax is not installed (pip install blackjax): its rows are skipped.",
              flush=True)
    else:
        variants["bayes_mdn model, BlackJAX NUTS"] = blackjax_program(
            case, "bayes_mdn model", num_warmup, num_samples)
        variants["fused potential, BlackJAX NUTS"] = blackjax_program(
            case, "fused", num_warmup, num_samples)
    return variants


def time_samplers(programs: Mapping[str, Callable[[Any], Any]], repeats: int
                  ) -> dict[str, dict[str, Any]]:
    """Compile, then time every program `repeats` times, interleaved; same key each time."""
    import jax

    results: dict[str, dict[str, Any]] = {}
    for name, program in programs.items():
        started = time.perf_counter()
        total, warmup, step_size = jax.block_until_ready(program(jax.random.key(0)))
        results[name] = {"first_call_s": time.perf_counter() - started,
                         "leapfrogs": int(total), "warmup_leapfrogs": int(warmup),
                         "step_size": float(step_size), "times": []}
    for _ in range(repeats):
        for name, program in programs.items():
            results[name]["times"].append(clock(lambda p=program: p(jax.random.key(0))))
    for result in results.values():
        result["seconds"] = median(result["times"])
        result["leapfrog_per_s"] = result["leapfrogs"] / result["seconds"]
        result["us_per_leapfrog"] = 1e6 * result["seconds"] / result["leapfrogs"]
        result["us_per_leapfrog_min"] = 1e6 * min(result["times"]) / result["leapfrogs"]
    return results


def library_rate(case: Seed200, num_warmup: int, num_samples: int, repeats: int
                 ) -> dict[str, Any]:
    """``MDN.fit(method="nuts")``'s sampling-phase leapfrogs per second, one chain: the
    difference of a 2S-draw and an S-draw fit (same key, so their first S draws coincide),
    warm, interleaved."""
    import jax

    options = dict(method="nuts", init=case.map_fit, num_chains=1, num_warmup=num_warmup,
                   max_tree_depth=MAX_TREE_DEPTH)
    fits = {}
    for draws in (num_samples, 2 * num_samples):
        fits[draws] = case.model.fit(case.X, case.y, key=jax.random.key(5),
                                     num_samples=draws, **options)
    steps = {d: fit.info["num_leapfrog_steps"] for d, fit in fits.items()}
    times: dict[int, list[float]] = {d: [] for d in fits}
    for _ in range(repeats):
        for draws in fits:
            times[draws].append(clock(lambda d=draws: case.model.fit(
                case.X, case.y, key=jax.random.key(5), num_samples=d, **options
            ).draws["loc.kernel"]))
    extra_s = median(np.asarray(times[2 * num_samples]) - np.asarray(times[num_samples]))
    extra_steps = steps[2 * num_samples] - steps[num_samples]
    return {"seconds_S": median(times[num_samples]), "seconds_2S": median(times[2 * num_samples]),
            "extra_leapfrogs": extra_steps, "extra_seconds": extra_s,
            "leapfrog_per_s": extra_steps / extra_s, "us_per_leapfrog": 1e6 * extra_s / extra_steps}


def env_worker(start_file: str, num_warmup: int, num_samples: int, repeats: int
               ) -> dict[str, Any]:
    """Subprocess body of the flag variants: per-leapfrog time of the bayes_mdn-model and
    fused-potential NUTS, and one gradient of each."""
    import jax

    case = Seed200(start_file)
    programs = {"bayes_mdn model": numpyro_program(case, num_warmup, num_samples),
                "fused": numpyro_program(case, num_warmup, num_samples, potential="fused")}
    samplers = time_samplers(programs, repeats)
    gradients = gradient_programs(case, {n: case.potentials[n] for n in programs}, 1000)
    grad_us = {}
    for (kind, name), program in gradients.items():
        if kind == "grad":
            jax.block_until_ready(program())
            grad_us[name] = 1e3 * median(clock(program) for _ in range(repeats))
    return {"x64": bool(jax.config.jax_enable_x64),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "us_per_leapfrog": {n: r["us_per_leapfrog"] for n, r in samplers.items()},
            "leapfrogs": {n: r["leapfrogs"] for n, r in samplers.items()},
            "grad_us": grad_us}


def env_variants(case: Seed200, names: list[str], rounds: int, num_warmup: int,
                 num_samples: int) -> dict[str, Any]:
    """Run :func:`env_worker` in a fresh process per variant, `rounds` interleaved rounds;
    ratios of per-leapfrog time against the default process of the same round."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="nuts_cost_") as folder:
        start_file = str(Path(folder) / "start.npz")
        case.save_start(start_file)
        for _ in range(rounds):
            for name in names:
                env = {k: v for k, v in os.environ.items()
                       if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
                env.update(ENV_VARIANTS[name])
                command = [sys.executable, str(Path(__file__).resolve()), "--env-worker",
                           start_file, "--worker-draws", f"{num_warmup},{num_samples}"]
                done = subprocess.run(command, capture_output=True, text=True, env=env,
                                      cwd=HERE, check=False)
                if done.returncode != 0:
                    results[name].append({"error": done.stderr[-1500:]})
                    print(f"{name}: failed\n{done.stderr[-1500:]}", flush=True)
                    continue
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(name, results[name][-1], flush=True)
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        good = [(r, d) for r, d in zip(runs, results["default"], strict=True)
                if "error" not in r and "error" not in d]
        if not good:
            summary[name] = {"error": runs[0].get("error", "default failed")}
            continue
        entry: dict[str, Any] = {"runs": runs}
        for potential in ("bayes_mdn model", "fused"):
            entry[f"us_per_leapfrog[{potential}]"] = median(
                r["us_per_leapfrog"][potential] for r, _ in good)
            entry[f"ratio_to_default[{potential}]"] = median(
                r["us_per_leapfrog"][potential] / d["us_per_leapfrog"][potential]
                for r, d in good)
            entry[f"grad_us[{potential}]"] = median(r["grad_us"][potential] for r, _ in good)
        summary[name] = entry
    return summary


def per_leapfrog(num_warmup: int, num_samples: int, repeats: int, env_names: list[str],
                 env_rounds: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Part 2: samplers, the library's own rate, the gradient profile and flag variants.

    Returns
    -------
    payload : dict
    rows : list of dict
        The Markdown table rows of part 2.
    """
    import jax

    case = Seed200()
    check = case.check_potentials()
    print("potential check (max relative difference from the library's):", check, flush=True)
    samplers = time_samplers(leapfrog_variants(case, num_warmup, num_samples), repeats)
    baseline_name = "handwritten twin, numpyro NUTS (baseline)"
    baseline = samplers[baseline_name]
    # Paired per-leapfrog ratios (same repetition).
    for result in samplers.values():
        result["speedup_vs_baseline"] = median(
            (b / baseline["leapfrogs"]) / (t / result["leapfrogs"])
            for t, b in zip(result["times"], baseline["times"], strict=True))
        result["speedup_min"] = baseline["us_per_leapfrog_min"] / result["us_per_leapfrog_min"]
    library = library_rate(case, num_warmup, num_samples, repeats)

    potentials = {**case.potentials, **case.profile_potentials}
    programs = gradient_programs(case, potentials, 1000)
    for program in programs.values():
        jax.block_until_ready(program())
    times: dict[Any, list[float]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, program in programs.items():
            times[name].append(1e3 * clock(program))  # ms per 1000 = us per evaluation
    profile = {}
    for name, potential in potentials.items():
        flops = gradient_flops(potential, case.point)
        profile[name] = {"grad_us": median(times[("grad", name)]),
                         "grad_us_min": min(times[("grad", name)]),
                         "verlet_us": median(times[("verlet", name)]),
                         "grad_mflop": None if flops is None else flops / 1e6}
    profile["bayes_mdn model, forward-mode gradient (jax.jacfwd)"] = {
        "grad_us": forward_gradient_us(case, repeats), "verlet_us": None, "grad_mflop": None}
    sampler_of = {"bayes_mdn model": "bayes_mdn model, numpyro NUTS",
                  "handwritten twin": baseline_name, "fused": "fused potential, numpyro NUTS"}
    for name, sampler in sampler_of.items():
        # Minima over repetitions: the least disturbed figures of both.
        nuts_us, grad_us = (samplers[sampler]["us_per_leapfrog_min"],
                            profile[name]["grad_us_min"])
        profile[name].update(nuts_us_per_leapfrog_min=nuts_us,
                             bookkeeping_us=nuts_us - grad_us, grad_share=grad_us / nuts_us)

    # Half-length runs in the subprocesses (each also compiles its programs).
    env = (env_variants(case, env_names, env_rounds, max(1, num_warmup // 2),
                        max(1, num_samples // 2)) if env_names else {})

    rows = []
    for name, result in samplers.items():
        rows.append({"part": "leapfrog", "what": name, "leapfrogs": result["leapfrogs"],
                     "warmup_leapfrogs": result["warmup_leapfrogs"],
                     "step_size": result["step_size"], "seconds": result["seconds"],
                     "us_per_leapfrog": result["us_per_leapfrog"],
                     "leapfrog_per_s": result["leapfrog_per_s"],
                     "speedup": result["speedup_vs_baseline"],
                     "us_per_leapfrog_min": result["us_per_leapfrog_min"],
                     "speedup_min": result["speedup_min"],
                     "target": f">= {TARGET_SPEEDUP}",
                     "status": "met" if result["speedup_vs_baseline"] >= TARGET_SPEEDUP
                     else "not met"})
    rows.append({"part": "leapfrog", "what": "MDN.fit (library), sampling phase: (2S - S)",
                 "leapfrogs": library["extra_leapfrogs"], "seconds": library["extra_seconds"],
                 "us_per_leapfrog": library["us_per_leapfrog"],
                 "leapfrog_per_s": library["leapfrog_per_s"],
                 "speedup": library["leapfrog_per_s"] / baseline["leapfrog_per_s"],
                 "target": "(info: unpaired)", "status": "-"})
    for name, entry in profile.items():
        row = {"part": "profile", "what": name, "grad_us": entry["grad_us"],
               "grad_us_min": entry.get("grad_us_min"), "verlet_us": entry["verlet_us"],
               "grad_mflop": entry["grad_mflop"]}
        for key in ("nuts_us_per_leapfrog_min", "bookkeeping_us", "grad_share"):
            if key in entry:
                row[key] = entry[key]
        rows.append(row)
    for name, entry in env.items():
        if "error" in entry:
            rows.append({"part": "flags", "what": name, "status": "failed"})
            continue
        rows.append({"part": "flags", "what": name,
                     "us_per_leapfrog": entry["us_per_leapfrog[bayes_mdn model]"],
                     "speedup": 1 / entry["ratio_to_default[bayes_mdn model]"],
                     "grad_us": entry["grad_us[bayes_mdn model]"],
                     "fused_us_per_leapfrog": entry["us_per_leapfrog[fused]"],
                     "fused_speedup": 1 / entry["ratio_to_default[fused]"],
                     "target": "(info: vs default process)", "status": "-"})
    payload = {"potential_check": check, "samplers": samplers, "library": library,
               "profile": profile, "flags": env}
    return payload, rows


def growth_table_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Part 1's result row in the columns of the Markdown table."""
    return {"part": f"growth ({row['sweep']})",
            "what": f"N={row['N']}, hidden={row['hidden']}, {row['params']} params, "
                    f"{row['num_chains']} chains x ({row['num_warmup']} + "
                    f"{row['num_samples']})",
            "seconds": row["seconds"], "timing": row["timing"],
            "leapfrogs": row["sampling_leapfrogs"], "frac_max_depth": row["frac_max_depth"],
            "us_per_leapfrog": 1e3 * row["ms_per_leapfrog"],
            "leapfrog_per_s": row["leapfrog_per_s"], "ess_bulk": row["ess_bulk"],
            "rhat": row["rhat"], "s_per_ess": row["s_per_ess"],
            "us_per_leapfrog_ratio": row["ms_per_leapfrog_ratio"],
            "s_per_ess_ratio": row["s_per_ess_ratio"]}


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["growth", "leapfrog", "flags"])
    parser.add_argument("--env-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-draws", default="100,200", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.env_worker:
        warmup, samples = (int(v) for v in args.worker_draws.split(","))
        print(json.dumps(env_worker(args.env_worker, warmup, samples, 3)))
        return

    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    if quick:
        sizes, widths, width_rows = [200, 1000], [10, 20], 1000
        growth_nuts = dict(num_chains=2, num_warmup=50, num_samples=50)

        def nuts_for(num_rows: int, hidden: tuple[int, ...]) -> dict[str, int]:
            return dict(growth_nuts)

        def twice_for(num_rows: int) -> bool:
            return True

        leapfrog_draws = (30, 60)
        env_names, env_rounds = ["default", "XLA thunk runtime off"], 1
    else:
        sizes, widths, width_rows = [200, 2000, 20_000], [10, 20, 50], 2000

        def nuts_for(num_rows: int, hidden: tuple[int, ...]) -> dict[str, int]:
            if num_rows >= 20_000:  # ~20 ms per leapfrog of 2 chains: a shorter run
                return dict(num_chains=2, num_warmup=100, num_samples=100)
            return dict(num_chains=2, num_warmup=200, num_samples=200)

        def twice_for(num_rows: int) -> bool:
            return num_rows < 20_000

        leapfrog_draws = (100, 200)
        env_names, env_rounds = list(ENV_VARIANTS), 2
    if "flags" in args.skip:
        env_names = []

    payload: dict[str, Any] = {"K": K, "hidden": HIDDEN, "prior_scale": PRIOR_SCALE,
                               "max_tree_depth": MAX_TREE_DEPTH, "map_steps": MAP_STEPS,
                               "repeats": repeats, "quick": quick,
                               "target_leapfrog_speedup": TARGET_SPEEDUP}
    rows: list[dict[str, Any]] = []
    if "growth" not in args.skip:
        growth = cost_growth(sizes, widths, width_rows, nuts_for, twice_for)
        payload["growth"] = growth
        rows.extend(growth_table_row(row) for row in growth)
    if "leapfrog" not in args.skip:
        leapfrog_payload, leapfrog_rows = per_leapfrog(*leapfrog_draws, repeats, env_names,
                                                       env_rounds)
        payload["leapfrog"] = {"num_warmup": leapfrog_draws[0],
                               "num_samples": leapfrog_draws[1], **leapfrog_payload}
        rows.extend(leapfrog_rows)
    from _common import write_results

    write_results("nuts_cost_quick" if quick else "nuts_cost", payload, rows)


if __name__ == "__main__":
    main()
