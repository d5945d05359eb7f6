"""Component families: raw head outputs -> constrained parameters -> NumPyro distributions.

A family decides which heads the network has (``head_dims``), how raw outputs become valid
parameters (``constrain``, with stable links such as softplus plus a floor), how parameters
move between standardised and original units, and which per-component quantities the
predictive mixture needs (marginal cdf and quantiles, mean, variance).

Every parameter array has shape (..., K, d): the trailing axes are component and the
per-component width (D for a diagonal Normal). Distributions have batch shape (..., K)
and event shape (D,).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import ndtr, ndtri

__all__ = ["Family", "Normal", "family_from_config", "resolve_family"]

Params = dict[str, jax.Array]


def inverse_softplus(value: np.ndarray) -> np.ndarray:
    """Numerically stable inverse of ``softplus`` for positive values."""
    value = np.asarray(value, dtype=np.float64)
    return value + np.log(-np.expm1(-value))


@dataclass(frozen=True)
class Family:
    """Base class of component families. Subclasses are frozen dataclasses (hashable)."""

    name: ClassVar[str] = "family"
    #: Whether y is standardised (shifted and scaled) before fitting. True for
    #: location-scale families; positive, bounded and count families keep raw y.
    standardize_y: ClassVar[bool] = True

    def head_dims(self, num_outputs: int) -> dict[str, int]:
        """Per-component width of each head, e.g. ``{"loc": D, "scale": D}``."""
        raise NotImplementedError

    def constrain(self, raw: Params, y_scale: jax.Array) -> Params:
        """Map raw head outputs (..., K, d) to parameters in standardised units.

        `y_scale` (D,) is the standard deviation used to standardise y, needed only by
        quantities the user fixes in original units (e.g. a fixed scale).
        """
        raise NotImplementedError

    def to_original_units(self, params: Params, y_shift: jax.Array, y_scale: jax.Array) -> Params:
        """Map parameters from standardised to original units of y."""
        raise NotImplementedError

    def distribution(self, params: Params) -> dist.Distribution:
        """NumPyro distribution with batch shape (..., K) and event shape (D,)."""
        raise NotImplementedError

    def marginal_cdf(self, params: Params, y: jax.Array) -> jax.Array:
        """Per-dimension cdf of each component at `y` (..., 1, D) -> (..., K, D)."""
        raise NotImplementedError

    def marginal_icdf(self, params: Params, q: jax.Array) -> jax.Array:
        """Per-dimension quantile of each component at probability `q` -> (..., K, D)."""
        raise NotImplementedError

    def mean(self, params: Params) -> jax.Array:
        """Per-component mean, (..., K, D)."""
        raise NotImplementedError

    def variance(self, params: Params) -> jax.Array:
        """Per-component marginal variance, (..., K, D)."""
        raise NotImplementedError

    def initial_head_bias(self, y_std: np.ndarray, num_components: int) -> dict[str, np.ndarray]:
        """Initial head biases (per head, shape (K * d,)) from standardised training targets."""
        raise NotImplementedError

    def check_support(self, y: np.ndarray, name: str = "y") -> None:
        """Raise ValueError naming the rows of `y` outside the family's support."""

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description, inverted by :func:`family_from_config`."""
        return {"name": self.name, **dataclasses.asdict(self)}


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
    min_scale: float = 1e-3
    fixed_scale: float | None = None

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

    def constrain(self, raw: Params, y_scale: jax.Array) -> Params:
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


_FAMILIES: dict[str, type[Family]] = {"normal": Normal}


def resolve_family(family: str | Family) -> Family:
    """Turn a family name or instance into a :class:`Family` instance."""
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        key = family.lower()
        if key not in _FAMILIES:
            raise ValueError(f"Unknown family {family!r}; choose one of {sorted(_FAMILIES)}.")
        return _FAMILIES[key]()
    raise TypeError(
        f"`family` must be a family name such as 'normal' or an instance like "
        f"bayes_mdn.families.Normal(); got {type(family).__name__}."
    )


def family_from_config(config: dict[str, Any]) -> Family:
    """Rebuild a family from :meth:`Family.to_config` output."""
    options = dict(config)
    name = options.pop("name", None)
    if name not in _FAMILIES:
        raise ValueError(f"Unknown family {name!r} in saved configuration.")
    return _FAMILIES[name](**options)
