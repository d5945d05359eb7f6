"""MAP (``method="map"``) and deep ensembles (``method="ensemble"``).

MAP is NumPyro's AutoDelta guide trained by optax Adam: the maximum of the log joint density
(log-likelihood plus log prior). A deep ensemble is E independent MAP fits from different
keys and starting points, run as one vmapped program; its E estimates are treated as E
equally weighted posterior draws, which captures several modes of the posterior at the cost
of E optimisations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import jax
import numpy as np
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.initialization import init_to_uniform

from bayes_mdn._validation import check_positive_int
from bayes_mdn.inference._checkpoint import checkpoint_plan
from bayes_mdn.inference._data import (
    FitData,
    initial_params,
    mean_log_likelihood,
    predictive_log_likelihood,
)
from bayes_mdn.inference._optim import (
    OptimOptions,
    OptimProgram,
    SortedTraceELBO,
    build_program,
    check_finite_fit,
    make_optimizer,
    partial_model,
    run_blocks,
    validation_info,
    warn_if_unconverged,
)
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior

__all__ = ["EnsembleOptions", "MapOptions", "fit_ensemble", "fit_map"]

PREFIX = "auto"


def _loc_name(site: str) -> str:
    return f"{site}_{PREFIX}_loc"


@dataclass(frozen=True)
class MapOptions(OptimOptions):
    """Options of ``method="map"``: see :class:`~bayes_mdn.inference.OptimOptions`."""


@dataclass(frozen=True)
class EnsembleOptions(OptimOptions):
    """Options of ``method="ensemble"``.

    Attributes
    ----------
    num_members : int
        E, the number of independent MAP fits (each a posterior draw).
    (others)
        As for MAP, applied to every member.
    """

    num_members: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.num_members, "num_members")


@lru_cache(maxsize=16)
def map_program(model: MDN, data_shape: tuple[int, int, int], optimizer_key: tuple
                ) -> tuple[OptimProgram, tuple[str, ...]]:
    """The MAP program, built once per model, data shape and optimiser.

    Caching matters: a new SVI object would mean new jit closures and a full recompile for
    every fit, e.g. for each key of a seed sweep or each ensemble size.
    """
    _, num_features, num_outputs = data_shape
    names = tuple(model.latent_shapes(num_features, num_outputs))
    model_fn = partial_model(model.numpyro_model, None)  # takes a row mask (shard_data)
    guide = AutoDelta(model_fn, prefix=PREFIX, init_loc_fn=init_to_uniform)
    svi = SVI(model_fn, guide, make_optimizer(*optimizer_key), SortedTraceELBO())

    def evaluate(estimate, key, X, y, y_scale):
        return mean_log_likelihood(model, point_values(estimate, names), X, y, y_scale)

    return build_program(svi, evaluate), names


def point_values(guide_params, names) -> dict[str, jax.Array]:
    """Site values from AutoDelta parameters."""
    return {name: guide_params[_loc_name(name)] for name in names}


def _guide_params(values) -> dict[str, jax.Array]:
    return {_loc_name(name): value for name, value in values.items()}


def fit_map(model: MDN, data: FitData, key: jax.Array, options: MapOptions) -> Posterior:
    started = time.perf_counter()
    plan = checkpoint_plan("map", model, data, key, options, options.num_steps)
    init_key, svi_key = jax.random.split(key)
    program, names = map_program(model, data.shape, options.optimizer_key())
    start = initial_params(model, data, init_key)
    state = program.init_state(svi_key, data.X, data.y, data.y_scale, _guide_params(start))
    result = run_blocks(program, state, options, data, method="map", eval_key=svi_key,
                        checkpoint=plan)
    values = point_values(result.estimate, names)
    check_finite_fit(result.history["loss"], values)
    posterior = Posterior(
        model=model, method="map",
        draws={name: value[None, None] for name, value in values.items()},
        standardizer=data.standardizer, history=result.history,
        info=_info(options, data, started, result.num_devices),
    )
    warn_if_unconverged(posterior, options)
    return posterior


@lru_cache(maxsize=16)
def _ensemble_kernels(model: MDN, data_shape: tuple[int, int, int], optimizer_key: tuple):
    program, names = map_program(model, data_shape, optimizer_key)
    init_members = jax.jit(jax.vmap(program.init_state, in_axes=(0, None, None, None, 0)))

    @jax.jit
    def ensemble_log_likelihood(estimate, X, y, X_test, y_test, X_val, y_val, y_scale):
        draws = point_values(estimate, names)
        return (predictive_log_likelihood(model, draws, X, y, y_scale),
                predictive_log_likelihood(model, draws, X_test, y_test, y_scale),
                predictive_log_likelihood(model, draws, X_val, y_val, y_scale))

    return program, names, init_members, ensemble_log_likelihood


def fit_ensemble(model: MDN, data: FitData, key: jax.Array, options: EnsembleOptions
                 ) -> Posterior:
    started = time.perf_counter()
    plan = checkpoint_plan("ensemble", model, data, key, options, options.num_steps)
    init_key, svi_key = jax.random.split(key)
    program, names, init_members, ensemble_ll = _ensemble_kernels(
        model, data.shape, options.optimizer_key())
    size = options.num_members
    start = initial_params(model, data, jax.random.split(init_key, size))
    member_keys = jax.random.split(svi_key, size)
    state = init_members(member_keys, data.X, data.y, data.y_scale, _guide_params(start))
    X_test, y_test = data.test_or_placeholder()
    result = run_blocks(
        program, state, options, data, method="ensemble", eval_key=member_keys, members=True,
        overall=lambda estimate, X_val, y_val: ensemble_ll(
            estimate, data.X, data.y, X_test, y_test, X_val, y_val, data.y_scale),
        checkpoint=plan,
    )
    values = point_values(result.estimate, names)
    check_finite_fit(result.history["loss"], values)
    history = dict(result.history)
    history["member_loss"] = history["loss"]
    history["loss"] = np.mean(history["member_loss"], axis=0)
    info = _info(options, data, started, result.num_devices)
    info["num_members"] = size
    posterior = Posterior(
        model=model, method="ensemble",
        draws={name: value[None] for name, value in values.items()},
        standardizer=data.standardizer, history=history, info=info,
    )
    warn_if_unconverged(posterior, options)
    return posterior


def _info(options: OptimOptions, data: FitData, started: float, num_devices: int) -> dict:
    schedule = options.lr_schedule if isinstance(options.lr_schedule, str) else "custom"
    return {"fit_seconds": time.perf_counter() - started, "num_steps": options.num_steps,
            "learning_rate": options.learning_rate, "lr_schedule": schedule,
            "ema_decay": options.ema_decay, "num_rows": data.num_rows,
            "num_devices": num_devices, **validation_info(options, data)}
