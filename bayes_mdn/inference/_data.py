"""What every inference method shares: validated, standardised data (optionally laid out
over several devices), the data-dependent starting point, and log-likelihood evaluation of
one or several parameter draws."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bayes_mdn import network
from bayes_mdn._validation import (
    as_features,
    as_targets,
    check_min_rows,
    check_not_constant,
    check_same_rows,
)
from bayes_mdn.model import (
    MDN,
    mean_log_likelihood,
    point_log_prob,
    predictive_log_likelihood,
)

# The likelihood lives in the model; re-exported here for the methods that import it from here.
from bayes_mdn.numerics import reference_indices
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.predictive._evaluator import draw_batch_size, latent_width
from bayes_mdn.scaling import Standardizer

__all__ = ["FitData", "ShardedRows", "check_shard_data", "initial_params",
           "mean_log_likelihood", "point_log_prob", "predictive_log_likelihood", "prepare_data",
           "require_proper_prior", "shard_devices", "shard_rows", "with_reference_points"]

#: Name of the device-mesh axis the training rows are sharded over.
ROW_AXIS = "rows"


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

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, P, D): what compiled programs are specialised on."""
        return (int(self.X.shape[0]), int(self.X.shape[1]), int(self.y.shape[1]))

    @property
    def has_test(self) -> bool:
        return self.X_test is not None

    def test_or_placeholder(self) -> tuple[jax.Array, jax.Array]:
        """Held-out data, or one training row so compiled programs keep one signature."""
        if self.has_test:
            return self.X_test, self.y_test
        return self.X[:1], self.y[:1]


def prepare_data(model: MDN, X: Any, y: Any, X_test: Any = None, y_test: Any = None) -> FitData:
    """Validate and standardise training data (and held-out data, if given).

    Raises
    ------
    ValueError, TypeError
        For anything :mod:`bayes_mdn._validation` rejects, or a y outside the family's support.
    """
    X_host = as_features(X, "X", keep_float32=True)
    y_host = as_targets(y, "y", keep_float32=True)
    check_same_rows(X_host, y_host)
    check_min_rows(X_host)
    # Support (and output count) first: the sites' shapes depend on D being valid.
    model.family.check_support(y_host, "y")
    if model.family.standardize_y:
        check_not_constant(y_host)
    model.prior.check_sites(model.sites(X_host.shape[1], y_host.shape[1]))
    standardizer = Standardizer.fit(X_host, y_host, standardize_y=model.family.standardize_y)
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both `X_test` and `y_test` to record held-out log-likelihood.")
    X_test_std = y_test_std = None
    if X_test is not None:
        X_test_host = as_features(X_test, "X_test", num_features=X_host.shape[1],
                                  keep_float32=True)
        y_test_host = as_targets(y_test, "y_test", num_outputs=y_host.shape[1],
                                 keep_float32=True)
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


def check_shard_data(value: Any) -> bool | str:
    """Validate the ``shard_data`` option: True, False or ``"auto"``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        if value.lower() == "auto":
            return "auto"
        raise ValueError(f"`shard_data` must be True, False or 'auto'; got {value!r}.")
    raise TypeError(f"`shard_data` must be True, False or 'auto'; got {value!r} "
                    f"({type(value).__name__}).")


def shard_devices(shard_data: bool | str, *, full_batch: bool = True) -> list | None:
    """The devices to shard the training rows over, or None to keep them on one device.

    Parameters
    ----------
    shard_data : bool or "auto"
        True: every device (``jax.devices()``: under ``jax.distributed``, every process's).
        ``"auto"``: the same when there are at least two devices and the fit is full-batch.
    full_batch : bool
        False for minibatch optimisation, whose random row subsets cannot be sharded.

    Raises
    ------
    ValueError
        For ``shard_data=True`` with minibatches.
    """
    if shard_data is False:
        return None
    if not full_batch:
        if shard_data == "auto":
            return None
        raise ValueError("`shard_data=True` needs full-batch optimisation: every step must "
                         "see every row. Drop `subsample_size`, or use shard_data=False.")
    devices = jax.devices()
    if shard_data == "auto" and len(devices) < 2:
        return None
    return devices


@dataclass(frozen=True, eq=False)
class ShardedRows:
    """Training rows laid out over a one-dimensional mesh of devices (data parallelism).

    The rows are split evenly over the mesh axis ``"rows"``; when N is not a multiple of
    the device count, copies of the first rows pad it out, and `row_mask` marks them so
    that the likelihood leaves them out (see :func:`bayes_mdn.inference._optim.row_masked`).
    A compiled step given these arrays and replicated parameters runs on every device's
    share of the rows, XLA summing the log-likelihood (and gradient) across devices.

    Attributes
    ----------
    mesh : jax.sharding.Mesh
    X, y : Array, shapes (N', P) and (N', D)
        Standardised rows, N' = N + `num_padding`, sharded over rows.
    row_mask : Array of bool, shape (N',), or None
        False on the padding rows; None when there are none.
    num_padding : int
    """

    mesh: Mesh
    X: jax.Array
    y: jax.Array
    row_mask: jax.Array | None
    num_padding: int

    @property
    def num_devices(self) -> int:
        return int(self.mesh.size)

    def replicate(self, tree: Any) -> Any:
        """Every array of `tree` replicated on every device of the mesh."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        several_processes = jax.process_count() > 1

        def place(value):
            if not several_processes:
                return jax.device_put(value, replicated)
            # Across processes, device_put takes host values (the same on every process),
            # not arrays committed to one process's device; PRNG keys go as their data.
            if jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key):
                data = jax.device_put(np.asarray(jax.random.key_data(value)), replicated)
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
            return jax.device_put(np.asarray(value), replicated)

        return jax.tree.map(place, tree)


def shard_rows(data: FitData, devices: list) -> ShardedRows:
    """Lay the training rows of `data` out over a one-dimensional mesh of `devices`.

    Every process must call this with the same data (each keeps only its devices' rows).
    """
    mesh = Mesh(np.asarray(devices), (ROW_AXIS,))
    num_rows = data.num_rows
    num_padding = -num_rows % len(devices)
    rows = np.concatenate([np.arange(num_rows), np.arange(num_padding) % num_rows])
    sharding = NamedSharding(mesh, PartitionSpec(ROW_AXIS))

    def place(host: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    X, y = (place(np.asarray(value)[rows]) for value in (data.X, data.y))
    row_mask = place(np.arange(len(rows)) < num_rows) if num_padding else None
    return ShardedRows(mesh=mesh, X=X, y=y, row_mask=row_mask, num_padding=num_padding)


def initial_params(model: MDN, data: FitData, key: jax.Array) -> dict[str, jax.Array]:
    """Data-dependent starting point: spread component locations, near-uniform weights.

    Returns one value per latent site (see ``MDN.latent_shapes``). A key array of shape (E,)
    gives E independent starting points, each site (E, ...).
    """
    num_features, num_outputs = data.X.shape[1], data.y.shape[1]
    head_bias = {"logits": np.zeros(model.num_components)}
    head_bias.update(model.family.initial_head_bias(np.asarray(data.y), model.num_components))
    starter = _starter(model, num_features, num_outputs, np.dtype(data.X.dtype), key.ndim == 1)
    return starter(key, {name: jnp.asarray(bias, data.X.dtype) for name, bias in head_bias.items()})


@lru_cache(maxsize=32)
def _starter(model: MDN, num_features: int, num_outputs: int, dtype: np.dtype, batched: bool):
    """The starting point as one compiled program (eagerly, each small op would compile on
    its own, ~0.1 s each), cached per model and shape; vmapped over keys when `batched`."""
    layout = model.layout(num_features, num_outputs)

    def start(key, head_bias):
        weights = network.init_params(key, layout, head_bias, dtype=dtype)
        if model.network is not None:
            feature_key = jax.random.fold_in(key, 1)
            weights.update(model.network.init(feature_key, num_features, dtype))
        return model.initial_latents(weights, num_features, num_outputs)

    return jax.jit(jax.vmap(start, in_axes=(0, None)) if batched else start)


#: Posterior draws whose importance weights give the Pareto k of an SVI or Laplace fit
#: (``info["pareto_k"]``).
NUM_PARETO_DRAWS = 200
#: Bound on the (row, unit) terms of the draws evaluated at once for the Pareto k.
PARETO_BATCH_ELEMENTS = 2**22


def pareto_batch_size(model: MDN, data_shape: tuple[int, int, int]) -> int:
    """Draws evaluated at once (``lax.map`` batch) for the Pareto k over all N rows: as many
    as keep about PARETO_BATCH_ELEMENTS (row, widest layer) terms alive, at least one."""
    num_rows, num_features, num_outputs = data_shape
    # The predictive's memory model: K x D terms or the widest layer, a Flax/Equinox
    # feature network's own layers included.
    width = latent_width(model, num_features, num_outputs, jnp.result_type(float))
    per_draw = max(model.num_components * num_outputs, width, 1)
    return draw_batch_size(num_rows, NUM_PARETO_DRAWS, per_draw, PARETO_BATCH_ELEMENTS)


def draws_from_init(init: Any, model: MDN, data: FitData) -> dict[str, jax.Array]:
    """The draws of a fitted Posterior passed as ``init=``, flattened to (C * S, ...).

    Raises
    ------
    TypeError
        If `init` is not a Posterior.
    ValueError
        If it was fitted with another model or another number of features or outputs.
    """
    if not isinstance(init, Posterior):
        raise TypeError(
            f"`init` must be a fitted bayes_mdn.Posterior (e.g. from method='map'); got "
            f"{type(init).__name__}."
        )
    if init.model != model:
        raise ValueError(
            "`init` was fitted with a different MDN specification; fit the same model "
            f"(got {init.model} and {model})."
        )
    _, num_features, num_outputs = data.shape
    if (init.num_features, init.num_outputs) != (num_features, num_outputs):
        raise ValueError(
            f"`init` was fitted with {init.num_features} features and {init.num_outputs} "
            f"outputs; these data have {num_features} and {num_outputs}."
        )
    return {name: jnp.asarray(value, data.X.dtype) for name, value in init.flat_draws().items()}


#: Draws used to score a sampled posterior on the training (and held-out) data at the end of
#: a fit: bounded cost, and ample for a mean log-likelihood.
MAX_SCORE_DRAWS = 256


def _score(model: MDN, standardizer: Standardizer, draws: dict[str, jax.Array], X_std: Any,
           y_std: Any) -> float:
    """Mean log posterior-predictive density per row, original units: the predictive's
    ``log_prob`` (chunked by its memory model, which counts every layer's width)."""
    # On the host first: draws and rows may be laid out over several devices (sharded
    # chains or rows); the predictive moves them chunk by chunk to the default device.
    pred = PredictiveMixture(model=model, standardizer=standardizer, X_std=np.asarray(X_std),
                             draws={name: np.asarray(value) for name, value in draws.items()})
    y = (np.asarray(y_std, np.float64) * np.asarray(standardizer.y_scale, np.float64)
         + np.asarray(standardizer.y_shift, np.float64))
    return float(np.mean(pred.log_prob(y)))


def final_scores(model: MDN, data: FitData, draws: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    """Posterior-predictive log-likelihood per row (original units) on the training data and,
    if given, the held-out data, as one-entry history arrays.

    Parameters
    ----------
    draws : dict of str to Array
        Each site (C, S, ...); at most ``MAX_SCORE_DRAWS`` evenly spaced draws are used.
    """
    flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in draws.items()}
    total = next(iter(flat.values())).shape[0]
    index = np.linspace(0, total - 1, min(total, MAX_SCORE_DRAWS)).round().astype(int)
    flat = {name: value[index] for name, value in flat.items()}
    standardizer = data.standardizer
    scores = {"train_log_likelihood": _score(model, standardizer, flat, data.X, data.y)}
    if data.has_test:
        scores["test_log_likelihood"] = _score(model, standardizer, flat, data.X_test,
                                               data.y_test)
    return {name: np.asarray([value]) for name, value in scores.items()}


def with_reference_points(posterior: Posterior, data: FitData) -> Posterior:
    """Record ``info["reference_X"]``/``["reference_y"]``: 32 training rows (original units)
    at which :mod:`bayes_mdn.diagnostics` evaluates function-space R-hat and ESS."""
    rows = reference_indices(data.X)
    standardizer = data.standardizer
    # Rows first, then float64: no float64 copy of the whole data.
    X_ref = np.asarray(np.asarray(data.X)[rows], np.float64) * standardizer.x_scale
    y_ref = np.asarray(np.asarray(data.y)[rows], np.float64) * standardizer.y_scale
    X_ref, y_ref = X_ref + standardizer.x_shift, y_ref + standardizer.y_shift
    info = {**posterior.info, "reference_X": X_ref.tolist(), "reference_y": y_ref.tolist()}
    return dataclasses.replace(posterior, info=info)


def require_proper_prior(model: MDN, data: FitData, method: str) -> None:
    """Refuse a flat (improper) prior for a method that integrates over the posterior."""
    _, num_features, num_outputs = data.shape
    latents = model.prior.latent_distributions(model.sites(num_features, num_outputs))
    improper = [name for name, prior in latents.items()
                if isinstance(prior, dist.ImproperUniform)]
    if improper:
        raise ValueError(
            f"method={method!r} integrates over the posterior and needs a proper prior, but "
            f"sites {improper} have a flat prior. Use e.g. bayes_mdn.priors.FanInNormal() for "
            "them, or method='map' for maximum likelihood."
        )
