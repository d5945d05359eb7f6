"""Variational inference (``method="svi"``): NumPyro autoguides trained on the ELBO.

Guides, from cheapest to most flexible:

* ``"normal"``: mean-field Gaussian (AutoNormal), one location and scale per weight;
* ``"lowrank"``: Gaussian with low-rank plus diagonal covariance
  (AutoLowRankMultivariateNormal);
* ``"mvn"``: full-covariance Gaussian (AutoMultivariateNormal); O(W^2) parameters for W
  weights, so for small networks;
* ``"flow"``: inverse autoregressive flows followed by a diagonal affine map (see
  :class:`AffineIAFGuide`).

Every guide starts centred on the starting point (the data-dependent initialisation, or a
MAP fit passed as ``init=``) with small scales, so the first steps do not blow up a network
that already fits. Large data sets use minibatches through the model's data plate
(``subsample_size``), which rescales the likelihood by N / batch size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.flows import InverseAutoregressiveTransform
from numpyro.distributions.transforms import (
    AffineTransform,
    IndependentTransform,
    PermuteTransform,
    biject_to,
)
from numpyro.handlers import seed
from numpyro.infer import SVI, TraceMeanField_ELBO
from numpyro.infer.autoguide import (
    AutoContinuous,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density
from numpyro.nn import AutoregressiveNN

from bayes_mdn._validation import check_choice, check_positive_float, check_positive_int
from bayes_mdn.inference._checkpoint import checkpoint_plan
from bayes_mdn.inference._data import (
    NUM_PARETO_DRAWS,
    FitData,
    draws_from_init,
    initial_params,
    pareto_batch_size,
    predictive_log_likelihood,
)
from bayes_mdn.inference._optim import (
    OptimOptions,
    OptimProgram,
    SortedSitesMixin,
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
from bayes_mdn.numerics import pareto_k
from bayes_mdn.posterior import Posterior

__all__ = ["GUIDES", "AffineIAFGuide", "SviOptions", "fit_svi"]

PREFIX = "auto"
GUIDES = ("normal", "lowrank", "mvn", "flow")
#: Training rows used for the training-set curve of minibatch SVI (a fixed random subset).
MAX_TRAIN_EVAL_ROWS = 8192
#: Above this many training rows the Pareto k is not computed (``info["pareto_k"]`` is None):
#: it costs NUM_PARETO_DRAWS passes over the data (81 s at 1e6 rows, 15x a 1000-step
#: minibatch fit, in benchmarks/scale.py), and the variance of the log importance weights
#: grows with N, so for a network on that much data k is far above 0.7 whatever the guide.
MAX_PARETO_ROWS = 200_000


#: Factor on the autoregressive networks' outputs (shift and log-scale) in the flow guide.
#: Adam moves every weight by about the learning rate per step, so an output read from a
#: hidden layer of hundreds of units (one per latent) moved by several units of eps per
#: step at learning_rate 0.01 and the guide diverged (seed problem, n = 200: ELBO -5e7,
#: test log-likelihood -8.1); damped by 0.01 the ELBO rises steadily (-311 after 8000 steps).
FLOW_OUTPUT_SCALE = 0.01


def _damped(network):
    """`network` (x -> (shift, log_scale)) with both outputs scaled by FLOW_OUTPUT_SCALE."""
    def apply(x):
        shift, log_scale = network(x)
        return FLOW_OUTPUT_SCALE * shift, FLOW_OUTPUT_SCALE * log_scale

    return apply


class AffineIAFGuide(AutoContinuous):
    """Normalising-flow guide: ``z = loc + scale * f(eps)``, ``eps ~ N(0, I)``.

    ``f`` is `num_flows` inverse autoregressive flows (with a reversing permutation between
    them). Putting the learnable diagonal affine map *after* the flows, with ``loc`` at the
    starting point and ``scale`` at `init_scale`, and starting every flow as the identity
    (zero output layer, set by ``fit``), starts the guide as a narrow Gaussian around a good
    network, which numpyro's AutoIAFNormal (standard-normal scale around zero) does not
    allow.

    Parameters
    ----------
    model : callable
    prefix : str
    init_loc_fn : callable
    init_scale : float
    num_flows : int
    hidden_dims : list of int, optional
        Hidden widths of each autoregressive network (default: one layer of the latent size).
    """

    scale_constraint = constraints.softplus_positive

    def __init__(self, model, *, prefix: str = PREFIX, init_loc_fn=init_to_uniform,
                 init_scale: float = 0.01, num_flows: int = 2,
                 hidden_dims: list[int] | None = None) -> None:
        self._init_scale = init_scale
        self.num_flows = num_flows
        self._hidden_dims = hidden_dims
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _get_posterior(self):
        size = self.latent_dim
        hidden = [size] if self._hidden_dims is None else list(self._hidden_dims)
        flows = []
        for index in range(self.num_flows):
            if index > 0:
                flows.append(PermuteTransform(jnp.arange(size)[::-1]))
            network = AutoregressiveNN(size, hidden, permutation=jnp.arange(size))
            module = numpyro.module(f"{self.prefix}_arn__{index}", network, (size,))
            flows.append(InverseAutoregressiveTransform(_damped(module)))
        loc = numpyro.param(f"{self.prefix}_loc", self._init_latent)
        scale = numpyro.param(f"{self.prefix}_scale", jnp.full(size, self._init_scale),
                              constraint=self.scale_constraint)
        flows.append(IndependentTransform(AffineTransform(loc, scale), 1))
        return dist.TransformedDistribution(self.get_base_dist(), flows)

    def get_base_dist(self):
        return dist.Normal(jnp.zeros(self.latent_dim), 1).to_event(1)


class SortedTraceMeanFieldELBO(SortedSitesMixin, TraceMeanField_ELBO):
    """numpyro's TraceMeanField_ELBO (the KL term in closed form for every site whose
    guide and prior pair has one registered, e.g. Normal-Normal; Monte Carlo otherwise),
    summed in sorted site order (see :class:`~bayes_mdn.inference._optim.SortedSitesMixin`).
    The mean-field guide's default: the closed-form KL removes most of the gradient noise of
    the prior term, which otherwise dominates for the many weights the data barely
    constrain."""


@dataclass(frozen=True)
class SviOptions(OptimOptions):
    """Options of ``method="svi"`` (plus those of :class:`OptimOptions`).

    Attributes
    ----------
    guide : str
        ``"normal"``, ``"lowrank"``, ``"mvn"`` or ``"flow"``.
    init : Posterior, optional
        A MAP fit of the same model to start from (its network becomes the guide's centre).
    init_scale : float
        Initial standard deviation of the guide around its centre (standardised units).
    num_particles : int
        Monte Carlo samples per ELBO gradient.
    subsample_size : int, optional
        Minibatch size; None uses all rows every step.
    rank : int, optional
        Rank of the ``"lowrank"`` covariance (default: about sqrt of the number of weights).
    num_flows : int
        Number of autoregressive flows of the ``"flow"`` guide.
    num_draws : int
        Posterior draws taken from the fitted guide (the Posterior's S).
    num_eval_draws : int
        Guide draws used for the train/test log-likelihood curves during the fit. Each of
        the ``num_evaluations`` points of the curves costs this many forward passes over the
        data; the default 4 keeps the curves to about 4 % of a fit's time (16 cost about
        16 % of a 1000-step fit at 4000 rows, in ``benchmarks/speed_seed.py``).
    """

    learning_rate: float = 0.005
    guide: str = "normal"
    init: Any = None
    init_scale: float = 0.01
    num_particles: int = 1
    subsample_size: int | None = None
    rank: int | None = None
    num_flows: int = 2
    num_draws: int = 1000
    num_eval_draws: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "guide", check_choice(self.guide, "guide", GUIDES))
        check_positive_float(self.init_scale, "init_scale")
        check_positive_int(self.num_particles, "num_particles")
        if self.subsample_size is not None:
            check_positive_int(self.subsample_size, "subsample_size")
        if self.rank is not None:
            check_positive_int(self.rank, "rank")
        check_positive_int(self.num_flows, "num_flows")
        check_positive_int(self.num_draws, "num_draws")
        check_positive_int(self.num_eval_draws, "num_eval_draws")


def _make_guide(model_fn, options_key: tuple):
    guide_name, init_scale, rank, num_flows = options_key
    if guide_name == "normal":
        return AutoNormal(model_fn, prefix=PREFIX, init_scale=init_scale)
    if guide_name == "lowrank":
        return AutoLowRankMultivariateNormal(model_fn, prefix=PREFIX, init_scale=init_scale,
                                             rank=rank)
    if guide_name == "mvn":
        return AutoMultivariateNormal(model_fn, prefix=PREFIX, init_scale=init_scale)
    return AffineIAFGuide(model_fn, prefix=PREFIX, init_scale=init_scale, num_flows=num_flows)


@dataclass(frozen=True, eq=False)
class _SviKernels:
    program: OptimProgram
    names: tuple[str, ...]
    guide: Any
    sample: Any
    importance_log_weights: Any


@lru_cache(maxsize=16)
def _svi_kernels(model: MDN, data_shape: tuple[int, int, int], optimizer_key: tuple,
                 guide_key: tuple, num_particles: int, subsample_size: int | None,
                 num_eval_draws: int, num_draws: int) -> _SviKernels:
    """Everything compiled for one SVI configuration, built once and cached."""
    _, num_features, num_outputs = data_shape
    names = tuple(model.latent_shapes(num_features, num_outputs))
    model_fn = partial_model(model.numpyro_model, subsample_size)
    guide = _make_guide(model_fn, guide_key)
    elbo = SortedTraceMeanFieldELBO if guide_key[0] == "normal" else SortedTraceELBO
    svi = SVI(model_fn, guide, make_optimizer(*optimizer_key), elbo(num_particles=num_particles))

    def guide_draws(params, key, X, y_scale, count):
        samples = guide.sample_posterior(key, params, X, None, y_scale=y_scale,
                                         sample_shape=(count,))
        return {name: samples[name] for name in names}

    def evaluate(estimate, key, X, y, y_scale):
        draws = guide_draws(estimate, key, X, y_scale, num_eval_draws)
        return predictive_log_likelihood(model, draws, X, y, y_scale)

    @jax.jit
    def sample(params, key, X, y_scale):
        return guide_draws(params, key, X, y_scale, num_draws)

    pareto_batch = pareto_batch_size(model, data_shape)

    @jax.jit
    def importance_log_weights(params, key, X, y, y_scale):
        """``log p(theta, y) - log q(theta)`` on all rows for NUM_PARETO_DRAWS guide draws."""
        def one(draw_key):
            log_q, trace = log_density(seed(guide, draw_key), (X, None), {"y_scale": y_scale},
                                       params)
            values = {name: trace[name]["value"] for name in names}
            log_p, _ = log_density(model.numpyro_model, (X, y), {"y_scale": y_scale}, values)
            return log_p - log_q

        return jax.lax.map(one, jax.random.split(key, NUM_PARETO_DRAWS), batch_size=pareto_batch)

    return _SviKernels(build_program(svi, evaluate, subsample_size), names, guide, sample,
                       importance_log_weights)


def _unconstrained(model: MDN, data: FitData, values: dict[str, jax.Array]
                   ) -> dict[str, jax.Array]:
    """`values` of the latent sites in numpyro's unconstrained coordinates: a positive site
    (a hierarchical prior's scale, StudentT(df="global")'s df) must enter the guide as its
    logarithm, or it would start at exp(value). Real sites pass through unchanged (no model
    trace: that would cost an eager compilation per operation)."""
    _, num_features, num_outputs = data.shape
    priors = {**model.prior.latent_distributions(model.sites(num_features, num_outputs)),
              **model.family.latent_distributions(num_outputs)}
    return {name: biject_to(priors[name].support).inv(value) for name, value in values.items()}


def _guide_init_params(guide_name: str, values: dict[str, jax.Array], names: tuple[str, ...],
                       key: jax.Array, num_flows: int) -> dict[str, Any]:
    """Guide parameters centred on `values`, given in numpyro's unconstrained coordinates
    (the guides' own: a positive site enters as its logarithm)."""
    if guide_name == "normal":
        return {f"{name}_{PREFIX}_loc": values[name] for name in names}
    # AutoContinuous guides pack the latent sites in the order of the dict numpyro builds
    # their starting values in: a pytree, so sorted by name (not the model's order).
    packed = jnp.concatenate([jnp.ravel(values[name]) for name in sorted(names)])
    params = {f"{PREFIX}_loc": packed}
    if guide_name == "flow":
        params.update(_identity_flows(key, packed.shape[0], num_flows))
    return params


@partial(jax.jit, static_argnames=("size", "num_flows"))
def _identity_flows(key: jax.Array, size: int, num_flows: int) -> dict[str, Any]:
    """Autoregressive networks whose output layer is zero: every flow starts as the identity
    (mean 0, log-scale 0), so the guide starts exactly as ``loc + init_scale * eps``; the
    hidden layers keep their random initialisation so that gradients flow from step one."""
    init_network, _ = AutoregressiveNN(size, [size], permutation=jnp.arange(size))
    params = {}
    for index, flow_key in enumerate(jax.random.split(key, num_flows)):
        _, layers = init_network(flow_key, (size,))
        kernel, bias = layers[-1]
        params[f"{PREFIX}_arn__{index}$params"] = [
            *layers[:-1], (jnp.zeros_like(kernel), jnp.zeros_like(bias))]
    return params


def fit_svi(model: MDN, data: FitData, key: jax.Array, options: SviOptions) -> Posterior:
    started = time.perf_counter()
    plan = checkpoint_plan("svi", model, data, key, options, options.num_steps)
    subsample = options.subsample_size
    if subsample is not None and subsample >= data.num_rows:
        subsample = None  # a "minibatch" of every row is full-batch SVI
    guide_key = (options.guide, options.init_scale, options.rank, options.num_flows)
    kernels = _svi_kernels(model, data.shape, options.optimizer_key(), guide_key,
                           options.num_particles, subsample, options.num_eval_draws,
                           options.num_draws)
    init_key, svi_key, eval_key, draw_key = jax.random.split(key, 4)
    if options.init is None:
        start = initial_params(model, data, init_key)
    else:
        init_draws = draws_from_init(options.init, model, data)
        if next(iter(init_draws.values())).shape[0] != 1:
            raise ValueError("`init` for method='svi' must be a single-draw fit such as "
                             f"method='map'; got a {options.init.method!r} fit with "
                             f"{options.init.num_chains * options.init.num_draws} draws.")
        start = {name: value[0] for name, value in init_draws.items()}
    program = kernels.program
    start = _unconstrained(model, data, start)
    guide_params = _guide_init_params(options.guide, start, kernels.names, init_key,
                                      options.num_flows)
    state = program.init_state(svi_key, data.X, data.y, data.y_scale, guide_params)
    train_eval = None
    if subsample is not None and data.num_rows > MAX_TRAIN_EVAL_ROWS:
        # Floyd's sampling on the host: a permutation of all N rows to keep 8192 took 13 s
        # of an 18 s fit at N = 1e7 (benchmarks/scale.py).
        generator = np.random.default_rng(np.asarray(jax.random.key_data(eval_key)))
        rows = np.sort(generator.choice(data.num_rows, MAX_TRAIN_EVAL_ROWS, replace=False))
        train_eval = (data.X[rows], data.y[rows])
    result = run_blocks(program, state, options, data, method=f"svi-{options.guide}",
                        eval_key=eval_key, train_eval=train_eval, checkpoint=plan,
                        subsample_size=subsample)
    draws = kernels.sample(result.estimate, draw_key, data.X, data.y_scale)
    check_finite_fit(result.history["loss"], draws)
    # Reliability of the guide as a posterior approximation (PSIS k-hat; see diagnostics).
    k_hat = None
    if data.num_rows <= MAX_PARETO_ROWS:
        k_hat = pareto_k(kernels.importance_log_weights(
            result.estimate, jax.random.fold_in(draw_key, 1), data.X, data.y, data.y_scale))
    history = dict(result.history)
    history["elbo"] = -history["loss"]
    info = {"fit_seconds": time.perf_counter() - started, "guide": options.guide,
            "num_steps": options.num_steps, "learning_rate": options.learning_rate,
            "lr_schedule": options.lr_schedule if isinstance(options.lr_schedule, str)
            else "custom", "ema_decay": options.ema_decay,
            "num_particles": options.num_particles, "subsample_size": subsample,
            "init_scale": options.init_scale, "num_rows": data.num_rows,
            "num_devices": result.num_devices,
            "init": None if options.init is None else options.init.method,
            "pareto_k": k_hat, "pareto_k_draws": NUM_PARETO_DRAWS if k_hat is not None else 0}
    info.update(validation_info(options, data))
    posterior = Posterior(model=model, method="svi",
                          draws={name: value[None] for name, value in draws.items()},
                          standardizer=data.standardizer, history=history, info=info)
    warn_if_unconverged(posterior, options)
    return posterior
