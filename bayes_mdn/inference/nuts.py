"""Hamiltonian Monte Carlo (``method="nuts"``): numpyro's NUTS over several chains.

Chains run vectorised on one device, or spread evenly over several devices
(``chain_method="parallel"``, the default when there are several): the vectorised chains are
sharded over a one-dimensional device mesh, so each device runs its share of them. The whole
sampler (initialisation, warm-up and sampling) is one compiled program per model, data shape
and options, reused by later fits with another key or data of the same shape.

Neural-network posteriors are multimodal and random starting points need long warm-ups, so
starting from fitted networks (``init=`` a MAP fit, or better an ensemble, one member per
chain) is usually the best use of the budget. Per-draw sampler statistics
(divergences, tree depth, step size, acceptance, energy) are kept in
``Posterior.sample_stats``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import unconstrain_fn

from bayes_mdn._progress import check_progress, progress_bar, show_progress
from bayes_mdn._validation import check_choice, check_positive_float, check_positive_int
from bayes_mdn.diagnostics import MAX_TREE_DEPTH_FRACTION, ConvergenceWarning
from bayes_mdn.inference._checkpoint import CheckpointPlan, checkpoint_plan
from bayes_mdn.inference._checkpoint import check_options as check_checkpoint_options
from bayes_mdn.inference._data import FitData, draws_from_init, final_scores, initial_params
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior

__all__ = ["CHAIN_METHODS", "NutsOptions", "fit_nuts"]

CHAIN_METHODS = ("auto", "vectorized", "parallel", "sequential")
#: Progress-bar updates during sampling: the draws run in this many compiled segments when
#: a bar is shown (the draws are those of one uninterrupted run).
PROGRESS_SEGMENTS = 10
#: Name of the device-mesh axis the chains of ``chain_method="parallel"`` are sharded over.
CHAIN_AXIS = "chains"
#: numpyro extra field -> name in ``Posterior.sample_stats``.
EXTRA_FIELDS = {"diverging": "diverging", "num_steps": "num_steps",
                "accept_prob": "accept_prob", "energy": "energy",
                "potential_energy": "potential_energy", "adapt_state.step_size": "step_size"}


@dataclass(frozen=True)
class NutsOptions:
    """Options of ``method="nuts"``.

    Attributes
    ----------
    num_warmup : int
        Adaptation steps per chain (step size and mass matrix), discarded.
    num_samples : int
        Kept draws per chain (before thinning).
    num_chains : int
    init : Posterior, "auto" or None
        Where the chains start. A fit of the same model: chain c starts at draw
        ``c * S // C`` of its S draws (one ensemble member per chain for
        ``method="ensemble"``; every chain at the MAP point for ``method="map"``).
        ``"auto"`` (default): fit an ensemble of `num_chains` MAP fits first (default MAP
        options, part of this fit's time) and start one chain at each member. None: every
        chain starts from its own data-dependent random initialisation (needs a long
        warm-up: network posteriors are multimodal).
    dense_mass : bool
        Adapt a dense mass matrix (W x W) instead of a diagonal one.
    target_accept_prob : float
        Step-size adaptation target in (0, 1); raise it (0.9, 0.95) against divergences.
    max_tree_depth : int
        Trajectories have at most ``2 ** max_tree_depth - 1`` leapfrog steps (default 6:
        63). The share of transitions that hit it is ``info["fraction_max_tree_depth"]``
        (also in ``summary()``); above 10 % the fit warns.
    chain_method : str
        How the chains share the hardware. ``"vectorized"``: all chains batched on one
        device. ``"parallel"``: the batched chains sharded evenly over ``d`` local devices
        (``jax.local_devices()``), ``d`` the largest divisor of `num_chains` not above
        ``jax.local_device_count()``; each device advances its ``num_chains / d`` chains
        and the devices step in lockstep. ``"sequential"``: one chain after another on one
        device (least memory). ``"auto"`` (default): parallel when that uses at least two
        devices, vectorised otherwise. The choice changes the draws only through
        floating-point rounding (which NUTS amplifies: the draws differ, the posterior they
        sample does not).
    thinning : int
        Keep every `thinning`-th draw.
    progress : bool or None
        Show a progress bar (tqdm, standard error): warm-up, then the draws in
        ``PROGRESS_SEGMENTS`` compiled segments, with divergences and the share of
        transitions at max tree depth so far. None (default): only in a terminal (see
        :mod:`bayes_mdn._progress`).
    checkpoint : str or path-like, optional
        File to write the sampler state (every chain's position, step size, mass matrix and
        PRNG key) and the draws so far to, at the end of warm-up, every `checkpoint_every`
        draws per chain and at the end; see :mod:`bayes_mdn.inference._checkpoint`.
    checkpoint_every : int, optional
        Draws per chain (before thinning; a multiple of `thinning`) between checkpoints.
    resume : str or path-like, optional
        A checkpoint to continue the same chains from: the model, data, key and options
        must be those of the run that wrote it, except `num_samples`, which may grow (N
        draws, then resume with 2N, equals one run of 2N draws).
    """

    num_warmup: int = 300
    num_samples: int = 200
    num_chains: int = 4
    init: Any = "auto"
    dense_mass: bool = False
    target_accept_prob: float = 0.8
    max_tree_depth: int = 6
    chain_method: str = "auto"
    thinning: int = 1
    progress: bool | None = None
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.num_warmup, "num_warmup", minimum=0)
        check_positive_int(self.num_samples, "num_samples")
        check_positive_int(self.num_chains, "num_chains")
        check_positive_float(self.target_accept_prob, "target_accept_prob")
        if not 0 < self.target_accept_prob < 1:
            raise ValueError("`target_accept_prob` must be strictly between 0 and 1; got "
                             f"{self.target_accept_prob}.")
        check_positive_int(self.max_tree_depth, "max_tree_depth")
        check_positive_int(self.thinning, "thinning")
        chain_method = "auto" if self.chain_method is None else self.chain_method
        object.__setattr__(self, "chain_method",
                           check_choice(chain_method, "chain_method", CHAIN_METHODS))
        if self.chain_method == "parallel":
            self.num_chain_devices()  # raises if the chains cannot be spread
        if not isinstance(self.dense_mass, bool):
            raise TypeError(f"`dense_mass` must be True or False; got {self.dense_mass!r}.")
        check_progress(self.progress)
        if isinstance(self.init, str) and self.init != "auto":
            raise ValueError(f"`init` must be a fitted Posterior, 'auto' or None; got "
                             f"{self.init!r}.")
        check_checkpoint_options(self, "draws per chain")
        if self.checkpoint is not None or self.resume is not None:
            for name in ("num_samples", "checkpoint_every"):
                value = getattr(self, name)
                if value is not None and value % self.thinning:
                    raise ValueError(f"With checkpoints, `{name}` must be a multiple of "
                                     f"`thinning` ({self.thinning}); got {value}.")

    def num_chain_devices(self) -> int:
        """How many local devices ``chain_method="parallel"`` spreads the chains over: the
        largest divisor of `num_chains` not above ``jax.local_device_count()``.

        Raises
        ------
        ValueError
            For ``chain_method="parallel"`` when that is a single device.
        """
        available = jax.local_device_count()
        devices = max(d for d in range(1, min(available, self.num_chains) + 1)
                      if self.num_chains % d == 0)
        if devices == 1 and self.chain_method == "parallel":
            if available == 1:
                raise ValueError(
                    "chain_method='parallel' spreads the chains over several devices, but "
                    "jax.local_device_count() is 1. Use chain_method='vectorized' (or "
                    "'auto'); on CPU, simulate N devices by setting the environment variable "
                    "XLA_FLAGS=--xla_force_host_platform_device_count=N before jax is "
                    "imported.")
            raise ValueError(
                f"chain_method='parallel' spreads the chains evenly over devices, but "
                f"num_chains={self.num_chains} cannot be split evenly over {available} "
                f"devices (jax.local_device_count()) or fewer. Use a num_chains that is a "
                f"multiple of {available}, or chain_method='vectorized'.")
        return devices

    def resolved_chain_method(self) -> tuple[str, int]:
        """The chain method to run (``"auto"`` resolved) and how many devices it uses."""
        if self.chain_method in ("auto", "parallel"):
            devices = self.num_chain_devices()
            return ("parallel", devices) if devices > 1 else ("vectorized", 1)
        return self.chain_method, 1


@dataclass(frozen=True, eq=False)
class _Sampler:
    """numpyro's MCMC for one configuration, and its runs as cached compiled programs.

    ``MCMC.run`` on its own compiles its sampling loop anew on every call (numpyro wraps the
    loop body in a fresh ``jax.jit`` each time, and the loop's cache is keyed on it), which
    costs seconds to minutes per fit. Tracing each whole run, initialisation included, inside
    one ``jax.jit`` of ours, built once per configuration, makes a later fit with another key
    or other data of the same shape reuse the compiled program. With ``progress=True``
    numpyro drives the loop from Python (the progress bar), so runs stay eager.

    Attributes
    ----------
    run : callable
        ``(key, X, y, y_scale, start) -> (samples, extra_fields, last_state)``: warm-up and
        sampling from `start`, the *constrained* starting points (C, ...).
    warmup : callable
        ``(key, X, y, y_scale, start) -> state``: the warm-up only.
    resume : callable
        ``(state, X, y, y_scale) -> (samples, extra_fields, last_state)``: sampling from a
        post-warm-up state, continuing its PRNG keys.
    """

    run: Callable[..., Any]
    warmup: Callable[..., Any]
    resume: Callable[..., Any]


@lru_cache(maxsize=8)
def _sampler(model: MDN, data_shape: tuple[int, int, int], settings: tuple) -> _Sampler:
    """The sampler of one configuration (``jit_model_args=True`` makes the data an argument
    of the compiled programs rather than a constant)."""
    (num_warmup, num_samples, num_chains, dense_mass, target_accept_prob, max_tree_depth,
     chain_method, thinning, progress) = settings
    kernel = NUTS(model.numpyro_model, dense_mass=dense_mass,
                  target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
    # "parallel" is the vectorised sampler run on chain-sharded inputs (see fit_nuts).
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized" if chain_method == "parallel" else chain_method,
                thinning=thinning, progress_bar=progress, jit_model_args=True)
    fields = tuple(EXTRA_FIELDS)

    def unconstrained(start, X, y, y_scale):
        # numpyro's sampler takes init_params as inputs of its potential function, so a
        # positive site (a hierarchical prior's scale) must enter as its logarithm.
        def one(point):
            return unconstrain_fn(model.numpyro_model, (X, y), {"y_scale": y_scale}, point)

        if num_chains == 1:
            return one({name: value[0] for name, value in start.items()})
        return jax.vmap(one)(start)

    def results():
        return (mcmc.get_samples(group_by_chain=True),
                mcmc.get_extra_fields(group_by_chain=True), mcmc.last_state)

    def run(key, X, y, y_scale, start):
        mcmc.run(key, X, y, y_scale=y_scale, init_params=unconstrained(start, X, y, y_scale),
                 extra_fields=fields)
        return results()

    def warmup(key, X, y, y_scale, start):
        try:
            mcmc.warmup(key, X, y, y_scale=y_scale,
                        init_params=unconstrained(start, X, y, y_scale), extra_fields=fields)
            return mcmc.post_warmup_state
        finally:
            mcmc.post_warmup_state = None

    def resume(state, X, y, y_scale):
        # The post-warm-up state is always cleared after use, so that a later run never
        # skips its warm-up.
        mcmc.post_warmup_state = state
        try:
            mcmc.run(state.rng_key, X, y, y_scale=y_scale, extra_fields=fields)
            return results()
        finally:
            mcmc.post_warmup_state = None

    compiled = (lambda fn: fn) if progress else jax.jit
    return _Sampler(run=compiled(run), warmup=compiled(warmup), resume=compiled(resume))


def _starting_points(model: MDN, data: FitData, key: jax.Array, options: NutsOptions
                     ) -> dict[str, jax.Array]:
    """One starting point per chain, each site (C, ...), in constrained coordinates."""
    chains = options.num_chains
    if options.init is None:
        return initial_params(model, data, jax.random.split(key, chains))
    init = options.init
    if isinstance(init, str):  # "auto": one MAP fit per chain
        from bayes_mdn.inference.map import EnsembleOptions, fit_ensemble

        init = fit_ensemble(model, data, key,
                            EnsembleOptions(num_members=chains, progress=options.progress))
    draws = draws_from_init(init, model, data)
    available = next(iter(draws.values())).shape[0]
    index = (np.arange(chains) * available) // chains
    return {name: value[index] for name, value in draws.items()}


def _chain_sharding(num_chains: int, num_devices: int):
    """``tree -> tree`` placing every array with a leading chain axis (C, ...) sharded over
    a mesh of the first `num_devices` local devices, and every other array replicated; the
    identity on one device."""
    if num_devices == 1:
        return lambda tree: tree
    mesh = Mesh(np.asarray(jax.local_devices()[:num_devices]), (CHAIN_AXIS,))
    sharded = NamedSharding(mesh, PartitionSpec(CHAIN_AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(value):
        chained = np.ndim(value) >= 1 and np.shape(value)[0] == num_chains
        return jax.device_put(value, sharded if chained else replicated)

    return lambda tree: jax.tree.map(place, tree)


def _to_host(tree):
    """Every array of `tree` as a NumPy array (gathered from however many devices)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _sample_with_checkpoints(model: MDN, data: FitData, settings: tuple, start, run_key,
                             plan: CheckpointPlan | None, place, bar: Any = None,
                             segment: int | None = None) -> tuple[dict, dict]:
    """Warm-up, then the draws in segments that end at checkpoint boundaries (`plan`) and
    every `segment` draws per chain (progress-bar updates on `bar`).

    Each segment continues the chains from the previous segment's last state (its PRNG key
    included), so the draws are those of one uninterrupted run. Returns the samples and the
    extra fields, each (C, S, ...).
    """
    args = (data.X, data.y, data.y_scale)
    num_warmup, total, num_chains = settings[:3]

    def sampler(num_samples: int) -> _Sampler:
        return _sampler(model, data.shape, (settings[0], num_samples, *settings[2:]))

    def next_stop(done: int) -> int:
        stop = total if segment is None else min(total, done + segment)
        return stop if plan is None else plan.next_stop(done, stop)

    samples: dict[str, list] = {}
    extra: dict[str, list] = {}
    if plan is None or plan.resumed is None:
        state = sampler(next_stop(0)).warmup(run_key, *args, start)
        if bar is not None:
            bar.update(num_warmup)
        if plan is not None and plan.path is not None:
            plan.write(0, {"state": state}, {})
    else:
        kernel = NUTS(model.numpyro_model, dense_mass=settings[3],
                      target_accept_prob=settings[4], max_tree_depth=settings[5])
        keys = jax.random.split(run_key, num_chains) if num_chains > 1 else run_key
        point = start if num_chains > 1 else {name: value[0] for name, value in start.items()}
        # Unconstrained coordinates have the constrained shapes: only shapes matter here.
        template = jax.eval_shape(
            lambda k, s, X, y, scale: kernel.init(k, num_warmup, s, model_args=(X, y),
                                                  model_kwargs={"y_scale": scale}),
            keys, point, *args)
        state = place(plan.restore("state", template))
        samples = {name: [value] for name, value in plan.arrays("draws").items()}
        extra = {name: [value] for name, value in plan.arrays("stats").items()}
    done = 0 if plan is None else plan.num_done
    if bar is not None:
        bar.update(done)
    while done < total:
        stop = next_stop(done)
        new_samples, new_extra, state = sampler(stop - done).resume(state, *args)
        for name, value in _to_host(new_samples).items():
            samples.setdefault(name, []).append(value)
        for name, value in _to_host(new_extra).items():
            extra.setdefault(name, []).append(value)
        if bar is not None:
            steps = np.concatenate(extra["num_steps"], axis=1)
            depth = np.ceil(np.log2(steps.astype(np.int64) + 1))
            bar.set_postfix({"divergences": int(np.concatenate(extra["diverging"], 1).sum()),
                             "max_depth": f"{float(np.mean(depth >= settings[5])):.0%}"},
                            refresh=False)
            bar.update(stop - done)
        done = stop
        if plan is not None and plan.due(done, total):
            plan.write(done, {"state": state}, {
                **{f"draws/{name}": np.concatenate(value, axis=1)
                   for name, value in samples.items()},
                **{f"stats/{name}": np.concatenate(value, axis=1)
                   for name, value in extra.items()}})
    return ({name: np.concatenate(value, axis=1) for name, value in samples.items()},
            {name: np.concatenate(value, axis=1) for name, value in extra.items()})


def fit_nuts(model: MDN, data: FitData, key: jax.Array, options: NutsOptions) -> Posterior:
    started = time.perf_counter()
    init_key, run_key = jax.random.split(key)
    chain_method, num_devices = options.resolved_chain_method()
    # numpyro's own progress bar would run the sampler eagerly, step by step, from Python;
    # ours is updated between compiled segments instead.
    settings = (options.num_warmup, options.num_samples, options.num_chains,
                options.dense_mass, options.target_accept_prob, options.max_tree_depth,
                chain_method, options.thinning, False)
    plan = checkpoint_plan("nuts", model, data, key, options, options.num_samples)
    place = _chain_sharding(options.num_chains, num_devices)
    start = place(_starting_points(model, data, init_key, options))
    segment = None
    if show_progress(options.progress) and options.num_samples % options.thinning == 0:
        segment = math.ceil(options.num_samples / PROGRESS_SEGMENTS / options.thinning
                            ) * options.thinning
    with progress_bar(options.num_warmup + options.num_samples, desc="nuts",
                      progress=options.progress, unit="draw") as bar:
        if plan is None and segment is None:
            samples, extra, _ = _sampler(model, data.shape, settings).run(
                run_key, data.X, data.y, data.y_scale, start)
            samples, extra = _to_host(samples), _to_host(extra)
            bar.update(options.num_warmup + options.num_samples)
        else:
            samples, extra = _sample_with_checkpoints(model, data, settings, start, run_key,
                                                      plan, place, bar, segment)
    names = list(model.latent_shapes(data.shape[1], data.shape[2]))
    # Back on the default device, like every other method's draws.
    draws = {name: jnp.asarray(samples[name]) for name in names}
    stats = {EXTRA_FIELDS[field]: np.asarray(value) for field, value in extra.items()}
    num_steps = stats["num_steps"].astype(np.int64)
    stats["tree_depth"] = np.ceil(np.log2(num_steps + 1)).astype(np.int64)
    for name, value in draws.items():
        if not np.isfinite(np.asarray(value)).all():
            raise FloatingPointError(f"NUTS produced non-finite draws of {name!r}; lower "
                                     "the step size by raising `target_accept_prob`.")
    num_divergent = int(stats["diverging"].sum())
    info = {
        "fit_seconds": time.perf_counter() - started, "num_rows": data.num_rows,
        "num_warmup": options.num_warmup, "num_samples": options.num_samples,
        "num_chains": options.num_chains, "chain_method": chain_method,
        "num_devices": num_devices,
        "dense_mass": options.dense_mass, "target_accept_prob": options.target_accept_prob,
        "max_tree_depth": options.max_tree_depth, "thinning": options.thinning,
        "num_divergent": num_divergent,
        "fraction_max_tree_depth": float(np.mean(stats["tree_depth"] >= options.max_tree_depth)),
        "num_leapfrog_steps": int(num_steps.sum()),
        "init": (options.init if options.init is None or isinstance(options.init, str)
                 else options.init.method),
    }
    _warn_tree_depth(info)
    return Posterior(model=model, method="nuts", draws=draws, standardizer=data.standardizer,
                     history=final_scores(model, data, draws), sample_stats=stats, info=info)


def _warn_tree_depth(info: dict[str, Any]) -> None:
    """ConvergenceWarning when more than MAX_TREE_DEPTH_FRACTION of the transitions hit
    `max_tree_depth` (trajectories cut short: slow mixing, and the usual sign that the
    budget went into maximal trees)."""
    share = info["fraction_max_tree_depth"]
    if share > MAX_TREE_DEPTH_FRACTION:
        start = ("Start the chains from fitted networks (init='auto' or init=an ensemble "
                 "fit), " if info.get("init") is None else "")
        warnings.warn(
            f"{share:.0%} of the NUTS transitions hit max_tree_depth={info['max_tree_depth']} "
            f"(more than {MAX_TREE_DEPTH_FRACTION:.0%}): trajectories were cut short, so the "
            f"chains explore slowly and the draws are strongly autocorrelated. {start}"
            f"{'d' if start else 'D'}raw more samples or chains, or raise max_tree_depth by "
            "one or two (each level doubles the cost per transition); check "
            "post.summary() for function-space R-hat and ESS.",
            ConvergenceWarning, stacklevel=4)
