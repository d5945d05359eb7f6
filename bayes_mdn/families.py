"""Component families: raw head outputs -> constrained parameters -> NumPyro distributions.

A family decides which heads the network has (``head_dims``), how raw outputs become valid
parameters (``constrain``, with stable links such as softplus plus a floor), how parameters
move between standardised and original units, and which per-component quantities the
predictive mixture needs (marginal cdf and quantiles, mean, variance).

Every parameter array has shape (..., K, d): the trailing axes are component and the
per-component width (D for a diagonal Normal). Distributions have batch shape (..., K)
and event shape (D,).

============================  ===========  =========================================  ==========
family                        support      parameters (links)                         y scaled
============================  ===========  =========================================  ==========
:class:`Normal`               real         loc, scale (softplus + floor)              yes
:class:`StudentT`             real         loc, scale, df (fixed, or min_df + exp)    yes
:class:`Laplace`              real         loc, scale (softplus + floor)              yes
:class:`MultivariateNormal`   R^D, D >= 2  loc, Cholesky factor (softplus diagonal +  yes
                                           floor, identity lower triangle)
:class:`LogNormal`            y > 0        loc, scale of log y                        no
:class:`Gamma`                y > 0        mean (exp), concentration (exp + floor)    no
:class:`Beta`                 0 < y < 1    mean (sigmoid), concentration (exp +       no
                                           floor)
:class:`Poisson`              0, 1, 2, ..  rate (exp)                                 no
:class:`NegativeBinomial`     0, 1, 2, ..  mean (exp), concentration (exp + floor)    no
============================  ===========  =========================================  ==========

Every family declares its capabilities, which diagnostics, metrics and the predictive read
instead of guessing: ``discrete``, ``support``, ``standardize_y``, ``closed_form_cdf``
(per-dimension ``marginal_cdf`` and ``marginal_icdf`` exist), ``closed_form_crps`` and
:meth:`Family.scale_floor`. Families are registered by name in :data:`FAMILIES`;
:func:`register_family` adds a user-defined one, so that a saved posterior of a model using
it loads again (:func:`bayes_mdn.load` rebuilds families from that registry).

Families whose support is not the whole real line keep y in its original units
(``standardize_y = False``), so their densities need no Jacobian. Outside the support every
family's log-density is ``-inf`` (never NaN). Discrete families (``discrete = True``) give
probability masses; their cdf at a non-integer y is the cdf at ``floor(y)`` and their
quantiles are integers.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import betainc, gammainc, gammaincc, gammaln, ndtr, ndtri

from bayes_mdn._validation import float_dtype

__all__ = [
    "FAMILIES",
    "Beta",
    "Family",
    "Gamma",
    "Laplace",
    "LogNormal",
    "MultivariateNormal",
    "NegativeBinomial",
    "Normal",
    "Poisson",
    "StudentT",
    "family_from_config",
    "register_family",
    "resolve_family",
]

Params = dict[str, jax.Array]

#: Raw outputs of log links (and logit links) are clipped to this range before ``exp``, so a
#: runaway network output cannot overflow to inf: exp(50) = 5e21, far beyond any data scale.
LOG_LINK_BOUND = 50.0
LOGIT_LINK_BOUND = 30.0


def inverse_softplus(value: np.ndarray) -> np.ndarray:
    """Numerically stable inverse of ``softplus`` for positive values."""
    value = np.asarray(value, dtype=np.float64)
    return value + np.log(-np.expm1(-value))


# --------------------------------------------------------------------------- helpers
def _num_bisections(dtype: Any) -> int:
    """Bisection steps that reach the resolution of `dtype` on brackets of width ~200."""
    return 64 if jnp.dtype(dtype) == jnp.float64 else 40


def _bisect(cdf, q: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """Point in [lower, upper] where the increasing function `cdf` crosses `q` (elementwise).

    `lower` and `upper` carry the full output shape; `q` broadcasts against them.
    """
    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    shape = jnp.broadcast_shapes(jnp.shape(lower), jnp.shape(upper), jnp.shape(q))
    bounds = (jnp.broadcast_to(lower, shape), jnp.broadcast_to(upper, shape))
    lower, upper = jax.lax.fori_loop(0, _num_bisections(bounds[0].dtype), step, bounds)
    return 0.5 * (lower + upper)


def _integer_quantile(cdf, q: jax.Array, mean: jax.Array, variance: jax.Array) -> jax.Array:
    """Smallest integer k >= 0 with ``cdf(k) >= q``, by bisection on the integers.

    The bracket is [-1, ceil(mean + sd sqrt(q / (1 - q))) + 1]: ``cdf(-1) = 0 < q``, and by
    Cantelli's inequality ``P(Y > mean + t) <= var / (var + t^2)``, which is ``<= 1 - q`` at
    the upper end. Each step keeps ``cdf(lo) < q <= cdf(hi)``; 64 steps close any bracket
    below 2**64.
    """
    eps = jnp.finfo(mean.dtype).eps
    q = jnp.clip(q, eps, 1.0 - eps)
    upper = jnp.ceil(mean + jnp.sqrt(variance * q / (1.0 - q))) + 1.0
    lower = jnp.full_like(upper, -1.0)

    def step(_, bounds):
        lo, hi = bounds
        mid = jnp.floor(0.5 * (lo + hi))
        below = cdf(mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    return jax.lax.fori_loop(0, 64, step, (lower, upper))[1]


def _format_rows(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(row)) for row in rows[:limit])
    if rows.size > limit:
        return f"[{shown}, ...] ({rows.size} rows)"
    return f"[{shown}]"


def _check_rows(ok: np.ndarray, name: str, requirement: str, family: str, advice: str) -> None:
    """Raise ValueError naming the rows of an (N, D) mask `ok` with a False entry."""
    bad = np.flatnonzero(~np.all(ok, axis=1))
    if bad.size:
        raise ValueError(
            f"`{name}` must {requirement} for the {family} family; rows {_format_rows(bad)} "
            f"are not. {advice}"
        )


def _compute_values(y: np.ndarray) -> np.ndarray:
    """`y` as the compute dtype sees it (values below float32 resolution become 0 or 1)."""
    return np.asarray(y, dtype=np.float64).astype(float_dtype())


def _check_number(value: Any, name: str, *, minimum: float = 0.0, strict: bool = False,
                  optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number; got {value!r} ({type(value).__name__}).")
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if not (np.isfinite(value) and (value > minimum if strict else value >= minimum)):
        raise ValueError(f"`{name}` must be a finite number {bound}; got {value}.")


def _softplus_floor(raw: jax.Array, floor: float) -> jax.Array:
    return jax.nn.softplus(raw) + floor


def _exp_link(raw: jax.Array) -> jax.Array:
    return jnp.exp(jnp.clip(raw, -LOG_LINK_BOUND, LOG_LINK_BOUND))


def _initial_positive_bias(value: np.ndarray, floor: float) -> np.ndarray:
    """Raw bias whose ``softplus(raw) + floor`` is `value` (at least 1e-3 above the floor)."""
    return inverse_softplus(np.maximum(np.asarray(value, np.float64) - floor, 1e-3))


def _initial_log_bias(value: np.ndarray, floor: float) -> np.ndarray:
    """Raw bias whose ``exp(raw) + floor`` is `value` (at least 1e-3 above the floor)."""
    return np.log(np.maximum(np.asarray(value, np.float64) - floor, 1e-3))


def _quantile_levels(num_components: int) -> np.ndarray:
    return (np.arange(num_components) + 0.5) / num_components


def _log_spread(log_y: np.ndarray, num_components: int) -> np.ndarray:
    """Per-output spread of log y (or of standardised y) divided among K components, (D,)."""
    spread = np.quantile(log_y, 0.95, axis=0) - np.quantile(log_y, 0.05, axis=0)
    return np.maximum(2.0 * spread / num_components, 0.05)


# --------------------------------------------------------------------------- NumPyro pieces
class _SupportMask:
    """Mixin for NumPyro distributions: ``log_prob`` is -inf outside the support, not NaN.

    The unsafe values are replaced by a value inside the support before the base
    ``log_prob`` runs, so gradients stay finite too (the "double where" pattern).
    """

    _safe_value: ClassVar[float] = 1.0

    def _inside(self, value: jax.Array) -> jax.Array:
        raise NotImplementedError

    def log_prob(self, value: jax.Array) -> jax.Array:
        inside = self._inside(value)
        safe = jnp.where(inside, value, self._safe_value)
        return jnp.where(inside, super().log_prob(safe), -jnp.inf)


class _PositiveMask(_SupportMask):
    def _inside(self, value):
        return value > 0


class _UnitMask(_SupportMask):
    _safe_value: ClassVar[float] = 0.5

    def _inside(self, value):
        return (value > 0) & (value < 1)


class _CountMask(_SupportMask):
    """Counts: log-mass -inf off the non-negative integers; samples in the float dtype."""

    _safe_value: ClassVar[float] = 0.0

    def _inside(self, value):
        return (value >= 0) & (value == jnp.floor(value))

    def sample(self, key, sample_shape=()):
        return super().sample(key, sample_shape).astype(jnp.result_type(float))


class _StudentT(dist.StudentT):
    """NumPyro's StudentT with a log-density accurate for any df.

    The normalising constant needs ``log Gamma((df + 1) / 2) - log Gamma(df / 2)``. NumPyro
    subtracts two ``gammaln`` values, which loses all precision in float32 once df is
    large (0.08 nats at df = 1e6), so a learned df drifting towards the Normal limit would
    be scored wrongly. Here df > 20 uses the asymptotic series ``log Gamma(x + 1/2) -
    log Gamma(x) = log(x) / 2 - 1 / (8 x) + 1 / (192 x^3) - 1 / (640 x^5)`` (error below
    1e-10 there), smaller df the ``gammaln`` difference (error ~1e-6).
    """

    def log_prob(self, value: jax.Array) -> jax.Array:
        df = self.df
        half = 0.5 * df
        large = half > 10.0
        inverse = 1.0 / jnp.where(large, half, 10.0)
        series = (-0.5 * jnp.log(inverse) - inverse / 8.0 + inverse**3 / 192.0
                  - inverse**5 / 640.0)
        small = jnp.where(large, 1.0, half)
        log_ratio = jnp.where(large, series, gammaln(small + 0.5) - gammaln(small))
        z = (value - self.loc) / self.scale
        return (log_ratio - 0.5 * jnp.log(math.pi * df) - jnp.log(self.scale)
                - 0.5 * (df + 1.0) * jnp.log1p(jnp.square(z) / df))


class _ShiftedGamma(dist.Distribution):
    """``shift + Gamma(concentration, rate)``: a prior on (shift, inf), e.g. for a df.

    (A TransformedDistribution with an AffineTransform computes its support from a traced
    value inside jit and leaks the tracer; here the shift stays a Python float.)
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"concentration": dist.constraints.positive,
                                                 "rate": dist.constraints.positive}
    pytree_aux_fields = ("shift",)
    reparametrized_params: ClassVar[list[str]] = ["concentration", "rate"]

    def __init__(self, concentration: float, rate: float, shift: float, *,
                 validate_args: bool | None = None) -> None:
        self.concentration, self.rate, self.shift = concentration, rate, float(shift)
        super().__init__(batch_shape=jnp.shape(concentration), validate_args=validate_args)

    @dist.constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return dist.constraints.greater_than(self.shift)

    def sample(self, key, sample_shape=()):
        gamma = dist.Gamma(self.concentration, self.rate)
        return self.shift + gamma.sample(key, sample_shape + self.batch_shape)

    def log_prob(self, value):
        excess = value - self.shift
        inside = excess > 0
        log_density = dist.Gamma(self.concentration, self.rate).log_prob(
            jnp.where(inside, excess, 1.0))
        return jnp.where(inside, log_density, -jnp.inf)


class _MaskedGamma(_PositiveMask, dist.Gamma):
    pass


class _MaskedLogNormal(_PositiveMask, dist.LogNormal):
    pass


class _MaskedBeta(_UnitMask, dist.Beta):
    pass


class _MaskedPoisson(_CountMask, dist.Poisson):
    pass


class _MaskedNegativeBinomial(_CountMask, dist.NegativeBinomial2):
    pass


# --------------------------------------------------------------------------- base class
@dataclass(frozen=True)
class Family(abc.ABC):
    """Base class of component families. Subclasses are frozen dataclasses (hashable).

    A subclass implements at least :meth:`head_dims`, :meth:`constrain` and
    :meth:`distribution`, and declares its capabilities in the class attributes below;
    ``closed_form_cdf`` defaults to whether it overrides both :meth:`marginal_cdf` and
    :meth:`marginal_icdf`. Register it with :func:`register_family` to save and load it.
    """

    name: ClassVar[str] = "family"
    #: Whether y is standardised (shifted and scaled) before fitting. True for
    #: location-scale families; positive, bounded and count families keep raw y.
    standardize_y: ClassVar[bool] = True
    #: Whether components are probability mass functions on the integers (counts).
    discrete: ClassVar[bool] = False
    #: Closed range (lower, upper) containing the support of every output, in original units.
    support: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    #: Whether :meth:`marginal_cdf` and :meth:`marginal_icdf` are implemented in closed
    #: form (predictive cdf and quantiles, function-space quantiles in diagnostics).
    closed_form_cdf: ClassVar[bool] = False
    #: Whether the CRPS of a mixture of these components has a closed form (Normal).
    closed_form_crps: ClassVar[bool] = False
    #: The fewest outputs D the family models (2 for a multivariate Normal).
    min_outputs: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "closed_form_cdf" not in cls.__dict__:
            cls.closed_form_cdf = (cls.marginal_cdf is not Family.marginal_cdf
                                   and cls.marginal_icdf is not Family.marginal_icdf)

    def scale_floor(self) -> float | None:
        """The floor of the components' ``scale`` parameter in standardised units, or None
        when the family has no floored ``scale`` (diagnostics report scales at the floor)."""
        return None

    @abc.abstractmethod
    def head_dims(self, num_outputs: int) -> dict[str, int]:
        """Per-component width of each head, e.g. ``{"loc": D, "scale": D}``."""
        raise NotImplementedError

    @abc.abstractmethod
    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        """Map raw head outputs (..., K, d) to parameters in standardised units.

        `y_scale` (D,) is the standard deviation used to standardise y, needed only by
        quantities the user fixes in original units (e.g. a fixed scale). `latents` holds
        the values of the family's own sample sites (see :meth:`latent_distributions`),
        when it has any.
        """
        raise NotImplementedError

    def latent_distributions(self, num_outputs: int) -> dict[str, dist.Distribution]:
        """The family's own sample sites and their priors, e.g. ``{"family.df": prior}``.

        They are shared by all inputs and components (unlike head outputs), sampled in
        :meth:`bayes_mdn.MDN.numpyro_model`, kept in posterior draws and passed to
        :meth:`constrain` as `latents`. None by default.
        """
        return {}

    def initial_latents(self, num_outputs: int, dtype: Any) -> dict[str, jax.Array]:
        """Starting values of :meth:`latent_distributions` sites (inside their support)."""
        return {}

    def to_original_units(self, params: Params, y_shift: jax.Array, y_scale: jax.Array) -> Params:
        """Map parameters from standardised to original units of y.

        The identity for families that do not standardise y.
        """
        if self.standardize_y:
            raise NotImplementedError
        return params

    @abc.abstractmethod
    def distribution(self, params: Params) -> dist.Distribution:
        """NumPyro distribution with batch shape (..., K) and event shape (D,)."""
        raise NotImplementedError

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        """Per-dimension cdf of each component at `y` (..., 1, D) -> (..., K, D)."""
        raise NotImplementedError

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        """Per-dimension quantile of each component at probability `q` -> (..., K, D).

        `q` broadcasts against the parameters: a (L, 1, ..., 1) array of levels gives
        (L, ..., K, D). For discrete families, the smallest integer k with ``cdf(k) >= q``.
        """
        raise NotImplementedError

    def mean(self, params: Params) -> jax.Array:
        """Per-component mean, (..., K, D)."""
        raise NotImplementedError

    def variance(self, params: Params) -> jax.Array:
        """Per-component marginal variance, (..., K, D); +inf where it diverges."""
        raise NotImplementedError

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        """Initial head biases (per head, shape (K * d,)) from standardised training targets."""
        raise NotImplementedError

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        """Raise ValueError naming the rows of `y` (N, D) outside the family's support."""
        return None  # every value is in the support of a real-line family

    def check_moments(self, order: int) -> None:
        """Raise ValueError if the moment of this `order` (1 mean, 2 variance) does not exist
        for any parameter value of this family (e.g. the mean of a Cauchy)."""
        return None  # every moment exists by default

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description, inverted by :func:`family_from_config`."""
        return {"name": self.name, **dataclasses.asdict(self)}


# --------------------------------------------------------------------------- real line
@dataclass(frozen=True)
class Normal(Family):
    """Normal components with independent output dimensions (diagonal covariance).

    Parameters
    ----------
    min_scale : float
        Floor added to ``softplus(raw)`` for the scale, in standardised units of y. It
        keeps densities finite when a component collapses onto a few points.
    fixed_scale : float, optional
        If given, every component has this scale, in original units of y, and the
        network has no scale head (the conjugate linear-regression case when K = 1).
    """

    name: ClassVar[str] = "normal"
    closed_form_crps: ClassVar[bool] = True
    min_scale: float = 1e-3
    fixed_scale: float | None = None

    def scale_floor(self) -> float | None:
        if self.fixed_scale is not None or not self.min_scale:
            return None
        return float(self.min_scale)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_scale) and self.min_scale >= 0):
            raise ValueError(f"`min_scale` must be a finite number >= 0; got {self.min_scale}.")
        if self.fixed_scale is not None and not (
            np.isfinite(self.fixed_scale) and self.fixed_scale > 0
        ):
            raise ValueError(
                f"`fixed_scale` must be a finite positive number or None; got {self.fixed_scale}."
            )

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        if self.fixed_scale is None:
            return {"loc": num_outputs, "scale": num_outputs}
        return {"loc": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        loc = raw["loc"]
        if self.fixed_scale is None:
            scale = jax.nn.softplus(raw["scale"]) + self.min_scale
        else:
            scale = jnp.broadcast_to(self.fixed_scale / y_scale, loc.shape).astype(loc.dtype)
        return {"loc": loc, "scale": scale}

    def to_original_units(self, params: Params, y_shift: jax.Array, y_scale: jax.Array) -> Params:
        return {"loc": params["loc"] * y_scale + y_shift, "scale": params["scale"] * y_scale}

    def distribution(self, params: Params) -> dist.Distribution:
        return dist.Normal(params["loc"], params["scale"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        return ndtr((y - params["loc"]) / params["scale"])

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        return params["loc"] + params["scale"] * ndtri(q)

    def mean(self, params: Params) -> jax.Array:
        return params["loc"]

    def variance(self, params: Params) -> jax.Array:
        return jnp.square(params["scale"])

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        # Locations at evenly spaced quantiles of each output, so every component starts
        # on data; scales about the spacing between neighbours.
        levels = (np.arange(num_components) + 0.5) / num_components
        loc = np.quantile(y_std, levels, axis=0)  # (K, D)
        spread = np.quantile(y_std, 0.95, axis=0) - np.quantile(y_std, 0.05, axis=0)
        scale = np.maximum(2.0 * spread / num_components, 0.05) * np.ones_like(loc)
        bias = {"loc": loc.reshape(-1)}
        if self.fixed_scale is None:
            bias["scale"] = inverse_softplus(np.maximum(scale - self.min_scale, 1e-3)).reshape(-1)
        return bias


@dataclass(frozen=True)
class _LocationScale(Family):
    """Shared code of diagonal location-scale families with a softplus scale head.

    Subclasses declare a ``min_scale`` field (their own, so that their own fields come
    first in positional order).
    """

    min_scale: ClassVar[float]

    def __post_init__(self) -> None:
        _check_number(self.min_scale, "min_scale")

    def scale_floor(self) -> float | None:
        return float(self.min_scale) if self.min_scale else None

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"loc": num_outputs, "scale": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        return {"loc": raw["loc"], "scale": _softplus_floor(raw["scale"], self.min_scale)}

    def to_original_units(self, params: Params, y_shift: jax.Array, y_scale: jax.Array) -> Params:
        out = dict(params)
        out["loc"] = params["loc"] * y_scale + y_shift
        out["scale"] = params["scale"] * y_scale
        return out

    def mean(self, params: Params) -> jax.Array:
        return params["loc"]

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        loc = np.quantile(y_std, _quantile_levels(num_components), axis=0)  # (K, D)
        scale = _log_spread(y_std, num_components) * np.ones_like(loc)
        return {"loc": loc.reshape(-1),
                "scale": _initial_positive_bias(scale, self.min_scale).reshape(-1)}


@dataclass(frozen=True)
class StudentT(_LocationScale):
    """Student-t components with independent output dimensions: heavy-tailed regression.

    Parameters
    ----------
    df : float, "head" or "global"
        Degrees of freedom. A positive number fixes them for every component (``df=1`` is
        the Cauchy). ``"head"`` (the default) learns them as a network output: a ``df``
        head (K x D outputs) with ``df = min_df + exp(raw)`` (raw clipped to +-50), so tails
        can differ between components and across x. The log link keeps the raw output O(1)
        over the useful range (df from 2 to 1000 is raw from about 0 to 7), where the weight
        prior, which acts on raw outputs, does not distort it. ``"global"`` learns one df
        per output, shared by all components and inputs: a sample site ``"family.df"`` of
        shape (D,) with prior `df_prior`, fitted (and, for SVI, Laplace and NUTS,
        integrated over) like the weights; its draws are kept in the posterior.
    min_df : float
        Lower bound of learned degrees of freedom, at least 1 (the mean then exists). The
        default 2 also keeps every variance finite; with ``1 <= min_df < 2`` components
        with ``df <= 2`` report an infinite variance.
    df_prior : (float, float)
        ``(concentration, rate)`` of the Gamma prior on ``df - min_df`` for
        ``df="global"``; the default Gamma(2, 0.1) (mean 20) is a common weakly
        informative choice, also used by brms.
    min_scale : float
        Floor added to ``softplus(raw)`` for the scale, in standardised units of y.

    Notes
    -----
    Links: ``loc`` identity, ``scale = softplus(raw) + min_scale``, ``df`` as above. The
    log-density stays accurate in float32 for any df (an asymptotic series for df > 20).
    A fixed ``df <= 1`` has no mean and a fixed ``df <= 2`` no finite variance: the
    predictive ``mean()`` / ``variance()`` then raise a ValueError.
    """

    name: ClassVar[str] = "studentt"
    #: Name of the global degrees-of-freedom site (``df="global"``).
    DF_SITE: ClassVar[str] = "family.df"
    df: float | str = "head"
    min_df: float = 2.0
    min_scale: float = 1e-3
    df_prior: tuple[float, float] = (2.0, 0.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.df, str):
            if self.df not in ("head", "global"):
                raise ValueError(f"`df` must be a positive number (fixed degrees of freedom), "
                                 f"'head' (learned per component) or 'global' (one learned df "
                                 f"per output, with a prior); got {self.df!r}.")
        else:
            _check_number(self.df, "df", strict=True)
        _check_number(self.min_df, "min_df", minimum=1.0)
        prior = self.df_prior
        if isinstance(prior, (str, bytes)) or not hasattr(prior, "__len__") or len(prior) != 2:
            raise TypeError(f"`df_prior` must be a pair (concentration, rate) of the Gamma "
                            f"prior on df - min_df, e.g. (2.0, 0.1); got {prior!r}.")
        for value, label in zip(prior, ("concentration", "rate"), strict=True):
            _check_number(value, f"df_prior {label}", strict=True)
        object.__setattr__(self, "df_prior", tuple(float(value) for value in prior))

    @property
    def learned_df(self) -> bool:
        """Whether the degrees of freedom are learned (a head output or a global site)."""
        return isinstance(self.df, str)

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        heads = super().head_dims(num_outputs)
        if self.df == "head":
            heads["df"] = num_outputs
        return heads

    def latent_distributions(self, num_outputs: int) -> dict[str, dist.Distribution]:
        if self.df != "global":
            return {}
        concentration, rate = self.df_prior
        prior = _ShiftedGamma(concentration, rate, self.min_df)
        return {self.DF_SITE: prior.expand((num_outputs,)).to_event(1)}

    def initial_latents(self, num_outputs: int, dtype: Any) -> dict[str, jax.Array]:
        if self.df != "global":
            return {}
        # As for the head: start at min_df + 10, close to Normal.
        return {self.DF_SITE: jnp.full((num_outputs,), self.min_df + 10.0, dtype)}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        params = super().constrain(raw, y_scale)
        loc = params["loc"]
        if self.df == "head":
            params["df"] = self.min_df + _exp_link(raw["df"])
        elif self.df == "global":
            if latents is None or self.DF_SITE not in latents:
                raise ValueError(f"StudentT(df='global') needs the value of its "
                                 f"{self.DF_SITE!r} site; pass latents={{{self.DF_SITE!r}: df}} "
                                 "with df of shape (D,).")
            params["df"] = jnp.broadcast_to(latents[self.DF_SITE], loc.shape).astype(loc.dtype)
        else:
            params["df"] = jnp.full(loc.shape, self.df, loc.dtype)
        return params

    def distribution(self, params: Params) -> dist.Distribution:
        return _StudentT(params["df"], params["loc"], params["scale"]).to_event(1)

    @staticmethod
    def _standard_cdf(z: jax.Array, df: jax.Array) -> jax.Array:
        # P(T <= -|z|) = I_u(df / 2, 1 / 2) / 2 with u = df / (df + z^2), or equivalently
        # 1/2 - I_{1-u}(1 / 2, df / 2) / 2; each form is used where its argument is not
        # rounded to 1, so the tails and the centre are both accurate.
        square = jnp.square(z)
        u = df / (df + square)
        tail = jnp.where(u > 0.5, 0.5 - 0.5 * betainc(0.5, 0.5 * df, square / (df + square)),
                         0.5 * betainc(0.5 * df, 0.5, u))
        return jnp.where(z < 0, tail, 1.0 - tail)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        z = (y - params["loc"]) / params["scale"]
        return self._standard_cdf(z, params["df"])

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        # Bisection on s = asinh(z): |z| up to 1e30 in ~140 units, with relative precision.
        df = params["df"]
        bound = jnp.full(df.shape, math.asinh(1e30), df.dtype)
        s = _bisect(lambda s: self._standard_cdf(jnp.sinh(s), df), q, -bound, bound)
        return params["loc"] + params["scale"] * jnp.sinh(s)

    def variance(self, params: Params) -> jax.Array:
        df = params["df"]
        ratio = df / jnp.where(df > 2, df - 2, 1.0)
        return jnp.where(df > 2, jnp.square(params["scale"]) * ratio, jnp.inf)

    def check_moments(self, order: int) -> None:
        if not self.learned_df and self.df <= order:
            what = "mean" if order == 1 else "finite variance"
            raise ValueError(f"A StudentT family with fixed df={self.df} has no {what} (it "
                             f"needs df > {order}). Use quantiles() for location and spread, "
                             "or a larger df.")

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        bias = super().initial_head_bias(y_std, num_components)
        if self.df == "head":
            # Start at df = min_df + 10: close to Normal, free to grow heavier tails.
            bias["df"] = np.full(bias["loc"].shape, np.log(10.0))
        return bias


@dataclass(frozen=True)
class Laplace(_LocationScale):
    """Laplace (double-exponential) components with independent output dimensions.

    Parameters
    ----------
    min_scale : float
        Floor added to ``softplus(raw)`` for the scale ``b`` (standard deviation
        ``sqrt(2) b``), in standardised units of y.

    Notes
    -----
    Links: ``loc`` identity, ``scale = softplus(raw) + min_scale``. The predictive median
    of a single component is its ``loc``: a robust alternative to the Normal.
    """

    name: ClassVar[str] = "laplace"
    min_scale: float = 1e-3

    def distribution(self, params: Params) -> dist.Distribution:
        return dist.Laplace(params["loc"], params["scale"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        z = (y - params["loc"]) / params["scale"]
        tail = 0.5 * jnp.exp(-jnp.abs(z))
        return jnp.where(z < 0, tail, 1.0 - tail)

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        # log(2 q) below the median, -log(2 (1 - q)) above: no cancellation in either tail.
        z = jnp.where(q < 0.5, jnp.log(2.0 * q), -jnp.log(2.0 * (1.0 - q)))
        return params["loc"] + params["scale"] * z

    def variance(self, params: Params) -> jax.Array:
        return 2.0 * jnp.square(params["scale"])


@dataclass(frozen=True)
class MultivariateNormal(Family):
    """Multivariate Normal components for D >= 2 outputs, with full or diagonal covariance.

    The covariance of each component is ``L L^T`` with ``L`` lower triangular: its diagonal
    is ``softplus(raw) + min_scale`` (the ``scale`` head, K x D outputs) and, for
    ``covariance="full"``, its D (D - 1) / 2 entries below the diagonal are a ``tril`` head
    (identity link, row-major order of ``numpy.tril_indices(D, -1)``). Correlations between
    outputs can therefore change with x.

    Parameters
    ----------
    covariance : {"full", "diagonal"}
        ``"diagonal"`` drops the ``tril`` head (equivalent to :class:`Normal`).
    num_outputs : int, optional
        The number of outputs D this family is meant for; y with another number of columns
        is rejected before fitting. By default any D >= 2 is accepted.
    min_scale : float
        Floor of the Cholesky diagonal in standardised units of y.

    Notes
    -----
    Parameters in :meth:`bayes_mdn.PredictiveMixture.mixture_parameters` are ``loc``
    (D), ``scale`` (the Cholesky diagonal, D) and ``tril`` (D (D - 1) / 2); use
    :meth:`covariance` to assemble the K x D x D covariance matrices.
    """

    name: ClassVar[str] = "multivariate_normal"
    min_outputs: ClassVar[int] = 2
    covariance: str = "full"
    num_outputs: int | None = None
    min_scale: float = 1e-3

    def scale_floor(self) -> float | None:
        return float(self.min_scale) if self.min_scale else None

    def __post_init__(self) -> None:
        if self.covariance not in ("full", "diagonal"):
            raise ValueError(f"`covariance` must be 'full' or 'diagonal'; got "
                             f"{self.covariance!r}.")
        if self.num_outputs is not None:
            if isinstance(self.num_outputs, bool) or not isinstance(self.num_outputs,
                                                                    (int, np.integer)):
                raise TypeError(f"`num_outputs` must be an integer or None; got "
                                f"{self.num_outputs!r}.")
            if self.num_outputs < 2:
                raise ValueError(f"`num_outputs` must be at least 2 for a MultivariateNormal; "
                                 f"got {self.num_outputs}. Use family='normal' for one output.")
            object.__setattr__(self, "num_outputs", int(self.num_outputs))
        _check_number(self.min_scale, "min_scale")

    @property
    def full(self) -> bool:
        """Whether the covariance is full (a ``tril`` head) rather than diagonal."""
        return self.covariance == "full"

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        heads = {"loc": num_outputs, "scale": num_outputs}
        if self.full:
            heads["tril"] = num_outputs * (num_outputs - 1) // 2
        return heads

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        params = {"loc": raw["loc"], "scale": _softplus_floor(raw["scale"], self.min_scale)}
        if self.full:
            params["tril"] = raw["tril"]
        return params

    def to_original_units(self, params: Params, y_shift: jax.Array, y_scale: jax.Array) -> Params:
        # y = shift + diag(y_scale) y_std, so L becomes diag(y_scale) L: row i times y_scale[i].
        out = {"loc": params["loc"] * y_scale + y_shift, "scale": params["scale"] * y_scale}
        if self.full:
            rows = np.tril_indices(y_scale.shape[-1], -1)[0]
            out["tril"] = params["tril"] * y_scale[rows]
        return out

    def scale_tril(self, params: Params) -> jax.Array:
        """Cholesky factors (..., K, D, D) of the component covariances."""
        scale = params["scale"]
        num_outputs = scale.shape[-1]
        matrix = scale[..., :, None] * jnp.eye(num_outputs, dtype=scale.dtype)
        if self.full and num_outputs > 1:
            rows, cols = np.tril_indices(num_outputs, -1)
            matrix = matrix.at[..., rows, cols].set(params["tril"])
        return matrix

    def covariance_matrix(self, params: Params) -> jax.Array:
        """Component covariance matrices (..., K, D, D) = ``L L^T``."""
        tril = self.scale_tril(params)
        return tril @ jnp.swapaxes(tril, -1, -2)

    def distribution(self, params: Params) -> dist.Distribution:
        if not self.full:
            return dist.Normal(params["loc"], params["scale"]).to_event(1)
        return dist.MultivariateNormal(params["loc"], scale_tril=self.scale_tril(params))

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        return ndtr((y - params["loc"]) / jnp.sqrt(self.variance(params)))

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        return params["loc"] + jnp.sqrt(self.variance(params)) * ndtri(q)

    def mean(self, params: Params) -> jax.Array:
        return params["loc"]

    def variance(self, params: Params) -> jax.Array:
        # Row i of L holds the standard deviations that make up Var(y_i).
        return jnp.sum(jnp.square(self.scale_tril(params)), axis=-1)

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        bias = Normal(min_scale=self.min_scale).initial_head_bias(y_std, num_components)
        if self.full:
            num_outputs = y_std.shape[1]
            bias["tril"] = np.zeros(num_components * num_outputs * (num_outputs - 1) // 2)
        return bias

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        columns = y.shape[1]
        if self.num_outputs is not None and columns != self.num_outputs:
            raise ValueError(
                f"`{name}` has {columns} output column(s) but this MultivariateNormal family "
                f"was declared with num_outputs={self.num_outputs}; pass y of shape "
                f"(N, {self.num_outputs})."
            )
        if columns < 2:
            raise ValueError(
                f"The MultivariateNormal family needs D >= 2 outputs; `{name}` has shape "
                f"{y.shape}. Use family='normal' for one output, or pass y of shape (N, D)."
            )


# --------------------------------------------------------------------------- positive
@dataclass(frozen=True)
class LogNormal(Family):
    """Log-normal components for positive y: ``log y`` is Normal within each component.

    y is not standardised (``log y`` is modelled in the data's own units, so the density
    needs no Jacobian beyond the log-normal's own ``1 / y``).

    Parameters
    ----------
    min_scale : float
        Floor added to ``softplus(raw)`` for the standard deviation of ``log y``.

    Notes
    -----
    Links: ``loc`` (mean of ``log y``) identity, ``scale = softplus(raw) + min_scale``.
    Mean ``exp(loc + scale^2 / 2)``, variance ``(exp(scale^2) - 1) exp(2 loc + scale^2)``.
    """

    name: ClassVar[str] = "lognormal"
    standardize_y: ClassVar[bool] = False
    support: ClassVar[tuple[float, float]] = (0.0, math.inf)
    min_scale: float = 1e-3

    def scale_floor(self) -> float | None:
        return float(self.min_scale) if self.min_scale else None

    def __post_init__(self) -> None:
        _check_number(self.min_scale, "min_scale")

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"loc": num_outputs, "scale": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        return {"loc": raw["loc"], "scale": _softplus_floor(raw["scale"], self.min_scale)}

    def distribution(self, params: Params) -> dist.Distribution:
        return _MaskedLogNormal(params["loc"], params["scale"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        positive = y > 0
        log_y = jnp.log(jnp.where(positive, y, 1.0))
        return jnp.where(positive, ndtr((log_y - params["loc"]) / params["scale"]), 0.0)

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        return jnp.exp(params["loc"] + params["scale"] * ndtri(q))

    def mean(self, params: Params) -> jax.Array:
        return jnp.exp(params["loc"] + 0.5 * jnp.square(params["scale"]))

    def variance(self, params: Params) -> jax.Array:
        s2 = jnp.square(params["scale"])
        return jnp.expm1(s2) * jnp.exp(2.0 * params["loc"] + s2)

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        log_y = np.log(y_std)
        loc = np.quantile(log_y, _quantile_levels(num_components), axis=0)
        scale = _log_spread(log_y, num_components) * np.ones_like(loc)
        return {"loc": loc.reshape(-1),
                "scale": _initial_positive_bias(scale, self.min_scale).reshape(-1)}

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        _check_rows(_compute_values(y) > 0, name, "be > 0", "LogNormal",
                    "Drop those rows, shift the data, or use family='normal'. (Values below the "
                    "float32 range count as 0.)")


@dataclass(frozen=True)
class Gamma(Family):
    """Gamma components for positive y, parametrised by mean and concentration (shape).

    y is not standardised.

    Parameters
    ----------
    min_concentration : float
        Floor added to ``exp(raw)`` for the concentration (shape) ``a``; values below 1
        allow densities that diverge at 0.

    Notes
    -----
    Links: ``mean = exp(raw)`` and ``concentration = exp(raw) + min_concentration`` (raw
    outputs clipped to +-50); ``rate = concentration / mean``. Log links keep raw outputs
    O(1) for concentrations from 0.1 to 1000, so the weight prior does not pull them. Component
    variance ``mean^2 / concentration``. Parameters reported by ``mixture_parameters`` are
    ``concentration`` and ``rate``.
    """

    name: ClassVar[str] = "gamma"
    standardize_y: ClassVar[bool] = False
    support: ClassVar[tuple[float, float]] = (0.0, math.inf)
    min_concentration: float = 1e-2

    def __post_init__(self) -> None:
        _check_number(self.min_concentration, "min_concentration")

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"mean": num_outputs, "concentration": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        concentration = self.min_concentration + _exp_link(raw["concentration"])
        log_mean = jnp.clip(raw["mean"], -LOG_LINK_BOUND, LOG_LINK_BOUND)
        return {"concentration": concentration, "rate": concentration * jnp.exp(-log_mean)}

    def distribution(self, params: Params) -> dist.Distribution:
        return _MaskedGamma(params["concentration"], params["rate"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        return gammainc(params["concentration"], params["rate"] * jnp.maximum(y, 0.0))

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        # Bisection on log x of the standard Gamma(a, 1), from the smallest normal float to
        # Cantelli's upper bound a + sqrt(a q / (1 - q)).
        a = params["concentration"]
        eps = jnp.finfo(a.dtype).eps
        qc = jnp.clip(q, eps, 1.0 - eps)
        upper = jnp.log(a + jnp.sqrt(a * qc / (1.0 - qc)))
        lower = jnp.full(a.shape, math.log(jnp.finfo(a.dtype).tiny), a.dtype)
        log_x = _bisect(lambda t: gammainc(a, jnp.exp(t)), q, lower, upper)
        return jnp.exp(log_x) / params["rate"]

    def mean(self, params: Params) -> jax.Array:
        return params["concentration"] / params["rate"]

    def variance(self, params: Params) -> jax.Array:
        return params["concentration"] / jnp.square(params["rate"])

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        # Means at quantiles; concentration from the spread of log y (sd(log y) ~ 1/sqrt(a)).
        log_y = np.log(y_std)
        mean = np.quantile(log_y, _quantile_levels(num_components), axis=0)
        concentration = np.clip(_log_spread(log_y, num_components) ** -2.0, 0.5, 1e4)
        concentration = concentration * np.ones_like(mean)
        return {"mean": mean.reshape(-1),
                "concentration": _initial_log_bias(concentration,
                                                   self.min_concentration).reshape(-1)}

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        _check_rows(_compute_values(y) > 0, name, "be > 0", "Gamma",
                    "Drop those rows, shift the data, or use family='normal'. (Values below the "
                    "float32 range count as 0.)")


@dataclass(frozen=True)
class Beta(Family):
    """Beta components for y strictly between 0 and 1 (proportions, rates).

    y is not standardised.

    Parameters
    ----------
    min_concentration : float
        Floor added to ``exp(raw)`` for the concentration ``a + b``.

    Notes
    -----
    Links: ``mean = sigmoid(raw)`` (raw clipped to +-30), ``concentration = exp(raw) +
    min_concentration`` (raw clipped to +-50); ``concentration1 = concentration * mean`` and
    ``concentration0 = concentration * (1 - mean)`` (the NumPyro names of a and b).
    """

    name: ClassVar[str] = "beta"
    standardize_y: ClassVar[bool] = False
    support: ClassVar[tuple[float, float]] = (0.0, 1.0)
    min_concentration: float = 1e-2

    def __post_init__(self) -> None:
        _check_number(self.min_concentration, "min_concentration")

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"mean": num_outputs, "concentration": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        concentration = self.min_concentration + _exp_link(raw["concentration"])
        logit = jnp.clip(raw["mean"], -LOGIT_LINK_BOUND, LOGIT_LINK_BOUND)
        return {"concentration1": concentration * jax.nn.sigmoid(logit),
                "concentration0": concentration * jax.nn.sigmoid(-logit)}

    def distribution(self, params: Params) -> dist.Distribution:
        return _MaskedBeta(params["concentration1"], params["concentration0"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        return betainc(params["concentration1"], params["concentration0"], jnp.clip(y, 0.0, 1.0))

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        # Bisection on logit(x): relative precision near both 0 and 1.
        a, b = params["concentration1"], params["concentration0"]
        bound = jnp.full(a.shape, -math.log(jnp.finfo(a.dtype).tiny), a.dtype)
        t = _bisect(lambda t: betainc(a, b, jax.nn.sigmoid(t)), q, -bound, bound)
        return jax.nn.sigmoid(t)

    def mean(self, params: Params) -> jax.Array:
        a, b = params["concentration1"], params["concentration0"]
        return a / (a + b)

    def variance(self, params: Params) -> jax.Array:
        a, b = params["concentration1"], params["concentration0"]
        total = a + b
        return a * b / (jnp.square(total) * (total + 1.0))

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        mean = np.clip(np.quantile(y_std, _quantile_levels(num_components), axis=0), 0.02, 0.98)
        spread = np.quantile(y_std, 0.95, axis=0) - np.quantile(y_std, 0.05, axis=0)
        sd = np.maximum(2.0 * spread / num_components, 0.02)
        concentration = np.clip(mean * (1 - mean) / np.square(sd) - 1.0, 2.0, 1e3)
        return {"mean": np.log(mean / (1 - mean)).reshape(-1),
                "concentration": _initial_log_bias(concentration,
                                                   self.min_concentration).reshape(-1)}

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        values = _compute_values(y)
        _check_rows((values > 0) & (values < 1), name, "lie strictly between 0 and 1", "Beta",
                    "Values that round to 0 or 1 in the compute dtype count as 0 or 1; clip "
                    "them, e.g. np.clip(y, 1e-6, 1 - 1e-6), or drop those rows.")


# --------------------------------------------------------------------------- counts
@dataclass(frozen=True)
class _Counts(Family):
    """Shared code of count families: support check, integer quantiles."""

    standardize_y: ClassVar[bool] = False
    discrete: ClassVar[bool] = True
    support: ClassVar[tuple[float, float]] = (0.0, math.inf)

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        return _integer_quantile(lambda k: self.marginal_cdf(params, k), q, self.mean(params),
                                 self.variance(params))

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        values = np.asarray(y, np.float64)
        _check_rows((values >= 0) & (values == np.floor(values)), name,
                    "hold non-negative integers (counts)", self.label,
                    "Round or drop those rows (e.g. np.round(y)), or use a continuous family "
                    "such as 'gamma' or 'normal'.")

    @property
    def label(self) -> str:
        """The family's name in error messages, e.g. ``"Poisson"``."""
        return type(self).__name__

    @staticmethod
    def _initial_log_mean(y: np.ndarray, num_components: int) -> np.ndarray:
        mean = np.quantile(y, _quantile_levels(num_components), axis=0)
        return np.log(np.maximum(mean, 0.1))


@dataclass(frozen=True)
class Poisson(_Counts):
    """Poisson components for counts y = 0, 1, 2, ...

    Notes
    -----
    Link: ``rate = exp(raw)`` (raw clipped to +-50). Mean and variance equal the rate;
    for over-dispersed counts use :class:`NegativeBinomial` (or more components).
    """

    name: ClassVar[str] = "poisson"

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"rate": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        return {"rate": _exp_link(raw["rate"])}

    def distribution(self, params: Params) -> dist.Distribution:
        return _MaskedPoisson(params["rate"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        # P(Y <= k) = Q(k + 1, rate), the regularised upper incomplete gamma function.
        count = jnp.floor(jnp.maximum(y, 0.0))
        return jnp.where(y >= 0, gammaincc(count + 1.0, params["rate"]), 0.0)

    def mean(self, params: Params) -> jax.Array:
        return params["rate"]

    def variance(self, params: Params) -> jax.Array:
        return params["rate"]

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        return {"rate": self._initial_log_mean(y_std, num_components).reshape(-1)}


@dataclass(frozen=True)
class NegativeBinomial(_Counts):
    """Negative binomial (Gamma-Poisson) components for over-dispersed counts y = 0, 1, ...

    Parameters
    ----------
    min_concentration : float
        Floor added to ``exp(raw)`` for the concentration r (the "size"); the variance is
        ``mean + mean^2 / r``, so a large r is nearly Poisson.

    Notes
    -----
    Links: ``mean = exp(raw)`` and ``concentration = exp(raw) + min_concentration`` (raw
    outputs clipped to +-50). This is NumPyro's ``NegativeBinomial2(mean, concentration)``.
    """

    name: ClassVar[str] = "negative_binomial"
    min_concentration: float = 1e-2

    def __post_init__(self) -> None:
        _check_number(self.min_concentration, "min_concentration")

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        return {"mean": num_outputs, "concentration": num_outputs}

    def constrain(self, raw: Params, y_scale: jax.Array,
                  latents: Params | None = None) -> Params:
        return {"mean": _exp_link(raw["mean"]),
                "concentration": self.min_concentration + _exp_link(raw["concentration"])}

    def distribution(self, params: Params) -> dist.Distribution:
        return _MaskedNegativeBinomial(params["mean"], params["concentration"]).to_event(1)

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        # P(Y <= k) = I_p(r, k + 1) with success probability p = r / (r + mean).
        r = params["concentration"]
        count = jnp.floor(jnp.maximum(y, 0.0))
        p = r / (r + params["mean"])
        return jnp.where(y >= 0, betainc(r, count + 1.0, p), 0.0)

    def mean(self, params: Params) -> jax.Array:
        return params["mean"]

    def variance(self, params: Params) -> jax.Array:
        mean = params["mean"]
        return mean + jnp.square(mean) / params["concentration"]

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        log_mean = self._initial_log_mean(y_std, num_components)
        concentration = np.full(log_mean.shape, 10.0)
        return {"mean": log_mean.reshape(-1),
                "concentration": _initial_log_bias(concentration,
                                                   self.min_concentration).reshape(-1)}


#: The family registry: name (``Family.name``, as written by ``to_config``) -> class. Add a
#: user-defined family with :func:`register_family`.
FAMILIES: dict[str, type[Family]] = {
    "normal": Normal,
    "studentt": StudentT,
    "laplace": Laplace,
    "multivariate_normal": MultivariateNormal,
    "lognormal": LogNormal,
    "gamma": Gamma,
    "beta": Beta,
    "poisson": Poisson,
    "negative_binomial": NegativeBinomial,
}
_FAMILIES = FAMILIES  # the registry's former name
#: Extra spellings accepted by :func:`resolve_family` (never written by ``to_config``).
_ALIASES: dict[str, str] = {
    "student_t": "studentt",
    "mvn": "multivariate_normal",
    "multivariatenormal": "multivariate_normal",
    "log_normal": "lognormal",
    "negativebinomial": "negative_binomial",
    "negbin": "negative_binomial",
}


def register_family(cls: type[Family]) -> type[Family]:
    """Register a family class under its ``name``, so that models using it save and load.

    Usable as a class decorator. Registering the same class again is a no-op.

    Parameters
    ----------
    cls : type
        A frozen-dataclass subclass of :class:`Family` with a ``name`` of its own.

    Returns
    -------
    type
        `cls`, unchanged.

    Raises
    ------
    TypeError
        If `cls` is not a dataclass subclass of Family.
    ValueError
        If its name is the base class's or already names another family.
    """
    if not (isinstance(cls, type) and issubclass(cls, Family) and dataclasses.is_dataclass(cls)):
        raise TypeError("register_family takes a @dataclass(frozen=True) subclass of "
                        f"bayes_mdn.families.Family; got {cls!r}.")
    name = cls.name
    if not isinstance(name, str) or name == Family.name or "name" not in cls.__dict__:
        raise ValueError(f"{cls.__name__} needs a name of its own: set the class attribute "
                         "`name: ClassVar[str] = \"my_family\"`.")
    if FAMILIES.get(name, cls) is not cls:
        raise ValueError(f"The family name {name!r} is taken by {FAMILIES[name].__name__}; "
                         f"choose another `name` for {cls.__name__}.")
    FAMILIES[name] = cls
    return cls


def resolve_family(family: str | Family) -> Family:
    """Turn a family name or instance into a :class:`Family` instance.

    Names: ``"normal"``, ``"studentt"``, ``"laplace"``, ``"multivariate_normal"``
    (``"mvn"``), ``"lognormal"``, ``"gamma"``, ``"beta"``, ``"poisson"``,
    ``"negative_binomial"`` (``"negbin"``); case-insensitive, default options.
    """
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        key = family.lower()
        key = _ALIASES.get(key, key)
        if key not in FAMILIES:
            raise ValueError(f"Unknown family {family!r}; choose one of {sorted(FAMILIES)}.")
        return FAMILIES[key]()
    raise TypeError(
        f"`family` must be a family name such as 'normal' or an instance like "
        f"bayes_mdn.families.Normal(); got {type(family).__name__}."
    )


def family_from_config(config: dict[str, Any]) -> Family:
    """Rebuild a family from :meth:`Family.to_config` output."""
    options = dict(config)
    name = options.pop("name", None)
    if name not in FAMILIES:
        raise ValueError(f"Unknown family {name!r} in saved configuration. If it is a family "
                         "defined in your code, register it before loading: "
                         "bayes_mdn.families.register_family(MyFamily).")
    return FAMILIES[name](**options)
