"""Convergence and fit diagnostics that mean something for a mixture density network.

R-hat and ESS on raw network weights are meaningless: hidden units and mixture components
can be permuted (and tanh units sign-flipped) without changing the function, so chains that
sample the same posterior over functions look unmixed in weight space. Everything here is
computed on *function-space* quantities, invariant to those symmetries, at a fixed
reference set of M inputs (by default 32 training rows stored at fit time, evenly spread
along the inputs' first principal direction):

* ``log_density`` (C, S, M): each draw's log density of the reference targets, original
  units;
* ``quantiles`` (C, S, Q, M, D): each draw's mixture quantiles (levels 0.1, 0.5, 0.9);
* ``effective_components`` (C, S): ``exp(entropy)`` of the draw's mixing weights averaged
  over the reference inputs.

Their rank-normalised split R-hat and bulk/tail ESS (arviz), NUTS divergences and tree-depth
saturation, the trend of the optimisation objective (is the ELBO still rising?), the Pareto
k of variational and Laplace approximations (``info["pareto_k"]``, computed at the end of
the fit by PSIS on ``log p(theta, y) - log q(theta)``), and component collapse (effective
number of components, dead components, components stuck at the scale floor) are collected
by :func:`diagnose`, which emits a :class:`ConvergenceWarning` with advice for each problem.
:meth:`bayes_mdn.Posterior.summary` reports the same figures as text.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import xlogy

from bayes_mdn import numerics
from bayes_mdn._validation import as_features, as_targets, check_positive_int, check_same_rows
from bayes_mdn.numerics import (  # re-exported: the names were defined here before
    CONSTANT_LOG_WEIGHTS,  # noqa: F401
    MAX_REFERENCE_CANDIDATES,  # noqa: F401
    pareto_k,
    reference_indices,
    rhat_ess,
)
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS
from bayes_mdn.predictive._evaluator import draw_batch_size, map_draws, network_width
from bayes_mdn.predictive._roots import solve_increasing
from bayes_mdn.scaling import to_compute

if TYPE_CHECKING:
    import pandas

    from bayes_mdn.model import MDN
    from bayes_mdn.posterior import Posterior

__all__ = [
    "DEAD_WEIGHT",
    "MAX_PARETO_K",
    "MAX_RHAT",
    "MIN_ESS_PER_CHAIN",
    "QUANTILE_LEVELS",
    "REFERENCE_POINTS",
    "ConvergenceWarning",
    "Diagnostics",
    "Summary",
    "diagnose",
    "function_space_draws",
    "objective_trend",
    "pareto_k",
    "reference_indices",
]

#: Size of the reference set of inputs (defined in :mod:`bayes_mdn.numerics`).
REFERENCE_POINTS = numerics.REFERENCE_POINTS
#: Levels of the per-draw quantiles.
QUANTILE_LEVELS = (0.1, 0.5, 0.9)
#: R-hat above this means the chains have not mixed (Vehtari et al., 2021).
MAX_RHAT = 1.01
#: Bulk and tail ESS below this many per chain are too few for reliable estimates.
MIN_ESS_PER_CHAIN = 100
#: Pareto k above this: importance sampling (and the approximation) is unreliable.
MAX_PARETO_K = 0.7
#: A component whose weight stays below this at every reference input is dead.
DEAD_WEIGHT = 1e-3
#: A component scale within this relative distance of the family's floor is a floor hit.
SCALE_FLOOR_TOLERANCE = 0.01
#: Fraction of live component scales at the floor above which collapse is reported.
MAX_SCALE_FLOOR_FRACTION = 0.01
#: NUTS transitions at the maximum tree depth above this fraction are reported.
MAX_TREE_DEPTH_FRACTION = 0.1
#: The objective counts as still improving when the mean of its last 5 % of steps beats
#: the previous 5 % by more than this many standard errors and this much per data row.
TREND_WINDOW = 0.05
TREND_Z = 3.0
TREND_PER_ROW = 1e-3
#: Cap on the root-finder steps of the per-draw quantiles (Chandrupatla's method converges
#: to the predictive's tolerance in about 6-12; integer bisection needs log2 of the range).
QUANTILE_ITERATIONS = 40


class ConvergenceWarning(UserWarning):
    """A fit has not converged or is unreliable; the message says what to do about it."""


def _reference_data(posterior: Posterior, X: Any, y: Any, num_points: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference inputs (M, P) and targets (M, D) or None, in original units."""
    if X is None and y is not None:
        raise ValueError("`y` was given without `X`; pass the inputs X (N, P) of the same "
                         "rows as well.")
    if X is not None:
        X_host = as_features(X, "X", num_features=posterior.num_features)
        y_host = None
        if y is not None:
            y_host = as_targets(y, "y", num_outputs=posterior.num_outputs)
            check_same_rows(X_host, y_host)
            posterior.model.family.check_support(y_host, "y")
        rows = reference_indices(X_host, num_points)
        return X_host[rows], None if y_host is None else y_host[rows]
    if "reference_X" in posterior.info:
        X_host = np.asarray(posterior.info["reference_X"], np.float64)
        y_ref = posterior.info.get("reference_y")
        return X_host, None if y_ref is None else np.asarray(y_ref, np.float64)
    # A Posterior built by hand: inputs at normal quantiles of every standardised feature.
    normal = statistics.NormalDist()
    z = np.array([[normal.inv_cdf((index + 0.5) / num_points)] for index in range(num_points)])
    standardizer = posterior.standardizer
    return standardizer.x_shift + standardizer.x_scale * z, None


# --------------------------------------------------------------------------- per-draw kernel
def _scale_floor(model: MDN) -> float | None:
    """The scale (standardised units) at or below which a component sits on the floor."""
    floor = model.family.scale_floor()
    return None if floor is None else float(floor) * (1 + SCALE_FLOOR_TOLERANCE)


def _has_quantiles(model: MDN) -> bool:
    return model.family.closed_form_cdf


def _mixture_quantiles(family, weights, params, levels):
    """Quantiles (Q, M, D) of one draw's mixture (weights (M, K), params (M, K, d)) at
    `levels` (Q,), with the predictive's root-finder (:func:`~bayes_mdn.predictive._roots.
    solve_increasing`: Chandrupatla's method, or integer bisection for a discrete family,
    giving the smallest integer k with cdf(k) >= level) inside the bracket
    ``[min_k Q_k(min level), max_k Q_k(max level)]``, which provably holds every root."""
    q = jnp.asarray(levels, weights.dtype)
    extremes = jnp.stack([jnp.min(q), jnp.max(q)])[:, None, None, None]
    low, high = family.marginal_icdf(params, extremes)  # (M, K, D) each
    lower, upper = jnp.min(low, axis=1), jnp.max(high, axis=1)  # (M, D)
    if family.discrete:
        lower = lower - 1.0  # every component cdf is below the lowest level there

    def cdf(value):  # (Q, M, D) -> (Q, M, D)
        return jnp.clip(jnp.sum(weights[None, ..., None]
                                * family.marginal_cdf(params, value[:, :, None, :]), axis=2),
                        0.0, 1.0)

    shape = (q.shape[0], *lower.shape)
    return solve_increasing(cdf, q[:, None, None], jnp.broadcast_to(lower, shape),
                            jnp.broadcast_to(upper, shape), discrete=family.discrete,
                            max_iterations=QUANTILE_ITERATIONS)


@partial(jax.jit, static_argnames=("model", "draw_batch", "has_y", "levels", "scale_floor"))
def _function_space_kernel(model, draw_batch, has_y, levels, scale_floor, draws, X_std, y_std,
                           y_shift, y_scale):
    """Per-draw quantities, draws first, in the evaluator's draw loop (:func:`~bayes_mdn.
    predictive._evaluator.map_draws`): chunks of `draw_batch` draws at all M inputs, each
    chunk gathering its own draws."""
    family = model.family

    def one(log_weights, component):  # (M, K), dict of (M, K, d): one draw
        weights = jnp.exp(log_weights)
        mean_weights = jnp.mean(weights, axis=0)
        out = {
            "effective_components": jnp.exp(-jnp.sum(xlogy(mean_weights, mean_weights))),
            "dead_components": jnp.sum(jnp.max(weights, axis=0) < DEAD_WEIGHT),
        }
        if has_y:
            mixture = dist.MixtureSameFamily(dist.Categorical(logits=log_weights),
                                             family.distribution(component))
            out["log_density"] = mixture.log_prob(y_std)
        if scale_floor is not None and "scale" in component:
            scale = component["scale"]
            live = jnp.broadcast_to((weights >= DEAD_WEIGHT)[..., None], scale.shape)
            hits = jnp.sum(live & (scale <= scale_floor))
            out["scale_floor_fraction"] = hits / jnp.maximum(jnp.sum(live), 1)
        if levels:  # standardised units; mapped back on the host in float64
            out["quantiles"] = _mixture_quantiles(family, weights, component, levels)
        return out

    def per_chunk(chunk):  # (M, b, ...) -> draws first
        params = {name: jnp.moveaxis(value, 1, 0) for name, value in chunk.params.items()}
        return jax.vmap(one)(jnp.moveaxis(chunk.log_weights, 1, 0), params)

    return map_draws(per_chunk, model, draws, y_shift, y_scale, X_std, draw_batch)


def _draw_batch(posterior: Posterior, draws: Mapping[str, Any], num_inputs: int,
                num_levels: int, max_elements: int) -> int:
    """Draws per batch of :func:`_function_space_kernel`, by the predictive's memory model:
    per (input, draw) the K x D x Q terms of the quantile solve or the widest layer (a
    Flax/Equinox feature network's own layers included), whichever is larger. Every batch
    takes all reference inputs (the quantities reduce over them), so one draw at all M
    inputs is the finest split."""
    model = posterior.model
    width = network_width(model, draws, posterior.num_features, posterior.num_outputs)
    per_draw = max(model.num_components * posterior.num_outputs * max(num_levels, 1), width, 1)
    return draw_batch_size(num_inputs, posterior.num_chains * posterior.num_draws, per_draw,
                           max_elements)


def function_space_draws(posterior: Posterior, X: Any = None, y: Any = None, *,
                         num_points: int = REFERENCE_POINTS,
                         max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, np.ndarray]:
    """Per-draw function-space quantities at a reference set of inputs.

    Parameters
    ----------
    posterior : Posterior
    X : array-like, shape (N, P), optional
        Inputs to pick the reference set from (`num_points` rows spread along the first
        principal direction). Default: the training rows stored at fit time
        (``info["reference_X"]``), or, for a Posterior built by hand, inputs at normal
        quantiles of every standardised feature.
    y : array-like, shape (N,) or (N, D), optional
        Targets of the rows of `X`; needed for ``log_density`` when `X` is given.
    num_points : int
        M, the size of the reference set picked from `X`.
    max_elements : int
        Bound on the (draw, input, component, output) terms evaluated at once.

    Returns
    -------
    dict of str to numpy.ndarray
        ``X`` (M, P), ``y`` (M, D) if targets are known, ``log_density`` (C, S, M) if they
        are (original units), ``quantiles`` (C, S, Q, M, D) at :data:`QUANTILE_LEVELS`,
        ``effective_components`` (C, S), ``dead_components`` (C, S) (number of components
        with weight below :data:`DEAD_WEIGHT` at every reference input) and, for families
        with a ``scale`` parameter floored at ``min_scale``, ``scale_floor_fraction``
        (C, S) (share of live component scales within 1 % of the floor). Families without
        marginal quantiles give no ``quantiles``.
    """
    num_points = check_positive_int(num_points, "num_points")
    max_elements = check_positive_int(max_elements, "max_elements")
    X_ref, y_ref = _reference_data(posterior, X, y, num_points)
    model, standardizer = posterior.model, posterior.standardizer
    num_inputs = X_ref.shape[0]
    levels = QUANTILE_LEVELS if _has_quantiles(model) else ()
    draws = posterior.prediction_draws()
    draw_batch = _draw_batch(posterior, draws, num_inputs, len(levels), max_elements)
    X_std = standardizer.transform_X(X_ref)
    y_std = (standardizer.transform_y(y_ref) if y_ref is not None
             else jnp.zeros((num_inputs, posterior.num_outputs), X_std.dtype))
    values = _function_space_kernel(
        model, draw_batch, y_ref is not None, levels, _scale_floor(model),
        jax.device_put(draws), X_std, y_std,
        to_compute(standardizer.y_shift), to_compute(standardizer.y_scale))
    shape = (posterior.num_chains, posterior.num_draws)
    result = {name: np.asarray(value).reshape(*shape, *value.shape[1:])
              for name, value in jax.device_get(values).items()}
    if "quantiles" in result:
        result["quantiles"] = (result["quantiles"].astype(np.float64)
                               * np.asarray(standardizer.y_scale, np.float64)
                               + np.asarray(standardizer.y_shift, np.float64))
    if "log_density" in result:
        result["log_density"] = (result["log_density"].astype(np.float64)
                                 + standardizer.log_jacobian)
    result["X"] = X_ref
    if y_ref is not None:
        result["y"] = y_ref
    return result


# --------------------------------------------------------------------------- objective trend
def objective_trend(posterior: Posterior) -> dict[str, Any] | None:
    """Is the optimisation objective still improving at the end of the fit?

    Compares the mean objective (the ELBO for SVI, minus the loss for MAP and ensembles, the
    MAP stage's for Laplace) over the last 5 % of steps with the 5 % before. The standard
    error uses batch means (5 batches per window) against the autocorrelated noise of
    stochastic optimisation.

    Returns
    -------
    dict or None
        ``objective`` (name), ``num_steps``, ``improvement`` (total objective),
        ``improvement_per_row``, ``z`` (improvement / standard error, None if the objective
        is noise-free) and ``still_improving`` (z > 3 and more than 1e-3 nats per row).
        None without a trace of at least 200 finite steps.
    """
    history = posterior.history
    if "elbo" in history:
        name, trace = "ELBO", np.asarray(history["elbo"], np.float64)
    elif "loss" in history:
        name, trace = "loss", -np.asarray(history["loss"], np.float64)
    elif "map_loss" in history:
        name, trace = "loss of the MAP stage", -np.asarray(history["map_loss"], np.float64)
    else:
        return None
    if trace.ndim > 1:  # (members, steps)
        trace = trace.mean(axis=tuple(range(trace.ndim - 1)))
    window = round(TREND_WINDOW * trace.size)
    if window < 10 or not np.isfinite(trace[-2 * window:]).all():
        return None
    early, late = trace[-2 * window:-window], trace[-window:]
    improvement = float(late.mean() - early.mean())
    batch_means = [np.array([part.mean() for part in np.array_split(part_window, 5)])
                   for part_window in (early, late)]
    error = math.sqrt(sum(float(np.var(means, ddof=1)) / means.size for means in batch_means))
    z = improvement / error if error > 0 else None
    num_rows = int(posterior.info.get("num_rows") or 1)
    per_row = improvement / num_rows
    still = per_row > TREND_PER_ROW and (z is None or z > TREND_Z)
    return {"objective": name, "num_steps": int(trace.size), "improvement": improvement,
            "improvement_per_row": per_row, "z": None if z is None else float(z),
            "still_improving": bool(still)}


# --------------------------------------------------------------------------- diagnose
def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _convergence(quantities: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Worst R-hat and ESS per quantity; constant quantities count as converged."""
    stats = rhat_ess(quantities)
    report: dict[str, dict[str, float | None]] = {}
    for name, values in quantities.items():
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        constant = np.ptp(flat, axis=(0, 1)) == 0
        total = float(flat.shape[0] * flat.shape[1])
        entry = {}
        for stat, worst, fill in (("rhat", np.max, 1.0), ("ess_bulk", np.min, total),
                                  ("ess_tail", np.min, total)):
            if stat not in stats:
                entry[stat] = None
                continue
            value = np.asarray(stats[stat][name], np.float64).reshape(-1)
            value = np.where(constant, fill, value)
            value = value[np.isfinite(value)]
            entry[stat] = float(worst(value)) if value.size else None
        report[name] = entry
    return report


def _worst(values: list[float | None], reduce) -> float | None:
    values = [value for value in values if value is not None]
    return float(reduce(values)) if values else None


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """What :func:`diagnose` found. Every figure is a float, int, bool or None (never NaN).

    Attributes
    ----------
    method : str
    num_chains, num_draws : int
    num_reference_points : int
        M, the inputs the function-space quantities are evaluated at.
    convergence : dict
        Per function-space quantity (``log_density``, ``quantiles``,
        ``effective_components``): worst ``rhat`` (max), ``ess_bulk`` and ``ess_tail``
        (min); empty unless the fit has several chains (or is of kind ``"chains"``) with
        >= 4 draws each.
    max_rhat, min_ess_bulk, min_ess_tail : float or None
        The worst over all quantities.
    num_divergent, num_transitions : int or None
        NUTS divergences among all post-warmup transitions.
    fraction_max_tree_depth : float or None
        NUTS transitions that hit ``max_tree_depth``.
    effective_components : float
        ``exp(entropy)`` of the mixing weights averaged over the reference inputs, mean over
        draws: between 1 and K.
    dead_components : float
        Components with weight below 1e-3 at every reference input, mean per draw.
    scale_floor_fraction : float or None
        Share of live component scales within 1 % of the family's ``min_scale``.
    pareto_k : float or None
        PSIS k-hat of an SVI or Laplace approximation (from ``info["pareto_k"]``).
    objective : dict or None
        See :func:`objective_trend`.
    warnings : tuple of str
        One message with advice per problem found.
    """

    method: str
    num_chains: int
    num_draws: int
    num_components: int
    num_reference_points: int
    convergence: dict[str, dict[str, float | None]]
    max_rhat: float | None
    min_ess_bulk: float | None
    min_ess_tail: float | None
    num_divergent: int | None
    num_transitions: int | None
    fraction_max_tree_depth: float | None
    effective_components: float
    dead_components: float
    scale_floor_fraction: float | None
    pareto_k: float | None
    objective: dict[str, Any] | None
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        result = dataclasses.asdict(self)
        result["warnings"] = list(self.warnings)
        return result

    def __str__(self) -> str:
        return format_report(self.summary_fields() | {"method": self.method,
                                                      "num_chains": self.num_chains,
                                                      "num_draws": self.num_draws})

    def summary_fields(self) -> dict[str, Any]:
        """The flat figures :meth:`bayes_mdn.Posterior.summary` reports."""
        objective = self.objective or {}
        return {
            "num_components": self.num_components,
            "num_reference_points": self.num_reference_points,
            "max_rhat": self.max_rhat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "fraction_max_tree_depth": self.fraction_max_tree_depth,
            "effective_components": self.effective_components,
            "dead_components": self.dead_components,
            "scale_floor_fraction": self.scale_floor_fraction,
            "pareto_k": self.pareto_k,
            "objective_still_improving": objective.get("still_improving"),
            "objective_improvement_per_row": objective.get("improvement_per_row"),
            "warnings": list(self.warnings),
        }


def _advice(report: dict[str, Any], posterior: Posterior) -> list[str]:
    """One message per problem, each saying what was found and what to do."""
    messages = []
    chains = posterior.num_chains
    if report["max_rhat"] is not None and report["max_rhat"] > MAX_RHAT:
        worst = max(report["convergence"],
                    key=lambda name: report["convergence"][name]["rhat"] or 0.0)
        messages.append(
            f"Function-space R-hat is {report['max_rhat']:.3f} (> {MAX_RHAT}, worst for "
            f"{worst}): the chains have not mixed and describe different predictive "
            "distributions. Run longer (more num_warmup and num_samples), start the chains "
            "from an ensemble (init=ensemble_fit), or use the chains as an ensemble of modes "
            "rather than as one posterior."
        )
    ess = [value for value in (report["min_ess_bulk"], report["min_ess_tail"])
           if value is not None]
    if report["max_rhat"] is not None and ess and min(ess) < MIN_ESS_PER_CHAIN * chains:
        messages.append(
            f"Function-space ESS is low: bulk {report['min_ess_bulk']:.0f}, tail "
            f"{report['min_ess_tail']:.0f} for {chains} chains (want at least "
            f"{MIN_ESS_PER_CHAIN} per chain, {MIN_ESS_PER_CHAIN * chains}). Draw more "
            "samples (num_samples) or more chains before trusting intervals and tails."
        )
    if report["num_divergent"]:
        messages.append(
            f"{report['num_divergent']} of {report['num_transitions']} NUTS transitions "
            "diverged: the sampler missed regions of high curvature and the draws may be "
            "biased. Raise target_accept_prob (e.g. 0.95), use a stronger prior (e.g. "
            "bayes_mdn.priors.FanInNormal(0.5)) or a larger family min_scale, and start from "
            "an ensemble (init=)."
        )
    depth = report["fraction_max_tree_depth"]
    if depth is not None and depth > MAX_TREE_DEPTH_FRACTION:
        messages.append(
            f"{depth:.0%} of NUTS transitions hit max_tree_depth="
            f"{posterior.info.get('max_tree_depth')}: trajectories were cut short, so the "
            "chains move slowly. Raise max_tree_depth, or use dense_mass=True for a small "
            "network."
        )
    objective = report["objective"]
    if objective is not None and objective["still_improving"]:
        z = "" if objective["z"] is None else f", {objective['z']:.1f} standard errors"
        messages.append(
            f"The {objective['objective']} was still improving at the end of the "
            f"{objective['num_steps']} steps ({objective['improvement_per_row']:+.3g} nats per "
            f"row between the last two 5% windows{z}): the optimisation has not converged. "
            "Run more num_steps, or use lr_schedule='cosine' to settle it."
        )
    if report["pareto_k"] is not None and report["pareto_k"] > MAX_PARETO_K:
        messages.append(
            f"Pareto k of the {posterior.method} approximation is {report['pareto_k']:.2f} "
            f"(> {MAX_PARETO_K}): it is far from the posterior and its uncertainty is not "
            "reliable. Use a richer guide (guide='lowrank', 'mvn' or 'flow'), or "
            "method='nuts' with init= this fit's MAP or an ensemble."
        )
    num_components = posterior.model.num_components
    if num_components > 1 and report["dead_components"] >= 0.5:
        messages.append(
            f"Component collapse: {report['dead_components']:.1f} of K={num_components} "
            f"components are dead (weight < {DEAD_WEIGHT} at every reference input) and the "
            f"effective number of components is {report['effective_components']:.1f}. Use "
            f"fewer components (num_components={max(1, round(report['effective_components']))}"
            " or so) or a prior that keeps the mixing logits small."
        )
    floor = report["scale_floor_fraction"]
    if floor is not None and floor > MAX_SCALE_FLOOR_FRACTION:
        messages.append(
            f"{floor:.1%} of live component scales sit at the family's min_scale floor: "
            "components collapsed onto single points and densities there are unreliable. "
            "Raise min_scale (e.g. bayes_mdn.families.Normal(min_scale=0.01)) or put a "
            "stronger prior on the scale head."
        )
    return messages


def diagnose(posterior: Posterior, X: Any = None, y: Any = None, *,
             num_points: int = REFERENCE_POINTS, warn: bool = True) -> Diagnostics:
    """Check a fit for convergence problems and component collapse.

    Parameters
    ----------
    posterior : Posterior
    X, y : array-like, optional
        Reference data, shapes (N, P) and (N,) or (N, D); see :func:`function_space_draws`.
        Default: the training rows stored at fit time.
    num_points : int
        M, reference inputs picked from `X`.
    warn : bool
        Emit a :class:`ConvergenceWarning` for each problem found.

    Returns
    -------
    Diagnostics

    Warns
    -----
    ConvergenceWarning
        For function-space R-hat > 1.01, ESS below 100 per chain, NUTS divergences or
        saturated tree depth, an objective still improving, Pareto k > 0.7, dead
        components or components at the scale floor.
    """
    if not isinstance(warn, bool):
        raise TypeError(f"`warn` must be True or False; got {warn!r}.")
    values = function_space_draws(posterior, X, y, num_points=num_points)
    chains, draws = posterior.num_chains, posterior.num_draws
    convergence: dict[str, dict[str, float | None]] = {}
    if (chains >= 2 or posterior.kind == "chains") and draws >= 4:
        convergence = _convergence({name: values[name] for name in
                                    ("log_density", "quantiles", "effective_components")
                                    if name in values})
    stats = posterior.sample_stats
    num_divergent = num_transitions = fraction_depth = None
    if "diverging" in stats:
        num_divergent = int(np.sum(stats["diverging"]))
        num_transitions = int(stats["diverging"].size)
    max_depth = posterior.info.get("max_tree_depth")
    if "tree_depth" in stats and max_depth is not None:
        fraction_depth = float(np.mean(stats["tree_depth"] >= max_depth))
    pareto = posterior.info.get("pareto_k")
    report = {
        "convergence": convergence,
        "max_rhat": _worst([entry["rhat"] for entry in convergence.values()], max),
        "min_ess_bulk": _worst([entry["ess_bulk"] for entry in convergence.values()], min),
        "min_ess_tail": _worst([entry["ess_tail"] for entry in convergence.values()], min),
        "num_divergent": num_divergent,
        "num_transitions": num_transitions,
        "fraction_max_tree_depth": fraction_depth,
        "effective_components": float(np.mean(values["effective_components"])),
        "dead_components": float(np.mean(values["dead_components"])),
        "scale_floor_fraction": (_finite(np.mean(values["scale_floor_fraction"]))
                                 if "scale_floor_fraction" in values else None),
        "pareto_k": None if pareto is None else _finite(pareto),
        "objective": objective_trend(posterior),
    }
    messages = _advice(report, posterior)
    if warn:
        for message in messages:
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
    return Diagnostics(method=posterior.method, num_chains=chains, num_draws=draws,
                       num_components=posterior.model.num_components,
                       num_reference_points=int(values["X"].shape[0]),
                       warnings=tuple(messages), **report)


# --------------------------------------------------------------------------- summary
def _number(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_report(report: Mapping[str, Any]) -> str:
    """The text form of :meth:`bayes_mdn.Posterior.summary`."""
    lines = [f"bayes_mdn posterior: method={report.get('method')!r}, "
             f"{report.get('num_chains')} chain(s) x {report.get('num_draws')} draw(s)"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<28}{text}")

    def section(title: str) -> None:
        lines.append(title)

    section("Fit")
    if report.get("num_parameters") is not None:
        row("parameters", str(report["num_parameters"]))
    if report.get("fit_seconds") is not None:
        row("fit time", f"{report['fit_seconds']:.1f} s")
    if report.get("final_loss") is not None:
        row("final loss", f"{report['final_loss']:.6g}")
    for name in ("train_log_likelihood", "test_log_likelihood"):
        if report.get(name) is not None:
            row(name.replace("_", " ") + " / row", f"{report[name]:.4f}")
    if report.get("objective_still_improving") is not None:
        row("objective still improving", "yes" if report["objective_still_improving"]
            else "no")
    if report.get("pareto_k") is not None:
        row("Pareto k", f"{report['pareto_k']:.2f}  (reliable below {MAX_PARETO_K})")
    if report.get("num_divergent") is not None or report.get("mean_tree_depth") is not None:
        section("NUTS")
        if report.get("num_divergent") is not None:
            row("divergent transitions", str(report["num_divergent"]))
        if report.get("mean_tree_depth") is not None:
            row("mean tree depth", f"{report['mean_tree_depth']:.2f}")
        if report.get("fraction_max_tree_depth") is not None:
            row("at max tree depth", f"{report['fraction_max_tree_depth']:.0%}")
    if report.get("max_rhat") is not None or report.get("min_ess_bulk") is not None:
        section(f"Function space ({report.get('num_reference_points')} reference inputs)")
        row("max R-hat", f"{_number(report.get('max_rhat'), '.3f')}  (want <= {MAX_RHAT})")
        row("min bulk / tail ESS", f"{_number(report.get('min_ess_bulk'), '.0f')} / "
            f"{_number(report.get('min_ess_tail'), '.0f')}")
    if report.get("effective_components") is not None:
        section("Mixture components")
        row("effective number", f"{report['effective_components']:.2f} of "
            f"K={report.get('num_components')}")
        row("dead (per draw)", f"{report['dead_components']:.2f}")
        if report.get("scale_floor_fraction") is not None:
            row("scales at the floor", f"{report['scale_floor_fraction']:.1%}")
    messages = report.get("warnings") or []
    section("Warnings" if messages else "Warnings: none")
    for message in messages:
        lines.append(f"  - {message}")
    return "\n".join(lines)


class Summary(dict):
    """The report of :meth:`bayes_mdn.Posterior.summary`: a dict that prints as text.

    Index it like a dict (``summary["num_divergent"]``), ``print`` it for a readable report,
    or convert it with :meth:`to_dict` and :meth:`to_dataframe`.
    """

    def __str__(self) -> str:
        return format_report(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython / Jupyter
        printer.text(str(self))

    def to_dict(self) -> dict[str, Any]:
        """A plain (JSON-serialisable) dict copy."""
        return {name: list(value) if isinstance(value, (list, tuple)) else value
                for name, value in self.items()}

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per figure, column ``value`` (warnings joined by newlines).

        Raises
        ------
        ImportError
            If pandas is not installed.
        """
        try:
            import pandas
        except ImportError:
            raise ImportError("Summary.to_dataframe needs pandas: pip install pandas") from None
        values = {name: "\n".join(value) if name == "warnings" else value
                  for name, value in self.items()}
        return pandas.DataFrame({"value": pandas.Series(values, dtype=object)})
