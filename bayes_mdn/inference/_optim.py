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

from bayes_mdn._progress import check_progress, progress_bar
from bayes_mdn._validation import check_positive_float, check_positive_int
from bayes_mdn.diagnostics import ConvergenceWarning, objective_trend
from bayes_mdn.inference._checkpoint import CheckpointPlan
from bayes_mdn.inference._checkpoint import check_options as check_checkpoint_options
from bayes_mdn.inference._data import FitData, check_shard_data, shard_devices, shard_rows
from bayes_mdn.inference._holdout import check_validation_options
from bayes_mdn.inference._minibatch import minibatch_indices, minibatched

__all__ = ["OptimOptions", "OptimProgram", "SortedTraceELBO", "build_program", "make_optimizer",
           "row_masked", "run_blocks", "validation_info", "warn_if_unconverged"]

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
        Optimisation steps; with `validation`, the most steps (the fit may stop earlier).
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
        How many times during the fit to record train/test (and validation) log-likelihood
        and update the progress bar: every ``ceil(num_steps / num_evaluations)`` steps, the
        blocks in which the compiled optimisation runs. The loss is recorded at every step
        regardless.
    validation : float or (X_val, y_val), optional
        Early stopping on held-out rows: a fraction in (0, 1) of the training rows (chosen
        at random with the fit's key; the model never trains on them), or separate rows
        ``(X_val, y_val)`` of shapes (M', P) and (M', D). Their mean log-likelihood is
        evaluated at every evaluation (see `num_evaluations`); the fit stops when it has not
        improved for `patience` evaluations in a row and keeps the best iterate seen (for
        ``method="ensemble"``, each member's own best: a member stops improving on its own
        and the fit stops when every member has; see `refit` for what is returned).
        `num_steps` is then a maximum. The curve is
        kept in ``history["validation_log_likelihood"]`` (original units; an ensemble's
        predictive, with ``history["member_validation_log_likelihood"]`` per member),
        ``history["best_step"]`` (per member for ensembles) and ``history["stopped_step"]``.
        Without `validation` a fit whose objective was still clearly improving at the end
        warns (:class:`~bayes_mdn.ConvergenceWarning`). Resuming a checkpoint with validation
        reproduces the uninterrupted run when `num_steps` and `num_evaluations` are those of
        the run that wrote it.
    refit : bool or None
        With `validation`, what the fit returns once the validation rows have chosen when to
        stop. True: fit again, from the same key and start, on every row (the training rows
        plus the validation rows, standardised together) for the number of steps the
        validation rows chose: ``history["best_step"]``, or for ensembles the step where the
        ensemble's validation log-likelihood peaked, for every member (a single member's
        curve is noisy and its best biased early). The step count is tuned on held-out rows
        but the returned fit has seen all the data, as with a step count tuned by hand. It
        costs one more fit of at most that many steps (one more compilation for the larger
        data). False: return the best iterate of
        the fit on the training rows alone (the validation rows stay unseen, e.g. for
        recalibration). None (default): True for a fraction ``validation=0.2``, False for
        separate rows ``validation=(X_val, y_val)`` (rows you passed separately are never
        trained on unless you say so). Why refit by default: on the UCI protocol
        (``benchmarks/validation_stopping.py``, 4 data sets x K = 1, 3, 20 splits) the best
        iterate of the 80 % fit was more than one standard error below the hand-tuned
        step count on 4 of 8 rows; with the refit on none
        (``benchmarks/results/validation_stopping_summary.md``). After a refit,
        ``history`` is the refit's curve plus the validation pass's:
        ``validation_log_likelihood``, ``best_step``, ``stopped_step`` (and
        ``member_validation_log_likelihood``) as above, the other entries of the
        validation pass prefixed ``validation_pass_`` (e.g.
        ``validation_pass_eval_step``, the steps of the validation curve), and
        ``refit_step``; ``info["refit"]`` is True. The refit runs without a checkpoint
        (`checkpoint`/`resume` cover the validation pass; the refit is deterministic, so a
        resumed fit still equals the uninterrupted one). Ignored without `validation`.
    patience : int
        Evaluations without a better validation log-likelihood before stopping (default 20,
        e.g. 20 x 40 = 800 steps with the default 2000 steps and 50 evaluations: validation
        curves of small data sets are noisy and plateau for a while before improving again).
    progress : bool or None
        Show a progress bar (tqdm, on standard error) with the loss and the train, validation
        and test log-likelihood, updated at every evaluation. None (default): only when
        standard error is a terminal and ``BAYES_MDN_PROGRESS`` is not 0 (see
        :mod:`bayes_mdn._progress`).
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
    validation: Any = None
    patience: int = 20
    refit: bool | None = None
    progress: bool | None = None
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
        object.__setattr__(self, "validation",
                           check_validation_options(self.validation, self.patience))
        if self.refit is not None and not isinstance(self.refit, (bool, np.bool_)):
            raise TypeError("`refit` must be True, False or None (refit on every row after a "
                            "fractional validation split); got "
                            f"{type(self.refit).__name__}.")
        check_progress(self.progress)
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
                  y_scale, X_train_eval, y_train_eval, X_test, y_test, X_val, y_val, *,
                  block_size):
        """`block_size` steps (those past `num_steps` leave the state unchanged), with an
        exponential moving average of the raw parameters, then train/test/validation
        log-likelihood at the block's estimate (the bias-corrected average; the last iterate
        if decay is 0).
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
        val_ll = evaluate(estimate, eval_key, X_val, y_val, y_scale)
        return state, average, losses, train_ll, test_ll, val_ll, estimate

    def members(*args, block_size):
        # block_size is bound first: vmap would map keyword arguments along axis 0.
        mapped = jax.vmap(partial(run_block, block_size=block_size),
                          in_axes=(0, 0, None, None, None, 0) + (None,) * 10)
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
    overall: Callable[..., tuple[jax.Array, ...]] | None = None,
    checkpoint: CheckpointPlan | None = None,
    subsample_size: int | None = None,
) -> BlockResult:
    """Run up to `options.num_steps` steps in equal compiled blocks and record the history.

    Parameters
    ----------
    program : OptimProgram
    state : SVIState
        From ``program.init_state`` (with a leading member axis if `members`).
    options : OptimOptions
    data : FitData
        With validation rows (``data.X_val``, see :mod:`bayes_mdn.inference._holdout`) the
        fit stops early on them (``options.validation``, ``options.patience``).
    method : str
        Name shown on the progress bar.
    eval_key : PRNG key
        Fixed key for evaluations that sample (SVI), so curves are not noisy.
    train_eval : (X, y), optional
        Training rows to evaluate on (default: all of them; a subset for minibatch SVI).
    members : bool
        Run ``program.run_block_members`` (an ensemble); losses get a member axis, and
        early stopping keeps each member's best iterate.
    overall : callable, optional
        ``(estimate, X_val, y_val) -> (train_ll, test_ll, val_ll)`` replacing the per-block
        evaluation in the history (the ensemble's predictive log-likelihood instead of each
        member's).
    checkpoint : CheckpointPlan, optional
        Resume from its checkpoint (state, moving average, history so far, best iterate)
        and/or write checkpoints; blocks are cut at checkpoint boundaries, which adds
        evaluations there but never changes the trajectory (early stopping looks only at the
        regular block ends).
    subsample_size : int, optional
        The minibatch size of the program's model (None: full batch); minibatch fits are
        never sharded.

    Returns
    -------
    BlockResult
        ``history`` holds ``loss`` ((steps,) or (members, steps)), ``eval_step``,
        ``train_log_likelihood`` and, with held-out data, ``test_log_likelihood`` (per row,
        original units); with validation rows ``validation_log_likelihood``,
        ``best_step`` (per member for ensembles) and ``stopped_step``, and for ensembles
        ``member_validation_log_likelihood`` (members, evaluations). ``estimate`` is the
        best iterate on the validation rows (each member's), else the last block's.
    BlockResult.num_devices
        How many devices the rows were sharded over (1 without ``shard_data``).
    """
    raw = program.svi.optim.get_params(state.optim_state)
    average = zero_average(raw)
    ema_decay = np.asarray(options.ema_decay, dtype=data.X.dtype)
    X_train_eval, y_train_eval = train_eval if train_eval is not None else (data.X, data.y)
    X_test, y_test = data.test_or_placeholder()
    X_val, y_val = getattr(data, "X_val", None), getattr(data, "y_val", None)
    validating = X_val is not None
    if not validating:
        X_val, y_val = data.X[:1], data.y[:1]  # one signature for every program
    kernel = program.run_block_members if members else program.run_block

    # Blocks of equal size (so one compilation serves them all) covering num_steps with
    # fewer than `num_blocks` wasted, masked steps at the end.
    num_blocks = min(options.num_evaluations, options.num_steps)
    block_size = math.ceil(options.num_steps / num_blocks)
    log_jacobian = data.standardizer.log_jacobian

    losses, eval_steps, train_lls, test_lls = [], [], [], []
    # A refit on every row (see _holdout.refit_data) runs to the last member's chosen step
    # and takes each member's estimate at the first block end at or after its own.
    stop_steps = getattr(data, "stop_steps", None)
    limit = options.num_steps
    taken = chosen = None
    if stop_steps is not None:
        stop_steps = np.atleast_1d(np.asarray(stop_steps, np.int64))
        limit = min(options.num_steps, max(int(stop_steps.max()), 1))
        taken = np.zeros(stop_steps.shape, bool)
    stopping = _EarlyStopping(options.patience, members=members) if validating else None
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
        if stopping is not None:
            stopping.load(saved)
    X, y, row_mask, y_scale = data.X, data.y, None, data.y_scale
    devices = shard_devices(options.shard_data, full_batch=subsample_size is None)
    rows = None if devices is None else shard_rows(data, devices)
    if rows is not None:
        # Rows sharded, everything else replicated: each step runs data-parallel.
        X, y, row_mask = rows.X, rows.y, rows.row_mask
        (state, average, eval_key, y_scale, X_train_eval, y_train_eval, X_test,
         y_test, X_val, y_val) = rows.replicate((state, average, eval_key, y_scale,
                                                 X_train_eval, y_train_eval, X_test, y_test,
                                                 X_val, y_val))
    estimate = None
    bar = progress_bar(limit, desc=method if stop_steps is None else f"{method} (refit)",
                       progress=options.progress, unit="step", initial=first)
    with bar:
        # Each call runs `block_size` compiled steps, those from `stop` on masked out (so a
        # block cut short at a checkpoint or at num_steps leaves the trajectory unchanged).
        # Blocks end at multiples of block_size (plus checkpoint cuts).
        while first < limit or estimate is None:
            stop = min((first // block_size + 1) * block_size, limit)
            if checkpoint is not None:
                stop = checkpoint.next_stop(first, stop)
            if stopping is not None and stopping.stopped_step is not None:
                stop = first  # resumed a run that had stopped early
            state, average, block_losses, train_ll, test_ll, val_ll, estimate = kernel(
                state, average, first, stop, ema_decay, eval_key, X, y, row_mask, y_scale,
                X_train_eval, y_train_eval, X_test, y_test, X_val, y_val,
                block_size=block_size,
            )
            if stopping is not None and checkpoint is not None and stopping.pending_restore:
                stopping.best = checkpoint.restore("best", estimate)
                stopping.pending_restore = False
            if stop == first:  # resumed a finished run: only the estimate was needed
                break
            member_val_ll = val_ll
            if overall is not None:
                train_ll, test_ll, val_ll = overall(estimate, X_val, y_val)
            block_losses, train_ll, test_ll, val_ll, member_val_ll = jax.device_get(
                (block_losses, train_ll, test_ll, val_ll, member_val_ll))
            losses.append(block_losses[..., : stop - first])
            eval_steps.append(stop)
            train_lls.append(train_ll)
            test_lls.append(test_ll)
            regular = stop % block_size == 0 or stop == options.num_steps
            if stopping is not None:
                stopping.record(val_ll, member_val_ll, stop, estimate, regular)
            if taken is not None:
                due = (stop_steps <= stop) & ~taken
                if chosen is None:
                    chosen = estimate
                elif due.any():
                    chosen = _where_members(due, estimate, chosen) if members else estimate
                taken |= due
            postfix = {"loss": f"{float(np.mean(block_losses[..., -1])):.4g}",
                       "train_ll": f"{float(np.mean(train_ll)) + log_jacobian:.4f}"}
            if validating:
                postfix["val_ll"] = f"{float(np.mean(val_ll)) + log_jacobian:.4f}"
            if data.has_test:
                postfix["test_ll"] = f"{float(np.mean(test_ll)) + log_jacobian:.4f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(stop - first)
            if stopping is not None and regular and stopping.should_stop():
                stopping.stopped_step = stop
            finished = stop == limit or (
                stopping is not None and stopping.stopped_step is not None)
            if checkpoint is not None and (checkpoint.due(stop, options.num_steps) or (
                    finished and checkpoint.path is not None)):
                trees = {"state": state, "average": average}
                arrays = {
                    "history/loss": np.concatenate(losses, axis=-1),
                    "history/eval_step": np.asarray(eval_steps, np.int64),
                    "history/train_ll": np.asarray(train_lls),
                    "history/test_ll": np.asarray(test_lls)}
                if stopping is not None:
                    trees["best"] = stopping.best
                    arrays.update(stopping.arrays())
                checkpoint.write(stop, trees, arrays)
            first = stop
            if finished:
                break

    history = {"loss": np.concatenate(losses, axis=-1), "eval_step": np.asarray(eval_steps),
               "train_log_likelihood": np.asarray(train_lls, np.float64) + log_jacobian}
    if data.has_test:
        history["test_log_likelihood"] = np.asarray(test_lls, np.float64) + log_jacobian
    if stopping is not None:
        history.update(stopping.history(log_jacobian, options.num_steps))
        if stopping.best is not None:
            estimate = stopping.best
    if chosen is not None:
        estimate = chosen
        history["refit_step"] = stop_steps if members else np.asarray(stop_steps[0])
    if rows is not None:
        # The estimate back on the default device, as an unsharded fit leaves it.
        estimate = jax.tree.map(jnp.asarray, jax.device_get(estimate))
    return BlockResult(state=state, estimate=estimate, history=history,
                       num_devices=1 if rows is None else rows.num_devices)


def _where_members(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per member (leading axis): `new` where `mask`, else `old`."""
    mask = jnp.asarray(mask)
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


class _EarlyStopping:
    """Host-side bookkeeping of early stopping on validation rows, between compiled blocks.

    Only regular block ends count (not the extra evaluations at checkpoint cuts), so a
    checkpointed run stops where an uninterrupted one does. With `members`, each member has
    its own best value, best iterate and count of evaluations without improvement; a member
    whose count reached `patience` keeps its best iterate from then on.
    """

    def __init__(self, patience: int, *, members: bool) -> None:
        self.patience = patience
        self.members = members
        self.values: list[Any] = []         # the (overall) validation ll per evaluation
        self.member_values: list[Any] = []  # per member (ensembles)
        self.best_value: np.ndarray | None = None
        self.best_step: np.ndarray | None = None
        self.stale: np.ndarray | None = None
        self.best: Any = None
        self.stopped_step: int | None = None
        self.pending_restore = False

    def record(self, value: Any, member_value: Any, step: int, estimate: Any,
               regular: bool) -> None:
        self.values.append(np.asarray(value, np.float64))
        self.member_values.append(np.asarray(member_value, np.float64))
        if not regular:
            return
        current = np.atleast_1d(np.asarray(member_value, np.float64))
        if self.best_value is None:
            self.best_value = np.full(current.shape, -np.inf)
            self.best_step = np.zeros(current.shape, np.int64)
            self.stale = np.zeros(current.shape, np.int64)
        active = self.stale < self.patience
        improved = active & (current > self.best_value)  # NaN never improves
        self.best_value = np.where(improved, current, self.best_value)
        self.best_step = np.where(improved, step, self.best_step)
        self.stale = np.where(improved, 0, np.where(active, self.stale + 1, self.stale))
        if self.best is None:
            self.best = estimate
        elif improved.any():
            if self.members:
                self.best = _where_members(improved, estimate, self.best)
            else:
                self.best = estimate

    def should_stop(self) -> bool:
        return self.stale is not None and bool(np.all(self.stale >= self.patience))

    def still_improving(self) -> bool:
        """Whether some member's best was at the last regular evaluation."""
        return self.stale is not None and bool(np.any(self.stale == 0))

    def arrays(self) -> dict[str, np.ndarray]:
        """The state to checkpoint (``history/val_*``)."""
        none = np.zeros(0)
        return {"history/val_ll": np.asarray(self.values),
                "history/val_member_ll": np.asarray(self.member_values),
                "history/val_best_value": none if self.best_value is None else self.best_value,
                "history/val_best_step": none if self.best_step is None else self.best_step,
                "history/val_stale": none if self.stale is None else self.stale,
                "history/val_stopped": np.asarray(-1 if self.stopped_step is None
                                                  else self.stopped_step)}

    def load(self, saved: dict[str, np.ndarray]) -> None:
        """Continue from a checkpoint's :meth:`arrays` (the best iterate follows later,
        shaped like the first estimate: ``pending_restore``)."""
        self.values = list(saved["val_ll"])
        self.member_values = list(saved["val_member_ll"])
        if saved["val_best_value"].size:
            self.best_value = saved["val_best_value"]
            self.best_step = saved["val_best_step"].astype(np.int64)
            self.stale = saved["val_stale"].astype(np.int64)
            self.pending_restore = True
        stopped = int(saved["val_stopped"])
        self.stopped_step = None if stopped < 0 else stopped

    def history(self, log_jacobian: float, num_steps: int) -> dict[str, np.ndarray]:
        history = {"validation_log_likelihood": np.asarray(self.values, np.float64)
                   + log_jacobian,
                   "stopped_step": np.asarray(num_steps if self.stopped_step is None
                                              else self.stopped_step, np.int64)}
        best_step = np.zeros(1, np.int64) if self.best_step is None else self.best_step
        history["best_step"] = best_step if self.members else np.asarray(best_step[0])
        if self.members:
            history["member_validation_log_likelihood"] = (
                np.asarray(self.member_values, np.float64).T + log_jacobian)
        return history


def validation_info(options: OptimOptions, data: FitData) -> dict[str, Any]:
    """``Posterior.info`` entries of early stopping: the validation fraction (None for
    separate rows), the number of validation rows and the patience; empty without."""
    X_val = getattr(data, "X_val", None)
    if X_val is None:
        return {}
    fraction = options.validation if isinstance(options.validation, float) else None
    return {"validation_fraction": fraction, "num_validation_rows": int(X_val.shape[0]),
            "patience": options.patience}


def warn_if_unconverged(posterior: Any, options: OptimOptions, *, stacklevel: int = 5
                        ) -> None:
    """Warn (:class:`~bayes_mdn.ConvergenceWarning`) when the fit ended still improving.

    Without validation rows: the objective's trend over the last 5 % of the steps against
    the 5 % before (:func:`bayes_mdn.diagnostics.objective_trend`: more than 1e-3 nats per
    row and 3 standard errors of its batch means). With validation rows: the validation
    log-likelihood was at its best at the last evaluation of a run that used every step.
    """
    history = posterior.history
    if "validation_log_likelihood" in history:
        best = np.atleast_1d(history["best_step"])
        if int(history["stopped_step"]) >= options.num_steps and np.any(
                best >= options.num_steps):
            warnings.warn(
                f"The validation log-likelihood was still improving at the last of the "
                f"num_steps={options.num_steps} steps ({posterior.method} fit): the fit "
                "stopped on its step budget, not on the validation rows. Raise num_steps "
                "(it is a maximum when validation= is given).",
                ConvergenceWarning, stacklevel=stacklevel)
        return
    trend = objective_trend(posterior)
    if trend is None or not trend["still_improving"]:
        return
    z = "" if trend["z"] is None else f", {trend['z']:.1f} standard errors"
    warnings.warn(
        f"The {trend['objective']} of this {posterior.method} fit was still improving at the "
        f"end of its {trend['num_steps']} steps ({trend['improvement_per_row']:+.3g} nats per "
        f"row between the last two 5% windows{z}): it has not converged. Raise num_steps, or "
        "pass validation=0.2 (or validation=(X_val, y_val)) to stop on held-out rows with "
        "num_steps as a maximum.",
        ConvergenceWarning, stacklevel=stacklevel)


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
