"""fit(): turn an MDN specification and data into a :class:`~bayes_mdn.Posterior`.

Every method shares the same preparation (validation, standardisation, data-dependent
initialisation) and returns the same Posterior; methods are registered in ``_METHODS`` with
their option defaults, so adding one (svi, laplace, nuts, ensemble) is one function and one
entry. Unknown options fail before anything is compiled.

MAP is NumPyro's AutoDelta guide trained by optax Adam. The optimisation runs as a compiled
``lax.scan`` over blocks of steps; Python only sees block boundaries (for progress reports
and held-out evaluation), never individual steps. The block kernel is a module-level
``jax.jit`` keyed on the (hashable) model, so fitting the same architecture again, with
another key or other data of the same shape, does not recompile.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.initialization import init_to_uniform
from numpyro.optim import optax_to_numpyro

from bayes_mdn import network
from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_choice,
    check_key,
    check_positive_float,
    check_positive_int,
    check_same_rows,
)
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.scaling import Standardizer

__all__ = ["FitData", "fit", "prepare_data"]


# --------------------------------------------------------------------------- data preparation
@dataclass(frozen=True, eq=False)
class FitData:
    """Validated, standardised training (and optional held-out) data.

    Attributes
    ----------
    standardizer : Standardizer
    X, y : Array, shapes (N, P) and (N, D)
        Standardised training data in the compute dtype.
    y_scale : Array, shape (D,)
    X_test, y_test : Array or None
        Standardised held-out data, if given.
    """

    standardizer: Standardizer
    X: jax.Array
    y: jax.Array
    y_scale: jax.Array
    X_test: jax.Array | None = None
    y_test: jax.Array | None = None

    @property
    def num_rows(self) -> int:
        return int(self.X.shape[0])


def prepare_data(model: MDN, X: Any, y: Any, X_test: Any = None, y_test: Any = None) -> FitData:
    """Validate and standardise training data (and held-out data, if given).

    Raises
    ------
    ValueError, TypeError
        For anything :mod:`bayes_mdn._validation` rejects, or a y outside the family's support.
    """
    X_host = as_features(X, "X")
    y_host = as_targets(y, "y")
    check_same_rows(X_host, y_host)
    model.prior.check_sites(model.sites(X_host.shape[1], y_host.shape[1]))
    model.family.check_support(y_host, "y")
    standardizer = Standardizer.fit(X_host, y_host, standardize_y=model.family.standardize_y)
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both `X_test` and `y_test` to record held-out log-likelihood.")
    X_test_std = y_test_std = None
    if X_test is not None:
        X_test_host = as_features(X_test, "X_test", num_features=X_host.shape[1])
        y_test_host = as_targets(y_test, "y_test", num_outputs=y_host.shape[1])
        check_same_rows(X_test_host, y_test_host, "X_test", "y_test")
        model.family.check_support(y_test_host, "y_test")
        X_test_std = standardizer.transform_X(X_test_host)
        y_test_std = standardizer.transform_y(y_test_host)
    X_std = standardizer.transform_X(X_host)
    return FitData(
        standardizer=standardizer,
        X=X_std,
        y=standardizer.transform_y(y_host),
        y_scale=jnp.asarray(standardizer.y_scale, dtype=X_std.dtype),
        X_test=X_test_std,
        y_test=y_test_std,
    )


def initial_params(model: MDN, data: FitData, key: jax.Array) -> dict[str, jax.Array]:
    """Data-dependent starting point: spread component locations, near-uniform weights."""
    num_features, num_outputs = data.X.shape[1], data.y.shape[1]
    head_bias = {"logits": np.zeros(model.num_components)}
    head_bias.update(model.family.initial_head_bias(np.asarray(data.y), model.num_components))
    layout = model.layout(num_features, num_outputs)
    return _init_network(key, layout, head_bias, dtype=data.X.dtype)


# Compiled as one program: run eagerly, each small op would compile on its own (~0.1 s each).
_init_network = jax.jit(network.init_params, static_argnames=("layout", "head_kernel_scale",
                                                              "dtype"))


def mean_log_likelihood(model: MDN, params, X_std, y_std, y_scale) -> jax.Array:
    """Mean log-likelihood per row in *standardised* units (add the log-Jacobian for original)."""
    log_weights, component_params = model.mixture(params, X_std, y_scale)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(logits=log_weights), model.family.distribution(component_params)
    )
    return jnp.mean(mixture.log_prob(y_std))


# --------------------------------------------------------------------------- MAP
@dataclass(frozen=True, eq=False)
class _MapProgram:
    """An SVI object with its AutoDelta guide set up once, and the compiled block kernel."""

    svi: SVI
    guide: AutoDelta
    init_state: Callable[..., Any]
    run_block: Callable[..., Any]

    def guide_params(self, values: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {f"{name}_{self.guide.prefix}_loc": value for name, value in values.items()}



@lru_cache(maxsize=16)
def _map_program(model: MDN, data_shape: tuple[int, int, int], learning_rate: float,
                 evaluate_test: bool) -> _MapProgram:
    """Build (once per model, data shape and learning rate) the SVI object and block kernel.

    Caching matters: a new SVI object would mean a new jit closure and a full recompile for
    every fit, e.g. for each key of a seed sweep.
    """
    # The number of rows is part of the key: the guide traces the data plate at that size.
    _, num_features, num_outputs = data_shape
    guide = AutoDelta(model.numpyro_model, init_loc_fn=init_to_uniform)
    # apply_if_finite skips (and counts) a step whose gradient is NaN/inf instead of
    # poisoning the parameters; a healthy fit never triggers it.
    optimizer = optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=10**9)
    svi = SVI(model.numpyro_model, guide, optax_to_numpyro(optimizer), Trace_ELBO())
    names = [site.name for site in model.sites(num_features, num_outputs)]
    program = _MapProgram(svi, guide, init_state=None, run_block=None)  # type: ignore[arg-type]

    @jax.jit
    def init_state(key, X, y, y_scale, init_params):
        # Traced once: eager svi.init would compile every small op of the model separately.
        return svi.init(key, X, y, y_scale=y_scale, init_params=program.guide_params(init_params))

    @partial(jax.jit, static_argnames="block_size")
    def run_block(state, average, first_step, num_steps, ema_decay, X, y, y_scale, X_test,
                  y_test, *, block_size):
        """`block_size` Adam steps (those past `num_steps` leave the state unchanged) with an
        exponential moving average of the iterates, then train/test mean log-likelihood at
        the block's estimate (the bias-corrected average; the last iterate if decay is 0)."""

        def step(carry, index):
            state, average = carry
            new_state, loss = svi.update(state, X, y, y_scale=y_scale)
            active = first_step + index < num_steps
            state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
            params = svi.optim.get_params(state.optim_state)
            average = jax.tree.map(
                lambda mean, value: jnp.where(active, ema_decay * mean
                                              + (1 - ema_decay) * value, mean),
                average, params)
            return (state, average), loss

        (state, average), losses = jax.lax.scan(step, (state, average), jnp.arange(block_size))
        num_done = jnp.minimum(first_step + block_size, num_steps)
        correction = 1 - ema_decay ** num_done.astype(ema_decay.dtype)
        estimate = jax.tree.map(lambda mean: mean / correction, average)
        values = {name: estimate[f"{name}_{guide.prefix}_loc"] for name in names}
        train_ll = mean_log_likelihood(model, values, X, y, y_scale)
        test_ll = (mean_log_likelihood(model, values, X_test, y_test, y_scale) if evaluate_test
                   else jnp.zeros_like(train_ll))
        return state, average, losses, train_ll, test_ll, values

    object.__setattr__(program, "init_state", init_state)
    object.__setattr__(program, "run_block", run_block)
    return program


@dataclass(frozen=True)
class MapOptions:
    """Options of ``method="map"``.

    Attributes
    ----------
    num_steps : int
        Full-batch Adam steps.
    learning_rate : float
        Adam step size (in standardised units, so it rarely needs tuning).
    ema_decay : float
        If positive, the estimate returned is a bias-corrected exponential moving average of
        the iterates with this decay (Polyak averaging, window about ``1 / (1 - decay)``
        steps) instead of the last iterate. Averaging cancels the oscillation of Adam around
        the mode; 0.995 suits a few thousand steps.
    num_evaluations : int
        How many times during the fit to record train/test log-likelihood (and report
        progress); the loss is recorded at every step regardless.
    progress : bool
        Print progress lines to stderr while training.
    """

    num_steps: int = 2000
    learning_rate: float = 0.01
    ema_decay: float = 0.0
    num_evaluations: int = 50
    progress: bool = False

    def __post_init__(self) -> None:
        check_positive_int(self.num_steps, "num_steps")
        check_positive_float(self.learning_rate, "learning_rate")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)):
            raise TypeError(f"`ema_decay` must be a number in [0, 1); got {self.ema_decay!r}.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be in [0, 1); got {self.ema_decay}.")
        check_positive_int(self.num_evaluations, "num_evaluations")
        if not isinstance(self.progress, bool):
            raise TypeError(f"`progress` must be True or False; got {self.progress!r}.")


def _report(method: str, step: int, num_steps: int, loss: float, train_ll: float,
            test_ll: float | None, started: float) -> None:
    held_out = "" if test_ll is None else f"  test ll {test_ll:8.4f}"
    print(
        f"[{method}] step {step:>6d}/{num_steps}  loss {loss:12.4f}  train ll {train_ll:8.4f}"
        f"{held_out}  ({time.perf_counter() - started:5.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _fit_map(model: MDN, data: FitData, key: jax.Array, options: MapOptions) -> Posterior:
    started = time.perf_counter()
    init_key, svi_key = jax.random.split(key)
    init = initial_params(model, data, init_key)
    evaluate_test = data.X_test is not None
    program = _map_program(model, (*data.X.shape, data.y.shape[1]),
                           options.learning_rate, evaluate_test)
    state = program.init_state(svi_key, data.X, data.y, data.y_scale, init)
    average = {name: np.zeros_like(value) for name, value in program.guide_params(init).items()}
    ema_decay = np.asarray(options.ema_decay, dtype=data.X.dtype)

    # Blocks of equal size (so one compilation serves them all) covering num_steps with
    # fewer than `num_blocks` wasted, masked steps at the end.
    num_blocks = min(options.num_evaluations, options.num_steps)
    block_size = math.ceil(options.num_steps / num_blocks)
    num_blocks = math.ceil(options.num_steps / block_size)
    dummy = data.X[:1], data.y[:1]
    X_test, y_test = (data.X_test, data.y_test) if evaluate_test else dummy
    log_jacobian = data.standardizer.log_jacobian

    losses, eval_steps, train_lls, test_lls = [], [], [], []
    report_every = max(1, num_blocks // 10)
    for block in range(num_blocks):
        first = block * block_size
        state, average, block_losses, train_ll, test_ll, values = program.run_block(
            state, average, first, options.num_steps, ema_decay, data.X, data.y, data.y_scale,
            X_test, y_test, block_size=block_size,
        )
        last = min(first + block_size, options.num_steps)
        block_losses, train_ll, test_ll = jax.device_get((block_losses, train_ll, test_ll))
        losses.append(block_losses[: last - first])
        eval_steps.append(last)
        train_lls.append(train_ll)
        test_lls.append(test_ll)
        if options.progress and (block % report_every == 0 or block == num_blocks - 1):
            _report("map", last, options.num_steps, float(block_losses[last - first - 1]),
                    float(train_ll) + log_jacobian,
                    float(test_ll) + log_jacobian if evaluate_test else None, started)

    loss = np.concatenate(losses)
    history = {"loss": loss, "eval_step": np.asarray(eval_steps),
               "train_log_likelihood": np.asarray(train_lls, np.float64) + log_jacobian}
    if evaluate_test:
        history["test_log_likelihood"] = np.asarray(test_lls, np.float64) + log_jacobian
    _check_finite_fit(loss, values)
    draws = {name: value[None, None] for name, value in values.items()}
    info = {"fit_seconds": time.perf_counter() - started, "num_steps": options.num_steps,
            "learning_rate": options.learning_rate, "ema_decay": options.ema_decay,
            "num_rows": data.num_rows}
    return Posterior(model=model, method="map", draws=draws, standardizer=data.standardizer,
                     history=history, info=info)


def _check_finite_fit(loss: np.ndarray, values: dict[str, jax.Array]) -> None:
    bad_steps = int(np.sum(~np.isfinite(loss)))
    params_finite = all(np.isfinite(np.asarray(v)).all() for v in values.values())
    if not params_finite:
        raise FloatingPointError(
            "The fit produced non-finite parameters. Lower `learning_rate`, or check the data "
            "for extreme values."
        )
    if bad_steps:
        warnings.warn(
            f"{bad_steps} of {loss.size} optimisation steps had a non-finite loss and were "
            "skipped. Lower `learning_rate` or use a larger `min_scale` in the family.",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- dispatch
_METHODS: dict[str, tuple[type, Callable[..., Posterior]]] = {
    "map": (MapOptions, _fit_map),
}


def fit(model: MDN, X: Any, y: Any, *, key: jax.Array, method: str = "map",
        X_test: Any = None, y_test: Any = None, **options: Any) -> Posterior:
    """Fit `model` to data; see :meth:`bayes_mdn.MDN.fit`.

    Parameters
    ----------
    model : MDN
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    key : PRNG key
    method : str
        ``"map"``.
    X_test, y_test : array-like, optional
        Held-out data whose mean log-likelihood per point (original units) is recorded during
        training in ``history["test_log_likelihood"]``.
    **options
        Options of the method: for ``"map"``, see :class:`MapOptions`.

    Returns
    -------
    Posterior
    """
    if not isinstance(model, MDN):
        raise TypeError(f"`model` must be a bayes_mdn.MDN; got {type(model).__name__}.")
    method = check_choice(method, "method", _METHODS)
    key = check_key(key)
    options_type, fit_method = _METHODS[method]
    valid = set(options_type.__dataclass_fields__)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"fit(method={method!r}) got unknown options {unknown}; valid options are "
            f"{sorted(valid)}."
        )
    method_options = options_type(**options)
    data = prepare_data(model, X, y, X_test, y_test)
    return fit_method(model, data, key, method_options)

