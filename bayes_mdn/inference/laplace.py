"""Laplace approximation (``method="laplace"``): a Gaussian at the MAP estimate.

The posterior is approximated by ``N(theta_MAP, H^-1)`` with ``H`` the Hessian of the
negative log joint density at the MAP point: the distribution numpyro's
AutoLaplaceApproximation builds. It is computed here directly, as Hessian-vector products
over chunks of directions (bounded memory), so that a Hessian that is not positive
definite can be reported with its eigenvalues instead of silently collapsing the
approximation to the MAP point. ``hessian="fisher"`` swaps the likelihood's Hessian for its
Fisher information (``"empirical_fisher"``: the observed gradients' outer products),
positive semi-definite by construction. By default the draws move
only along the directions the data determine (``subspace="well_determined"``); the others
stay at the MAP point.
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
from numpyro.handlers import block
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_mdn._progress import progress_bar
from bayes_mdn._validation import check_choice, check_positive_int
from bayes_mdn.inference._data import (
    NUM_PARETO_DRAWS,
    FitData,
    draws_from_init,
    final_scores,
    pareto_batch_size,
    point_log_prob,
)
from bayes_mdn.inference._optim import OptimOptions
from bayes_mdn.inference.map import MapOptions, fit_map
from bayes_mdn.model import MDN
from bayes_mdn.numerics import pareto_k
from bayes_mdn.posterior import Posterior

__all__ = ["LaplaceOptions", "fit_laplace"]

#: Above this many weights the dense W x W Hessian is refused (memory and O(W^3) time).
MAX_PARAMETERS = 20_000
#: Hessian-vector products evaluated at once.
HVP_BATCH = 64
HESSIANS = ("exact", "fisher", "empirical_fisher")
#: Replicate data sets y ~ p(y | x, MAP) averaged for the Fisher information.
NUM_FISHER_REPLICATES = 8
PREDICTIVES = ("linearised", "sampled")
SUBSPACES = ("well_determined", "full")
#: A direction is well determined when the data supply at least this share of its
#: posterior precision (likelihood curvature >= the prior's: MacKay's lambda >= 1).
WELL_DETERMINED_DATA_SHARE = 0.5


@dataclass(frozen=True)
class LaplaceOptions(OptimOptions):
    """Options of ``method="laplace"``.

    Attributes
    ----------
    init : Posterior, optional
        The MAP fit to expand around. Without one, a MAP fit is run first with the
        optimisation options below (those of :class:`OptimOptions`).
    num_draws : int
        Draws from the Gaussian approximation (the Posterior's S).
    hessian : str
        ``"exact"``: the Hessian of the negative log joint (AutoLaplaceApproximation's
        choice; needs a converged MAP point). ``"fisher"``: the prior's Hessian plus the
        Fisher information of the likelihood at the MAP point, ``sum_n E[g_n g_n^T]`` with
        ``g_n`` the gradient of ``log p(y_n | x_n)`` and the expectation over
        ``y_n ~ p(y | x_n, MAP)`` (Monte Carlo over ``NUM_FISHER_REPLICATES`` replicate
        data sets): positive semi-definite by construction and equal in expectation to the
        generalised Gauss-Newton matrix, the usual choice for neural networks when the exact
        Hessian is not (Daxberger et al., 2021, "Laplace Redux").
        ``"empirical_fisher"``: the same with the observed ``y_n``; cheaper, but it is
        not a curvature estimate and is poorly scaled away from a converged MAP point
        (Kunstner et al., 2019).
    predictive : str
        ``"linearised"`` (default): predictions from a draw use the network linearised at
        the MAP point, ``f(map) + J (draw - map)`` (the "GLM predictive" of Immer et al.,
        2021), the Laplace approximation's own model, which keeps the MAP fit's accuracy
        where the data are dense and widens the predictive only along directions the data
        leave uncertain. ``"sampled"``: the network itself at each draw, which underfits
        badly for neural networks (draws off the MAP point in weight space land on poor
        functions).
    subspace : str
        ``"well_determined"`` (default): the Gaussian restricted to the directions the data
        determine, those in which the likelihood's curvature is at least the prior's
        (generalised eigenvectors of the likelihood and prior curvatures with eigenvalue
        >= 1: MacKay's (1992) well-determined parameters); the others stay at their MAP
        values. In a poorly determined direction the Gaussian's spread is the prior's, and
        a mixture network has many (components the fit does not use): their prior spread,
        pushed through the network, widens the predictive with no support from the data.
        Seed data, 4000 rows (``benchmarks/inference_seed.py``): test log-likelihood 0.025
        nats per point higher than ``"full"`` (343 of 1230 directions kept); 200 rows: no
        loss. This is Laplace on a subspace, as in subspace inference (Izmailov et al.,
        2019) and subnetwork Laplace (Daxberger et al., 2021). ``"full"``: every direction
        (the textbook Laplace approximation, AutoLaplaceApproximation's).
        ``info["well_determined_directions"]`` counts the directions kept and
        ``info["effective_num_parameters"]`` is MacKay's gamma, the data's share of the
        precision summed over all directions.
    """

    init: Any = None
    num_draws: int = 1000
    hessian: str = "exact"
    predictive: str = "linearised"
    subspace: str = "well_determined"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.num_draws, "num_draws")
        object.__setattr__(self, "hessian", check_choice(self.hessian, "hessian", HESSIANS))
        object.__setattr__(self, "predictive",
                           check_choice(self.predictive, "predictive", PREDICTIVES))
        object.__setattr__(self, "subspace",
                           check_choice(self.subspace, "subspace", SUBSPACES))


def _replicate(model: MDN, log_weights: jax.Array, params: dict[str, jax.Array],
               key: jax.Array) -> jax.Array:
    """One replicate target per row, (N, D), drawn from the mixture (N, K) at the MAP point."""
    component_key, value_key = jax.random.split(key)
    component = jax.random.categorical(component_key, log_weights)  # (N,)
    values = model.family.distribution(params).sample(value_key)  # (N, K, D)
    return jnp.take_along_axis(values, component[:, None, None], axis=1)[:, 0]


def roundoff_floor(eigenvalues: jax.Array) -> jax.Array:
    """Eigenvalue magnitude below which the sign of a float eigenvalue of a W x W symmetric
    matrix is round-off: ``sqrt(W) * eps * max|eigenvalue|`` (the typical, not worst-case,
    error of a backward-stable eigensolver)."""
    size = eigenvalues.shape[-1]
    return math.sqrt(size) * jnp.finfo(eigenvalues.dtype).eps * jnp.max(jnp.abs(eigenvalues))


@lru_cache(maxsize=8)
def _laplace_kernel(model: MDN, data_shape: tuple[int, int, int], num_draws: int,
                    hessian: str, subspace: str):
    _, num_features, num_outputs = data_shape
    shapes = model.latent_shapes(num_features, num_outputs)
    sizes = [math.prod(shape) for shape in shapes.values()]
    offsets = np.cumsum([0, *sizes])

    def unravel(flat):
        return {name: flat[start:stop].reshape(shape) for (name, shape), start, stop
                in zip(shapes.items(), offsets[:-1], offsets[1:], strict=True)}

    pareto_batch = pareto_batch_size(model, data_shape)

    @jax.jit
    def kernel(values, key, X, y, y_scale):
        key, fisher_key = jax.random.split(key)
        # The Gaussian lives in numpyro's unconstrained coordinates (the identity for real
        # sites; the log for positive scales of hierarchical priors), so every draw is valid.
        args, kwargs = (X, y), {"y_scale": y_scale}
        unconstrained = unconstrain_fn(model.numpyro_model, args, kwargs, dict(values))
        centre = jnp.concatenate([jnp.ravel(unconstrained[name]) for name in shapes])

        def potential(flat):
            return potential_energy(model.numpyro_model, args, kwargs, unravel(flat))

        def constrain(flat):
            return constrain_fn(model.numpyro_model, args, kwargs, unravel(flat))

        # The prior and log-Jacobian alone: the model with its likelihood site hidden (the
        # network it would feed is then dead code, which keeps the compiled program small).
        prior_model = block(model.numpyro_model, hide=["y"])

        def prior_potential(flat):
            return potential_energy(prior_model, args, kwargs, unravel(flat))

        gradient = jax.grad(potential)

        def hessian_of(function):  # the W x W Hessian, HVP_BATCH directions at a time
            def hvp(direction):
                return jax.jvp(jax.grad(function), (centre,), (direction,))[1]

            basis = jnp.eye(centre.shape[0], dtype=centre.dtype)
            return jax.lax.map(hvp, basis, batch_size=HVP_BATCH)

        # Needed on its own as well: the prior's share of the precision decides which
        # directions are well determined.
        prior_precision = hessian_of(prior_potential)
        if hessian == "exact":
            precision = hessian_of(potential)
        else:
            precision = prior_precision

            def row_log_likelihood(flat, x_row, y_row):
                return point_log_prob(model, constrain(flat), x_row[None], y_row[None],
                                      y_scale)[0]

            def outer_gradients(targets):  # sum_n g_n g_n^T, g_n = grad log p(y_n | x_n)
                per_row = jax.vmap(jax.grad(row_log_likelihood), in_axes=(None, 0, 0))(
                    centre, X, targets)  # (N, W)
                return per_row.T @ per_row

            if hessian == "empirical_fisher":
                precision = precision + outer_gradients(y)
            else:  # Fisher information: E over y ~ p(y | x, MAP), by Monte Carlo
                log_weights, params = model.mixture(values, X, y_scale)

                def add_replicate(index, total):
                    return total + outer_gradients(_replicate(
                        model, log_weights, params, jax.random.fold_in(fisher_key, index)))

                fisher = jax.lax.fori_loop(0, NUM_FISHER_REPLICATES, add_replicate,
                                           jnp.zeros_like(precision))
                precision = precision + fisher / NUM_FISHER_REPLICATES
        precision = 0.5 * (precision + precision.T)
        # Jacobi scaling (unit diagonal) before the eigendecomposition: the Fisher term
        # spans many orders of magnitude (its largest eigenvalue ~1e6 at a few thousand
        # rows), and float32 eigenvalues carry an error of about eps * max|eigenvalue|, so
        # unscaled the prior-dominated directions drown in round-off. Congruence keeps the
        # signs of the eigenvalues (Sylvester), so the positive-definiteness check holds.
        diagonal = jnp.diagonal(precision)
        scale = jnp.where(diagonal > 0, jax.lax.rsqrt(jnp.abs(diagonal)), 1.0)
        eigenvalues, eigenvectors = jnp.linalg.eigh(precision * scale[:, None] * scale)
        floor = roundoff_floor(eigenvalues)
        # Positive-definite in exact arithmetic (the Fisher variants with a log-concave
        # prior): eigenvalues within round-off of zero are clipped to the round-off level;
        # clearly negative ones are refused on the host.
        kept = jnp.maximum(eigenvalues, floor)
        # precision = S V diag(kept) V^T S with S = diag(scale), so
        # z = centre + S V diag(kept^-1/2) eps has covariance precision^-1.
        root_covariance = scale[:, None] * eigenvectors / jnp.sqrt(kept)  # (W, W)
        # The prior's share of the precision, direction by direction: the eigenvalues rho of
        # R^T P R with R the root above (R^T precision R = I), so in the eigenbasis U the
        # precision splits into prior rho and data 1 - rho (generalised eigenvectors of the
        # data and prior curvatures, lambda = (1 - rho) / rho). Round-off directions (the
        # clipped ones) get a huge rho and count as prior-dominated.
        prior_share = root_covariance.T @ (0.5 * (prior_precision + prior_precision.T)
                                          ) @ root_covariance
        rho, rotation = jnp.linalg.eigh(0.5 * (prior_share + prior_share.T))
        data_share = jnp.clip(1.0 - rho, 0.0, 1.0)
        well_determined = rho <= 1.0 - WELL_DETERMINED_DATA_SHARE
        draw_root = root_covariance
        if subspace == "well_determined":
            draw_root = root_covariance @ (rotation * well_determined)  # (W, W), rank r
        noise = jax.random.normal(key, (num_draws, centre.shape[0]), centre.dtype)
        draws = jax.vmap(constrain)(centre + noise @ draw_root.T)
        # Importance log-weights log p(z, y) - log q(z) of separate draws from the full
        # Gaussian (the subspace's has no density in W dimensions), for Pareto k.
        extra = jax.random.normal(jax.random.fold_in(key, 1),
                                  (NUM_PARETO_DRAWS, centre.shape[0]), centre.dtype)
        extra_z = centre + extra @ root_covariance.T
        log_q = (0.5 * jnp.sum(jnp.log(kept)) - jnp.sum(jnp.log(scale))
                 - 0.5 * jnp.sum(extra**2, axis=1)
                 - 0.5 * centre.shape[0] * jnp.log(2 * jnp.pi))
        log_p = -jax.lax.map(potential, extra_z, batch_size=pareto_batch)
        # The unscaled spectrum, for the report (info and the refusal message).
        spectrum = jnp.linalg.eigvalsh(precision)
        return (eigenvalues, spectrum, jnp.linalg.norm(gradient(centre)), draws,
                log_p - log_q, jnp.sum(well_determined), jnp.sum(data_share))

    return kernel


def fit_laplace(model: MDN, data: FitData, key: jax.Array, options: LaplaceOptions
                ) -> Posterior:
    started = time.perf_counter()
    num_weights = model.num_parameters(data.shape[1], data.shape[2])
    if num_weights > MAX_PARAMETERS:
        raise ValueError(
            f"method='laplace' builds a dense {num_weights} x {num_weights} Hessian; above "
            f"{MAX_PARAMETERS} weights use method='svi' with guide='lowrank' instead."
        )
    map_key, draw_key = jax.random.split(key)
    if options.init is None:
        # The MAP stage shows its own bar (steps); the Hessian stage is one compiled call.
        map_fields = {name: getattr(options, name) for name in MapOptions.__dataclass_fields__}
        map_fit = fit_map(model, data, map_key, MapOptions(**map_fields))
    else:
        map_fit = options.init
    bar = progress_bar(1, desc=f"laplace ({options.hessian} Hessian)",
                       progress=options.progress, unit="stage")
    init_draws = draws_from_init(map_fit, model, data)
    if next(iter(init_draws.values())).shape[0] != 1:
        raise ValueError("`init` for method='laplace' must be a single-draw fit such as "
                         f"method='map'; got a {map_fit.method!r} fit.")
    centre = {name: value[0] for name, value in init_draws.items()}
    kernel = _laplace_kernel(model, data.shape, options.num_draws, options.hessian,
                             options.subspace)
    with bar:
        (eigenvalues, spectrum, gradient_norm, draws, log_weights, num_well_determined,
         effective_num_parameters) = jax.device_get(
            kernel(centre, draw_key, data.X, data.y, data.y_scale))
        bar.update(1)
    # Signs from the Jacobi-scaled matrix (accurate); magnitudes reported unscaled.
    smallest = float(spectrum[0])
    floor = float(roundoff_floor(eigenvalues))
    # The Fisher variants are positive definite in exact arithmetic for a log-concave prior;
    # a clearly negative eigenvalue there means the prior term is not (e.g. a hierarchical
    # prior's scale sites).
    limit = floor if options.hessian == "exact" else -floor
    if not np.isfinite(eigenvalues).all() or eigenvalues[0] <= limit:
        num_bad = int(np.sum(~(eigenvalues > floor)))
        raise ValueError(
            f"The Hessian of the negative log posterior at the MAP point is not positive "
            f"definite ({num_bad} of {eigenvalues.size} eigenvalues are not clearly positive "
            f"after scaling to a unit diagonal; smallest unscaled eigenvalue "
            f"{smallest:.3g}; gradient norm {float(gradient_norm):.3g}), so the MAP point is "
            "not a strict local maximum and the Laplace approximation does not exist there. "
            "Use hessian='fisher' (positive definite for log-concave priors), run MAP longer "
            "(more `num_steps`, lr_schedule='cosine', ema_decay=0) so that it converges, or "
            "use method='svi' (guide='lowrank' or 'mvn'), which needs no Hessian."
        )
    # The MAP stage's curves are kept under "map_*"; the unprefixed entries score the
    # Laplace posterior itself.
    history = {f"map_{name}": value for name, value in map_fit.history.items()}
    laplace_draws = {name: value[None] for name, value in draws.items()}
    linearised_at = None
    if options.predictive == "linearised":
        network_sites = model.prior.latent_distributions(model.sites(*data.shape[1:]))
        linearised_at = {name: centre[name] for name in network_sites}
    posterior = Posterior(model=model, method="laplace", draws=laplace_draws,
                          standardizer=data.standardizer, linearised_at=linearised_at)
    scored = {name: value[None] for name, value in posterior.prediction_draws().items()}
    history.update(final_scores(model, data, scored))
    info = {"fit_seconds": time.perf_counter() - started, "num_rows": data.num_rows,
            "hessian": options.hessian, "predictive": options.predictive,
            "subspace": options.subspace, "num_parameters": int(eigenvalues.size),
            "well_determined_directions": int(num_well_determined),
            "effective_num_parameters": float(effective_num_parameters),
            "hessian_min_eigenvalue": smallest,
            "hessian_max_eigenvalue": float(spectrum[-1]),
            "hessian_eigenvalues_clipped": int(np.sum(eigenvalues < floor)),
            "map_gradient_norm": float(gradient_norm),
            "map_fit_seconds": map_fit.info.get("fit_seconds"),
            # Of the full Gaussian N(MAP, precision^-1), whichever subspace is drawn from.
            "pareto_k": pareto_k(log_weights), "pareto_k_draws": NUM_PARETO_DRAWS}
    return dataclasses.replace(posterior, history=history, info=info)
