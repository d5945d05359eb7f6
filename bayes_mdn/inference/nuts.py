"""Hamiltonian Monte Carlo (``method="nuts"``): numpyro's NUTS over several chains.

Chains run vectorised on one device, or in parallel when there are at least as many devices
as chains. Neural-network posteriors are multimodal and random starting points need long
warm-ups, so starting from fitted networks (``init=`` a MAP fit, or better an ensemble, one
member per chain) is usually the best use of the budget. Per-draw sampler statistics
(divergences, tree depth, step size, acceptance, energy) are kept in
``Posterior.sample_stats``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import unconstrain_fn

from bayes_mdn._validation import check_choice, check_positive_float, check_positive_int
from bayes_mdn.inference._checkpoint import CheckpointPlan, checkpoint_plan
from bayes_mdn.inference._checkpoint import check_options as check_checkpoint_options
from bayes_mdn.inference._data import FitData, draws_from_init, final_scores, initial_params
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior

__all__ = ["CHAIN_METHODS", "NutsOptions", "fit_nuts"]

CHAIN_METHODS = ("vectorized", "parallel", "sequential")
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
    init : Posterior, optional
        A fit of the same model to start from: chain c starts at draw ``c * S // C`` of its
        S draws (one ensemble member per chain for ``method="ensemble"``; every chain at the
        MAP point for ``method="map"``). Without it, every chain starts from its own
        data-dependent random initialisation.
    dense_mass : bool
        Adapt a dense mass matrix (W x W) instead of a diagonal one.
    target_accept_prob : float
        Step-size adaptation target in (0, 1); raise it (0.9, 0.95) against divergences.
    max_tree_depth : int
        Trajectories have at most ``2 ** max_tree_depth - 1`` leapfrog steps.
    chain_method : str, optional
        ``"vectorized"``, ``"parallel"`` or ``"sequential"``; by default parallel when there
        are at least `num_chains` devices, vectorised otherwise.
    thinning : int
        Keep every `thinning`-th draw.
    progress : bool
        Show numpyro's progress bar.
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

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    init: Any = None
    dense_mass: bool = False
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    chain_method: str | None = None
    thinning: int = 1
    progress: bool = False
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
        if self.chain_method is not None:
            object.__setattr__(self, "chain_method",
                               check_choice(self.chain_method, "chain_method", CHAIN_METHODS))
        for name in ("dense_mass", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}.")
        check_checkpoint_options(self, "draws per chain")
        if self.checkpoint is not None or self.resume is not None:
            for name in ("num_samples", "checkpoint_every"):
                value = getattr(self, name)
                if value is not None and value % self.thinning:
                    raise ValueError(f"With checkpoints, `{name}` must be a multiple of "
                                     f"`thinning` ({self.thinning}); got {value}.")

    def resolved_chain_method(self) -> str:
        if self.chain_method is not None:
            return self.chain_method
        if self.num_chains > 1 and jax.local_device_count() >= self.num_chains:
            return "parallel"
        return "vectorized"


@lru_cache(maxsize=8)
def _sampler(model: MDN, data_shape: tuple[int, int, int], settings: tuple) -> MCMC:
    """One MCMC object per configuration: it caches its compiled sampler across runs
    (``jit_model_args=True`` makes the data an argument rather than a constant)."""
    (num_warmup, num_samples, num_chains, dense_mass, target_accept_prob, max_tree_depth,
     chain_method, thinning, progress) = settings
    kernel = NUTS(model.numpyro_model, dense_mass=dense_mass,
                  target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
    return MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, thinning=thinning, progress_bar=progress,
                jit_model_args=True)


def _starting_points(model: MDN, data: FitData, key: jax.Array, options: NutsOptions
                     ) -> dict[str, jax.Array]:
    """One starting point per chain, each site (C, ...), in *unconstrained* coordinates:
    numpyro's sampler takes ``init_params`` as inputs of its potential function, so a
    positive site (a hierarchical prior's scale) must enter as its logarithm."""
    chains = options.num_chains
    if options.init is None:
        start = initial_params(model, data, jax.random.split(key, chains))
    else:
        draws = draws_from_init(options.init, model, data)
        available = next(iter(draws.values())).shape[0]
        index = (np.arange(chains) * available) // chains
        start = {name: value[index] for name, value in draws.items()}

    def unconstrain(point):
        return unconstrain_fn(model.numpyro_model, (data.X, data.y), {"y_scale": data.y_scale},
                              point)

    return jax.vmap(unconstrain)(start)


def _sample_with_checkpoints(model: MDN, data: FitData, settings: tuple, start, run_key,
                             plan: CheckpointPlan) -> tuple[dict, dict]:
    """Warm-up, then the draws in segments that end at checkpoint boundaries.

    Each segment continues the chains from the previous segment's last state (its PRNG key
    included), so the draws are those of one uninterrupted run. Returns the samples and the
    extra fields, each (C, S, ...).
    """
    args, kwargs, fields = (data.X, data.y), {"y_scale": data.y_scale}, tuple(EXTRA_FIELDS)
    num_warmup, total, num_chains = settings[:3]

    def run_segment(num_samples: int, state=None):
        # Cached per segment length; the post-warm-up state is always cleared after use so
        # a cached sampler never skips the warm-up of a later, unrelated fit.
        mcmc = _sampler(model, data.shape, (settings[0], num_samples, *settings[2:]))
        try:
            if state is None:
                mcmc.warmup(run_key, *args, init_params=start, extra_fields=fields, **kwargs)
                return mcmc.post_warmup_state, None, None
            mcmc.post_warmup_state = state
            mcmc.run(state.rng_key, *args, extra_fields=fields, **kwargs)
            return (mcmc.last_state, mcmc.get_samples(group_by_chain=True),
                    jax.device_get(mcmc.get_extra_fields(group_by_chain=True)))
        finally:
            mcmc.post_warmup_state = None

    samples: dict[str, list] = {}
    extra: dict[str, list] = {}
    if plan.resumed is None:
        state, _, _ = run_segment(plan.next_stop(0, total))  # the first segment's sampler
        if plan.path is not None:
            plan.write(0, {"state": state}, {})
    else:
        kernel = NUTS(model.numpyro_model, dense_mass=settings[3],
                      target_accept_prob=settings[4], max_tree_depth=settings[5])
        keys = jax.random.split(run_key, num_chains) if num_chains > 1 else run_key
        template = jax.eval_shape(
            lambda k, s, X, y, scale: kernel.init(k, num_warmup, s, model_args=(X, y),
                                                  model_kwargs={"y_scale": scale}),
            keys, start, data.X, data.y, data.y_scale)
        state = plan.restore("state", template)
        samples = {name: [value] for name, value in plan.arrays("draws").items()}
        extra = {name: [value] for name, value in plan.arrays("stats").items()}
    done = plan.num_done
    while done < total:
        stop = plan.next_stop(done, total)
        state, new_samples, new_extra = run_segment(stop - done, state)
        for name, value in new_samples.items():
            samples.setdefault(name, []).append(np.asarray(value))
        for name, value in new_extra.items():
            extra.setdefault(name, []).append(np.asarray(value))
        done = stop
        if plan.due(done, total):
            plan.write(done, {"state": state}, {
                **{f"draws/{name}": np.concatenate(value, axis=1)
                   for name, value in samples.items()},
                **{f"stats/{name}": np.concatenate(value, axis=1)
                   for name, value in extra.items()}})
    return ({name: jnp.asarray(np.concatenate(value, axis=1)) for name, value in samples.items()},
            {name: np.concatenate(value, axis=1) for name, value in extra.items()})


def fit_nuts(model: MDN, data: FitData, key: jax.Array, options: NutsOptions) -> Posterior:
    started = time.perf_counter()
    init_key, run_key = jax.random.split(key)
    chain_method = options.resolved_chain_method()
    settings = (options.num_warmup, options.num_samples, options.num_chains,
                options.dense_mass, options.target_accept_prob, options.max_tree_depth,
                chain_method, options.thinning, options.progress)
    plan = checkpoint_plan("nuts", model, data, key, options, options.num_samples)
    start = _starting_points(model, data, init_key, options)
    if options.num_chains == 1:
        start = {name: value[0] for name, value in start.items()}
    if plan is None:
        mcmc = _sampler(model, data.shape, settings)
        mcmc.run(run_key, data.X, data.y, y_scale=data.y_scale, init_params=start,
                 extra_fields=tuple(EXTRA_FIELDS))
        samples = mcmc.get_samples(group_by_chain=True)
        extra = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
    else:
        samples, extra = _sample_with_checkpoints(model, data, settings, start, run_key, plan)
    names = list(model.latent_shapes(data.shape[1], data.shape[2]))
    draws = {name: samples[name] for name in names}
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
        "dense_mass": options.dense_mass, "target_accept_prob": options.target_accept_prob,
        "max_tree_depth": options.max_tree_depth, "thinning": options.thinning,
        "num_divergent": num_divergent,
        "fraction_max_tree_depth": float(np.mean(stats["tree_depth"] >= options.max_tree_depth)),
        "num_leapfrog_steps": int(num_steps.sum()),
        "init": None if options.init is None else options.init.method,
    }
    return Posterior(model=model, method="nuts", draws=draws, standardizer=data.standardizer,
                     history=final_scores(model, data, draws), sample_stats=stats, info=info)
