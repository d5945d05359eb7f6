"""Stochastic-gradient MCMC with minibatches (``method="sgmcmc"``): cyclical SGHMC.

For data too large for full-batch NUTS (every leapfrog step of NUTS is a pass over all N
rows), each step here costs one gradient on a minibatch of B rows, drawn in O(B) time by
:func:`~bayes_mdn.inference._minibatch.minibatch_indices`, so a step costs the same at any N
and memory does not grow with the number of steps.

Algorithm
---------
Cyclical stochastic-gradient Hamiltonian Monte Carlo (cSGHMC; Zhang, Li, Zhang, Chen and
Wilson 2020, "Cyclical Stochastic Gradient MCMC for Bayesian Deep Learning", ICLR), whose
update is SGHMC (Chen, Fox and Guestrin 2014, "Stochastic Gradient Hamiltonian Monte
Carlo", ICML, eq. 15) with the noise estimate beta-hat = 0, as in both papers' experiments.
In unconstrained coordinates theta (W,), with U(theta) the potential energy (negative log
joint density, the likelihood estimated from B random rows scaled by N / B), step k of a
cycle of L steps is::

    eta_k = step_size / 2 * (cos(pi * k / L) + 1)          # cosine cycle, restarts at k = 0
    v     = (1 - friction) * v - (eta_k / N) * grad U(theta)
            + sqrt(2 * friction * (eta_k / N) * temperature) * xi    # xi ~ N(0, I_W)
    theta = theta + v

The first ``exploration_fraction`` of each cycle adds no noise (stochastic gradient descent
with momentum 1 - friction: the paper's exploration stage, moving to a new mode while the
step is large); the rest of the cycle samples, and the draws are the last
``num_samples_per_cycle * thinning`` steps of each cycle, every `thinning`-th (where the
step size is smallest and the discretisation bias too). ``friction=1`` is cyclical SGLD
(Welling and Teh 2011) with the same schedule, which is why the method is named after the
family (SG-MCMC) rather than one member of it.

Why this one: the cyclical schedule is what makes SG-MCMC competitive for neural networks
(large steps find new modes, small steps sample each one; Zhang et al. report it beats
constant-step SGLD/SGHMC and deep ensembles at equal cost), SGHMC's momentum mixes faster
than SGLD on the ill-conditioned posteriors of networks, and both need only a minibatch
gradient: no Metropolis correction, no full pass over the data.

``step_size`` is the learning rate of the mean per-row potential U / N (eta = step_size / N
on U), the scale of SGD learning rates, so that one value suits data of any size.

Chains are vmapped and every cycle is one compiled program (``lax.scan`` over its steps),
built once per model, data shape and option shape and reused by every cycle and later fits
(``step_size``, ``friction`` and ``temperature`` are inputs, not constants, so changing them
does not recompile); the progress bar (:mod:`bayes_mdn._progress`) moves once per cycle.
Chains start from ``init=`` a fitted Posterior (chain c at draw ``c * S // C``; an ensemble
gives one member per chain) or from their own data-dependent random initialisation.

Checkpoint/resume is not supported by this method.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_mdn._progress import check_progress, progress_bar
from bayes_mdn._validation import check_positive_float, check_positive_int
from bayes_mdn.inference._data import FitData, draws_from_init, final_scores, initial_params
from bayes_mdn.inference._minibatch import minibatch_indices
from bayes_mdn.inference._optim import partial_model
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior

__all__ = ["SgmcmcOptions", "fit_sgmcmc"]

#: Training rows the closing training-set score (``history["train_log_likelihood"]``) is
#: computed on: evenly spaced rows, so that it costs the same at any N (the score holds every
#: scored draw's per-row terms at once: 256 draws x 10^6 rows x K would be gigabytes).
MAX_SCORE_ROWS = 8192


@dataclass(frozen=True)
class SgmcmcOptions:
    """Options of ``method="sgmcmc"`` (cyclical SGHMC; see :mod:`.sgmcmc`).

    Each chain keeps ``num_cycles * num_samples_per_cycle`` draws (the Posterior's S) and
    takes ``num_cycles * num_steps_per_cycle`` minibatch gradient steps.

    Attributes
    ----------
    num_chains : int
        C, chains run vectorised. At least 2 for R-hat.
    num_cycles : int
        Cosine step-size cycles per chain.
    num_steps_per_cycle : int
        L, steps per cycle.
    num_samples_per_cycle : int
        Draws kept at the end of each cycle.
    thinning : int
        Steps between kept draws: the draws are the last ``num_samples_per_cycle *
        thinning`` steps of each cycle, every `thinning`-th.
    step_size : float
        Peak learning rate of the mean per-row potential (the step size on the potential U
        is ``step_size / N``). Lower it when the fit raises a non-finite error.
    batch_size : int, optional
        B, minibatch rows per gradient; None uses all N rows every step (full-batch
        gradients). At most N.
    friction : float
        Momentum decay per step, in (0, 1]: 1 - momentum (the papers' alpha; 0.1 is
        momentum 0.9). 1 gives cyclical SGLD.
    temperature : float
        T >= 0: samples exp(-U / T). 1 is the Bayesian posterior, below 1 a cold
        posterior, 0 noise-free optimisation.
    exploration_fraction : float
        Fraction of each cycle in [0, 1) run without noise (the exploration stage); the
        kept draws must lie after it.
    init : Posterior, optional
        A fit of the same model to start from: chain c starts at draw ``c * S // C`` of its
        S draws (one member per chain for ``method="ensemble"``, the MAP point for
        ``method="map"``). Without it, every chain starts from its own data-dependent
        random initialisation.
    progress : bool or None
        Progress bar over cycles (None: only in a terminal; see :mod:`bayes_mdn._progress`).
    """

    num_chains: int = 4
    num_cycles: int = 4
    num_steps_per_cycle: int = 1000
    num_samples_per_cycle: int = 25
    thinning: int = 4
    step_size: float = 0.01
    batch_size: int | None = None
    friction: float = 0.1
    temperature: float = 1.0
    exploration_fraction: float = 0.5
    init: Any = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("num_chains", "num_cycles", "num_steps_per_cycle",
                     "num_samples_per_cycle", "thinning"):
            check_positive_int(getattr(self, name), name)
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        check_positive_float(self.step_size, "step_size")
        check_positive_float(self.friction, "friction")
        if self.friction > 1:
            raise ValueError(f"`friction` must be in (0, 1] (1 - momentum; 1 is SGLD); got "
                             f"{self.friction}.")
        check_positive_float(self.temperature, "temperature", allow_zero=True)
        check_positive_float(self.exploration_fraction, "exploration_fraction",
                             allow_zero=True)
        if self.exploration_fraction >= 1:
            raise ValueError("`exploration_fraction` must be in [0, 1): the rest of each "
                             f"cycle samples; got {self.exploration_fraction}.")
        check_progress(self.progress)
        collected = self.num_samples_per_cycle * self.thinning
        sampling = self.num_steps_per_cycle - self.num_exploration_steps
        if collected > sampling:
            raise ValueError(
                f"Each cycle keeps num_samples_per_cycle * thinning = {collected} steps, but "
                f"only {sampling} of its {self.num_steps_per_cycle} steps sample (after "
                f"exploration_fraction={self.exploration_fraction}). Raise "
                "`num_steps_per_cycle`, or lower `num_samples_per_cycle`, `thinning` or "
                "`exploration_fraction`.")

    @property
    def num_exploration_steps(self) -> int:
        """Noise-free steps at the start of each cycle."""
        return math.floor(self.exploration_fraction * self.num_steps_per_cycle)


@dataclass(frozen=True, eq=False)
class _Program:
    """The compiled pieces of one configuration.

    Attributes
    ----------
    start : callable
        ``(constrained, X, y, y_scale) -> theta``: flat unconstrained points (C, W).
    cycle : callable
        ``(theta, momentum, keys, step_size, friction, temperature, X, y, y_scale) ->
        (theta, momentum, keys, positions, potential, step_sizes)``: one cycle of every
        chain; `positions` (C, S_c, W) constrained and flattened, `potential` and
        `step_sizes` (C, S_c).
    unravel : callable
        Flat constrained point (W,) -> dict of sites.
    """

    start: Any
    cycle: Any
    unravel: Any


@lru_cache(maxsize=8)
def _program(model: MDN, data_shape: tuple[int, int, int], dtype: np.dtype,
             batch_size: int | None, settings: tuple[int, int, int, int]) -> _Program:
    num_rows, num_features, num_outputs = data_shape
    num_steps, num_exploration, num_samples, thinning = settings
    shapes = model.latent_shapes(num_features, num_outputs)
    template = {name: jnp.zeros(shape, dtype) for name, shape in shapes.items()}
    _, unravel = ravel_pytree(template)
    model_fn = partial_model(model.numpyro_model, batch_size)
    sample_steps = num_samples * thinning
    burn_steps = num_steps - sample_steps

    def transform(fn, point, X, y, y_scale):
        # The transforms depend on the priors only: one row keeps the model's trace cheap.
        return fn(model.numpyro_model, (X[:1], y[:1]), {"y_scale": y_scale}, point)

    @jax.jit
    def start(constrained, X, y, y_scale):
        def one(point):
            return ravel_pytree(transform(unconstrain_fn, point, X, y, y_scale))[0]
        return jax.vmap(one)(constrained)

    def potential(theta, X, y, y_scale, batch_key):
        kwargs: dict[str, Any] = {"y_scale": y_scale}
        if batch_size is not None:
            kwargs["batch_indices"] = minibatch_indices(batch_key, num_rows, batch_size)
        return potential_energy(model_fn, (X, y), kwargs, unravel(theta))

    def chain_cycle(theta, momentum, key, step_size, friction, temperature, X, y, y_scale):
        def step(carry, index):
            theta, momentum, key, _ = carry
            key, batch_key, noise_key = jax.random.split(key, 3)
            eta = step_size / 2 * (jnp.cos(jnp.pi * index / num_steps) + 1)
            energy, grad = jax.value_and_grad(potential)(theta, X, y, y_scale, batch_key)
            heat = jnp.where(index >= num_exploration, temperature, 0.0)
            rate = eta / num_rows
            noise = jax.random.normal(noise_key, theta.shape, theta.dtype)
            momentum = ((1 - friction) * momentum - rate * grad
                        + jnp.sqrt(2 * friction * rate * heat) * noise)
            return (theta + momentum, momentum, key, energy), eta

        carry = (theta, momentum, key, jnp.zeros((), theta.dtype))
        carry, _ = jax.lax.scan(step, carry, jnp.arange(burn_steps))

        def keep(carry, first):
            carry, etas = jax.lax.scan(step, carry, first + jnp.arange(thinning))
            return carry, (carry[0], carry[3], etas[-1])

        starts = burn_steps + thinning * jnp.arange(num_samples)
        carry, (positions, energies, etas) = jax.lax.scan(keep, carry, starts)
        constrained = jax.vmap(
            lambda point: ravel_pytree(transform(constrain_fn, unravel(point), X, y,
                                                 y_scale))[0])(positions)
        theta, momentum, key, _ = carry
        return theta, momentum, key, constrained, energies, etas

    cycle = jax.jit(jax.vmap(chain_cycle, in_axes=(0, 0, 0) + (None,) * 6))
    return _Program(start=start, cycle=cycle, unravel=unravel)


def _starting_points(model: MDN, data: FitData, key: jax.Array, options: SgmcmcOptions
                     ) -> dict[str, jax.Array]:
    """One constrained starting point per chain, each site (C, ...)."""
    chains = options.num_chains
    if options.init is None:
        return initial_params(model, data, jax.random.split(key, chains))
    draws = draws_from_init(options.init, model, data)
    available = next(iter(draws.values())).shape[0]
    index = (np.arange(chains) * available) // chains
    return {name: value[index] for name, value in draws.items()}


def fit_sgmcmc(model: MDN, data: FitData, key: jax.Array, options: SgmcmcOptions
               ) -> Posterior:
    """Cyclical SGHMC; see :mod:`bayes_mdn.inference.sgmcmc`.

    Returns
    -------
    Posterior
        ``method="sgmcmc"``, draws (C, S, ...) with ``S = num_cycles *
        num_samples_per_cycle``; ``sample_stats`` (C, S): ``step_size`` (the step size on
        the mean per-row potential at the draw), ``potential_energy`` (minibatch estimate
        at the gradient step before the draw, standardised units) and ``cycle``;
        ``history`` holds the posterior-predictive log-likelihood on the training rows (at
        most ``MAX_SCORE_ROWS`` of them, evenly spaced) and on ``X_test``/``y_test``.

    Raises
    ------
    ValueError
        If ``batch_size`` exceeds the number of training rows.
    FloatingPointError
        If a chain leaves the finite numbers (lower ``step_size``).
    """
    started = time.perf_counter()
    num_rows = data.num_rows
    if options.batch_size is not None and options.batch_size > num_rows:
        raise ValueError(f"`batch_size` ({options.batch_size}) must not exceed the number of "
                         f"training rows ({num_rows}); use batch_size=None for full batches.")
    dtype = np.dtype(data.X.dtype)
    settings = (options.num_steps_per_cycle, options.num_exploration_steps,
                options.num_samples_per_cycle, options.thinning)
    program = _program(model, data.shape, dtype, options.batch_size, settings)
    init_key, run_key = jax.random.split(key)
    start = _starting_points(model, data, init_key, options)
    theta = program.start(start, data.X, data.y, data.y_scale)
    momentum = jnp.zeros_like(theta)
    keys = jax.random.split(run_key, options.num_chains)
    scalars = [jnp.asarray(value, dtype) for value in
               (options.step_size, options.friction, options.temperature)]
    positions, energies, step_sizes = [], [], []
    with progress_bar(options.num_cycles, desc="sgmcmc", progress=options.progress,
                      unit="cycle") as bar:
        for _ in range(options.num_cycles):
            theta, momentum, keys, drawn, energy, etas = program.cycle(
                theta, momentum, keys, *scalars, data.X, data.y, data.y_scale)
            drawn, energy, etas = jax.device_get((drawn, energy, etas))
            if not (np.isfinite(drawn).all() and np.isfinite(energy).all()):
                raise FloatingPointError(
                    "SG-MCMC chains left the finite numbers; lower `step_size` (now "
                    f"{options.step_size}) or start from a fit with init=.")
            positions.append(drawn)
            energies.append(energy)
            step_sizes.append(etas)
            bar.update(1)
    flat = np.concatenate(positions, axis=1)  # (C, S, W)
    sites = jax.vmap(jax.vmap(program.unravel))(jnp.asarray(flat))
    draws = {name: jnp.asarray(value) for name, value in sites.items()}
    per_cycle = options.num_samples_per_cycle
    stats = {
        "step_size": np.concatenate(step_sizes, axis=1),
        "potential_energy": np.concatenate(energies, axis=1),
        "cycle": np.broadcast_to(np.repeat(np.arange(options.num_cycles), per_cycle),
                                 flat.shape[:2]).copy(),
    }
    total_steps = options.num_cycles * options.num_steps_per_cycle
    info = {
        "fit_seconds": time.perf_counter() - started, "num_rows": num_rows,
        "num_chains": options.num_chains, "num_cycles": options.num_cycles,
        "num_steps_per_cycle": options.num_steps_per_cycle,
        "num_samples_per_cycle": per_cycle, "thinning": options.thinning,
        "step_size": options.step_size,
        "batch_size": num_rows if options.batch_size is None else options.batch_size,
        "friction": options.friction, "temperature": options.temperature,
        "exploration_fraction": options.exploration_fraction,
        "num_gradient_steps": total_steps * options.num_chains,
        "init": None if options.init is None else options.init.method,
    }
    scored = data
    if num_rows > MAX_SCORE_ROWS:
        rows = np.linspace(0, num_rows - 1, MAX_SCORE_ROWS).round().astype(np.int64)
        scored = dataclasses.replace(data, X=data.X[rows], y=data.y[rows])
    info["train_score_rows"] = int(scored.num_rows)
    return Posterior(model=model, method="sgmcmc", draws=draws, standardizer=data.standardizer,
                     history=final_scores(model, scored, draws), sample_stats=stats, info=info)
