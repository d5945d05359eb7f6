"""Stochastic optimisation shared by MAP, SVI and deep ensembles.

Every optimisation-based method is NumPyro's SVI with some guide (AutoDelta for MAP) and an
optax optimiser. The optimisation runs as a compiled ``lax.scan`` over blocks of steps;
Python only sees block boundaries (progress lines, held-out evaluation), never single steps.
A block kernel is compiled once per program, and programs are cached by the caller per
(model, data shape, options that change the computation), so refitting with a new key or
new data of the same shape does not recompile.

With ``shard_data`` the training rows are laid out over a one-dimensional mesh of devices
and the parameters replicated, so every step runs data-parallel: each device evaluates the
likelihood of its rows and XLA sums the gradient across devices.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.handlers import replay, seed
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.util import compute_log_probs
from numpyro.optim import optax_to_numpyro
from numpyro.primitives import Messenger
from numpyro.util import check_model_guide_match

from bayes_mdn._validation import check_positive_float, check_positive_int
from bayes_mdn.inference._checkpoint import CheckpointPlan
from bayes_mdn.inference._checkpoint import check_options as check_checkpoint_options
from bayes_mdn.inference._data import FitData, check_shard_data, shard_devices, shard_rows
from bayes_mdn.inference._minibatch import minibatch_indices, minibatched

__all__ = ["OptimOptions", "OptimProgram", "SortedTraceELBO", "build_program", "make_optimizer",
           "row_masked", "run_blocks"]

#: The model's data plate, whose observed sites a row mask applies to.
DATA_PLATE = "data"

#: Signature of a held-out evaluation: (estimate, key, X, y, y_scale) -> mean log-likelihood
#: per row in standardised units.
Evaluate = Callable[[Mapping[str, jax.Array], jax.Array, jax.Array, jax.Array, jax.Array],
                    jax.Array]

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class OptimOptions:
    """Options shared by every optimisation-based method.

    Attributes
    ----------
    num_steps : int
        Optimisation steps.
    learning_rate : float
        Adam step size (in standardised units, so it rarely needs tuning).
    lr_schedule : str or callable
        ``"constant"``, ``"cosine"`` (decay to 1 % of `learning_rate` over `num_steps`), or an
        optax schedule ``step -> learning rate``.
    ema_decay : float
        If positive, the estimate returned is a bias-corrected exponential moving average of
        the iterates with this decay (Polyak averaging, window about ``1 / (1 - decay)``
        steps) instead of the last iterate. 0.995 suits a few thousand steps.
    num_evaluations : int
        How many times during the fit to record train/test log-likelihood (and report
        progress); the loss is recorded at every step regardless.
    progress : bool
        Print progress lines to stderr while training.
    checkpoint : str or path-like, optional
        File to write the optimiser state to (atomically) every `checkpoint_every` steps and
        at the end; see :mod:`bayes_mdn.inference._checkpoint`. For ``method="laplace"`` it
        covers the MAP stage.
    checkpoint_every : int, optional
        Steps between checkpoints (default: only at the end).
    resume : str or path-like, optional
        A checkpoint to continue from; the model, data, key and options must be those of
        the run that wrote it, except `num_steps`, which may grow. The result equals the
        uninterrupted run's.
    shard_data : bool or "auto"
        Data parallelism: lay the training rows out over a one-dimensional mesh of every
        device (``jax.devices()``; with ``jax.distributed``, every host's), parameters
        replicated, so that each step runs on all devices at once, each on its share of the
        rows. When N is not a multiple of the device count, masked copies of rows pad it
        out; they do not count in the likelihood. ``"auto"``: shard when there are at least
        two devices (and, for SVI, no `subsample_size`). The result equals the one-device
        fit's up to floating-point rounding. Default False.
    """

    num_steps: int = 2000
    learning_rate: float = 0.01
    lr_schedule: Any = "constant"
    ema_decay: float = 0.0
    num_evaluations: int = 50
    progress: bool = False
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: str | os.PathLike | None = None
    shard_data: bool | str = False

    def __post_init__(self) -> None:
        check_positive_int(self.num_steps, "num_steps")
        check_positive_float(self.learning_rate, "learning_rate")
        if not callable(self.lr_schedule) and self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"`lr_schedule` must be one of {list(LR_SCHEDULES)} or an optax schedule "
                f"(a callable step -> learning rate); got {self.lr_schedule!r}."
            )
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)):
            raise TypeError(f"`ema_decay` must be a number in [0, 1); got {self.ema_decay!r}.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be in [0, 1); got {self.ema_decay}.")
        check_positive_int(self.num_evaluations, "num_evaluations")
        if not isinstance(self.progress, bool):
            raise TypeError(f"`progress` must be True or False; got {self.progress!r}.")
        check_checkpoint_options(self, "steps")
        object.__setattr__(self, "shard_data", check_shard_data(self.shard_data))
        if self.shard_data is True and getattr(self, "subsample_size", None) is not None:
            shard_devices(True, full_batch=False)  # raises: minibatches are not sharded

    def optimizer_key(self) -> tuple[Any, ...]:
        """The options that change the compiled optimiser (part of program cache keys)."""
        schedule_steps = self.num_steps if self.lr_schedule == "cosine" else None
        return (self.learning_rate, self.lr_schedule, schedule_steps)


class SortedSitesMixin:
    """Sum an ELBO's per-site terms in sorted site order.

    numpyro's ELBOs sum the sites of ``set(model_sites) | set(guide_sites)``, an order that
    depends on the process's string-hash seed (PYTHONHASHSEED), so the same fit gave a loss
    differing in the last bits between two processes. Summing in sorted order makes the
    loss, like the parameters, bit-identical across processes. Mix in before the ELBO class.
    """

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, sum_sites=False)

    def loss_with_mutable_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = super().loss_with_mutable_state(*args, **kwargs)
        per_site = result["loss"]
        result["loss"] = sum((per_site[name] for name in sorted(per_site)),
                             start=jnp.zeros((), jnp.result_type(*per_site.values())))
        return result


class SortedTraceELBO(Trace_ELBO):
    """numpyro's Trace_ELBO, with every per-site term computed and summed in sorted order.

    Summing in sorted order (as :class:`SortedSitesMixin` does) fixes the loss's bits, but
    numpyro still *emits* the per-site subtractions in ``set`` order, so the traced program
    differs between processes with different string-hash seeds and never hits JAX's
    persistent compilation cache (``bm.enable_compilation_cache``) from one process to the
    next. This is Trace_ELBO's estimator for guides of one sample per site (every guide
    bayes_mdn builds) with the sites visited in sorted order; models with ``mutable`` sites
    are refused.
    """

    def loss_with_mutable_state(self, rng_key: jax.Array, param_map: dict[str, jax.Array],
                                model: Callable[..., Any], guide: Callable[..., Any],
                                *args: Any, **kwargs: Any) -> dict[str, Any]:
        def single_particle_elbo(key: jax.Array) -> jax.Array:
            model_seed, guide_seed = jax.random.split(key)
            guide_log_probs, guide_trace = compute_log_probs(
                seed(guide, guide_seed), args, kwargs, param_map)
            model_log_probs, model_trace = compute_log_probs(
                replay(seed(model, model_seed), guide_trace), args, kwargs, param_map)
            if any(site["type"] == "mutable"
                   for trace_ in (guide_trace, model_trace) for site in trace_.values()):
                raise NotImplementedError("SortedTraceELBO does not support numpyro.mutable "
                                          "sites.")
            check_model_guide_match(model_trace, guide_trace)
            zero = jnp.zeros(())
            names = sorted(set(model_log_probs) | set(guide_log_probs))
            return sum((model_log_probs.get(name, zero) - guide_log_probs.get(name, zero)
                        for name in names), start=zero)

        if self.num_particles == 1:
            elbo = single_particle_elbo(rng_key)
        else:
            keys = jax.random.split(rng_key, self.num_particles)
            elbo = jnp.mean(self.vectorize_particles_fn(single_particle_elbo, keys))
        return {"loss": -elbo, "mutable_state": None}


def make_optimizer(learning_rate: float, lr_schedule: Any, schedule_steps: int | None):
    """Adam with the chosen schedule, skipping (and counting) non-finite updates.

    ``apply_if_finite`` skips a step whose gradient is NaN/inf instead of poisoning the
    parameters; a healthy fit never triggers it.
    """
    if callable(lr_schedule):
        rate = lr_schedule
    elif lr_schedule == "cosine":
        rate = optax.cosine_decay_schedule(learning_rate, schedule_steps, alpha=0.01)
    else:
        rate = learning_rate
    adam = optax.adam(rate)
    return optax_to_numpyro(optax.apply_if_finite(adam, max_consecutive_errors=10**9))


@dataclass(frozen=True, eq=False)
class OptimProgram:
    """An SVI object and its compiled kernels.

    Attributes
    ----------
    svi : numpyro.infer.SVI
    init_state : callable
        ``(key, X, y, y_scale, init_params) -> SVIState``, compiled.
    run_block : callable
        One block of steps for one optimisation, compiled; see :func:`build_program`.
    run_block_members : callable
        The same kernel vmapped over independent optimisations (deep ensembles): the state,
        the average and the evaluation key carry a leading member axis.
    """

    svi: SVI
    init_state: Callable[..., Any]
    run_block: Callable[..., Any]
    run_block_members: Callable[..., Any]


def build_program(svi: SVI, evaluate: Evaluate, subsample_size: int | None = None
                  ) -> OptimProgram:
    """Compile-once kernels for `svi`; `evaluate` scores the block's estimate.

    With `subsample_size`, the model must be :func:`partial_model`'s with that size: each
    step draws its batch of rows itself (see :mod:`bayes_mdn.inference._minibatch`).
    """

    @jax.jit
    def init_state(key, X, y, y_scale, init_params):
        # Traced once: eager svi.init would compile every small op of the model separately.
        return svi.init(key, X, y, y_scale=y_scale, init_params=init_params)

    def run_block(state, average, first_step, num_steps, ema_decay, eval_key, X, y, row_mask,
                  y_scale, X_train_eval, y_train_eval, X_test, y_test, *, block_size):
        """`block_size` steps (those past `num_steps` leave the state unchanged), with an
        exponential moving average of the raw parameters, then train/test log-likelihood at
        the block's estimate (the bias-corrected average; the last iterate if decay is 0).
        `row_mask` (N,), or None, leaves padding rows out of the likelihood: the model must
        be :func:`row_masked`."""
        masking = {} if row_mask is None else {"row_mask": row_mask}

        def step(carry, index):
            state, average = carry
            batch = {}
            if subsample_size is not None:
                key, batch_key = jax.random.split(state.rng_key)
                state = state._replace(rng_key=key)
                batch["batch_indices"] = minibatch_indices(batch_key, X.shape[0],
                                                           subsample_size)
            new_state, loss = svi.update(state, X, y, y_scale=y_scale, **masking, **batch)
            active = first_step + index < num_steps
            state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
            raw = svi.optim.get_params(state.optim_state)
            average = jax.tree.map(
                lambda mean, value: jnp.where(active, ema_decay * mean + (1 - ema_decay) * value,
                                              mean),
                average, raw)
            return (state, average), loss

        (state, average), losses = jax.lax.scan(step, (state, average), jnp.arange(block_size))
        num_done = jnp.minimum(first_step + block_size, num_steps)
        correction = 1 - ema_decay ** num_done.astype(ema_decay.dtype)
        estimate = svi.constrain_fn(jax.tree.map(lambda mean: mean / correction, average))
        train_ll = evaluate(estimate, eval_key, X_train_eval, y_train_eval, y_scale)
        test_ll = evaluate(estimate, eval_key, X_test, y_test, y_scale)
        return state, average, losses, train_ll, test_ll, estimate

    def members(*args, block_size):
        # block_size is bound first: vmap would map keyword arguments along axis 0.
        mapped = jax.vmap(partial(run_block, block_size=block_size),
                          in_axes=(0, 0, None, None, None, 0) + (None,) * 8)
        return mapped(*args)

    return OptimProgram(
        svi=svi,
        init_state=init_state,
        run_block=jax.jit(run_block, static_argnames="block_size"),
        run_block_members=jax.jit(members, static_argnames="block_size"),
    )


def zero_average(raw_params: Any) -> Any:
    """The starting value of the moving average: host zeros shaped like the raw parameters
    (a pytree: flow guides hold lists of network weights)."""
    return jax.tree.map(lambda value: np.zeros(value.shape, value.dtype), raw_params)


@dataclass
class BlockResult:
    """The outcome of :func:`run_blocks`: the final state and estimate plus the history."""

    state: Any
    estimate: dict[str, jax.Array]
    history: dict[str, np.ndarray]
    num_devices: int = 1


def run_blocks(
    program: OptimProgram,
    state: Any,
    options: OptimOptions,
    data: FitData,
    *,
    method: str,
    eval_key: jax.Array,
    train_eval: tuple[jax.Array, jax.Array] | None = None,
    members: bool = False,
    overall: Callable[[dict[str, jax.Array]], tuple[jax.Array, jax.Array]] | None = None,
    checkpoint: CheckpointPlan | None = None,
    subsample_size: int | None = None,
) -> BlockResult:
    """Run `options.num_steps` steps in equal compiled blocks and record the history.

    Parameters
    ----------
    program : OptimProgram
    state : SVIState
        From ``program.init_state`` (with a leading member axis if `members`).
    options : OptimOptions
    data : FitData
    method : str
        Name used in progress lines.
    eval_key : PRNG key
        Fixed key for evaluations that sample (SVI), so curves are not noisy.
    train_eval : (X, y), optional
        Training rows to evaluate on (default: all of them; a subset for minibatch SVI).
    members : bool
        Run ``program.run_block_members`` (an ensemble); losses get a member axis.
    overall : callable, optional
        ``estimate -> (train_ll, test_ll)`` replacing the per-block evaluation in the
        history (the ensemble's predictive log-likelihood instead of each member's).
    checkpoint : CheckpointPlan, optional
        Resume from its checkpoint (state, moving average, history so far) and/or write
        checkpoints; blocks are cut at checkpoint boundaries, which adds evaluations there
        but never changes the trajectory.
    subsample_size : int, optional
        The minibatch size of the program's model (None: full batch); minibatch fits are
        never sharded.

    Returns
    -------
    BlockResult
        ``history`` holds ``loss`` ((steps,) or (members, steps)), ``eval_step``,
        ``train_log_likelihood`` and, with held-out data, ``test_log_likelihood`` (per row,
        original units).
    BlockResult.num_devices
        How many devices the rows were sharded over (1 without ``shard_data``).
    """
    started = time.perf_counter()
    raw = program.svi.optim.get_params(state.optim_state)
    average = zero_average(raw)
    ema_decay = np.asarray(options.ema_decay, dtype=data.X.dtype)
    X_train_eval, y_train_eval = train_eval if train_eval is not None else (data.X, data.y)
    X_test, y_test = data.test_or_placeholder()
    kernel = program.run_block_members if members else program.run_block

    # Blocks of equal size (so one compilation serves them all) covering num_steps with
    # fewer than `num_blocks` wasted, masked steps at the end.
    num_blocks = min(options.num_evaluations, options.num_steps)
    block_size = math.ceil(options.num_steps / num_blocks)
    num_blocks = math.ceil(options.num_steps / block_size)
    log_jacobian = data.standardizer.log_jacobian

    losses, eval_steps, train_lls, test_lls = [], [], [], []
    first = 0
    if checkpoint is not None and checkpoint.resumed is not None:
        state = checkpoint.restore("state", state)
        average = checkpoint.restore("average", average)
        first = checkpoint.num_done
        saved = checkpoint.arrays("history")
        losses.append(saved["loss"])
        eval_steps.extend(int(step) for step in saved["eval_step"])
        train_lls.extend(saved["train_ll"])
        test_lls.extend(saved["test_ll"])
    X, y, row_mask, y_scale = data.X, data.y, None, data.y_scale
    devices = shard_devices(options.shard_data, full_batch=subsample_size is None)
    rows = None if devices is None else shard_rows(data, devices)
    if rows is not None:
        # Rows sharded, everything else replicated: each step runs data-parallel.
        X, y, row_mask = rows.X, rows.y, rows.row_mask
        (state, average, eval_key, y_scale, X_train_eval, y_train_eval, X_test,
         y_test) = rows.replicate((state, average, eval_key, y_scale, X_train_eval,
                                   y_train_eval, X_test, y_test))
    report_every = max(1, num_blocks // 10)
    block = 0
    estimate = None
    # Each call runs `block_size` compiled steps, those from `stop` on masked out (so a
    # block cut short at a checkpoint or at num_steps leaves the trajectory unchanged).
    while first < options.num_steps or estimate is None:
        stop = min(first + block_size, options.num_steps)
        if checkpoint is not None:
            stop = checkpoint.next_stop(first, stop)
        state, average, block_losses, train_ll, test_ll, estimate = kernel(
            state, average, first, stop, ema_decay, eval_key, X, y, row_mask, y_scale,
            X_train_eval, y_train_eval, X_test, y_test, block_size=block_size,
        )
        if stop == first:  # resumed a finished run: only the estimate was needed
            break
        if overall is not None:
            train_ll, test_ll = overall(estimate)
        block_losses, train_ll, test_ll = jax.device_get((block_losses, train_ll, test_ll))
        losses.append(block_losses[..., : stop - first])
        eval_steps.append(stop)
        train_lls.append(train_ll)
        test_lls.append(test_ll)
        if options.progress and (block % report_every == 0 or stop == options.num_steps):
            report(method, stop, options.num_steps, float(np.mean(block_losses[..., -1])),
                   float(np.mean(train_ll)) + log_jacobian,
                   float(np.mean(test_ll)) + log_jacobian if data.has_test else None, started)
        if checkpoint is not None and checkpoint.due(stop, options.num_steps):
            checkpoint.write(stop, {"state": state, "average": average}, {
                "history/loss": np.concatenate(losses, axis=-1),
                "history/eval_step": np.asarray(eval_steps, np.int64),
                "history/train_ll": np.asarray(train_lls), "history/test_ll": np.asarray(test_lls)})
        first = stop
        block += 1

    history = {"loss": np.concatenate(losses, axis=-1), "eval_step": np.asarray(eval_steps),
               "train_log_likelihood": np.asarray(train_lls, np.float64) + log_jacobian}
    if data.has_test:
        history["test_log_likelihood"] = np.asarray(test_lls, np.float64) + log_jacobian
    if rows is not None:
        # The estimate back on the default device, as an unsharded fit leaves it.
        estimate = jax.tree.map(jnp.asarray, jax.device_get(estimate))
    return BlockResult(state=state, estimate=estimate, history=history,
                       num_devices=1 if rows is None else rows.num_devices)


def report(method: str, step: int, num_steps: int, loss: float, train_ll: float,
           test_ll: float | None, started: float) -> None:
    """One progress line on stderr."""
    held_out = "" if test_ll is None else f"  test ll {test_ll:8.4f}"
    print(
        f"[{method}] step {step:>6d}/{num_steps}  loss {loss:12.4f}  train ll {train_ll:8.4f}"
        f"{held_out}  ({time.perf_counter() - started:5.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def check_finite_fit(loss: np.ndarray, values: Mapping[str, Any]) -> None:
    """Raise if the estimate is not finite; warn if some steps were skipped as non-finite."""
    bad_steps = int(np.sum(~np.isfinite(loss)))
    if not all(np.isfinite(np.asarray(v)).all() for v in values.values()):
        raise FloatingPointError(
            "The fit produced non-finite parameters. Lower `learning_rate`, or check the data "
            "for extreme values."
        )
    if bad_steps:
        warnings.warn(
            f"{bad_steps} of {loss.size} optimisation steps had a non-finite loss and were "
            "skipped. Lower `learning_rate` or use a larger `min_scale` in the family.",
            RuntimeWarning,
            stacklevel=4,
        )


class _MaskRows(Messenger):
    """Multiplies the log-density of every observed site of the data plate by a row mask
    (N,): the padding rows of sharded data then count for nothing."""

    def __init__(self, fn: Callable[..., Any] | None = None, row_mask: Any = None) -> None:
        self.row_mask = row_mask
        super().__init__(fn)

    def process_message(self, msg: dict[str, Any]) -> None:
        if (msg["type"] == "sample" and msg.get("is_observed")
                and any(frame.name == DATA_PLATE for frame in msg["cond_indep_stack"])):
            msg["fn"] = msg["fn"].mask(self.row_mask)


def row_masked(model_fn: Callable[..., None]) -> Callable[..., None]:
    """`model_fn` with an extra keyword ``row_mask`` (N,), bool or None: rows where it is
    False are left out of the likelihood (padding rows of sharded data)."""

    def masked_model(*args: Any, row_mask: Any = None, **kwargs: Any) -> None:
        if row_mask is None:
            return model_fn(*args, **kwargs)
        with _MaskRows(row_mask=row_mask):
            return model_fn(*args, **kwargs)

    return masked_model


def partial_model(model_fn: Callable[..., None], subsample_size: int | None):
    """The model with a fixed minibatch size (None: full batch), accepting a ``row_mask``
    (see :func:`row_masked`) and, with a minibatch size, the ``batch_indices`` of each step
    (see :func:`~bayes_mdn.inference._minibatch.minibatched`)."""
    if subsample_size is not None:
        model_fn = minibatched(partial(model_fn, subsample_size=subsample_size), DATA_PLATE)
    return row_masked(model_fn)
