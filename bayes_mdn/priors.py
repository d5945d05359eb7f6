"""Prior specifications: one NumPyro prior per weight tensor, addressable by dotted site name.

A ``prior`` argument of :class:`bayes_mdn.MDN` may be

* a :class:`Prior` (applied to every site), e.g. ``FanInNormal()`` (the default);
* a dict from site names (``"hidden_0.kernel"``), layer names (``"loc"``) or
  ``"default"`` to :class:`Prior` objects; the most specific key wins;
* a callable ``(name, shape) -> numpyro.distributions.Distribution`` (the convention of
  ``numpyro.contrib.module.random_flax_module``); a scalar distribution is expanded to the
  site's shape.

Priors act on the network that sees *standardised* X and y, so a unit-scale prior means the
same thing whatever units the data come in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = [
    "CallablePrior",
    "FanInNormal",
    "Flat",
    "Normal",
    "Prior",
    "PriorMap",
    "Site",
    "prior_from_config",
    "resolve_prior",
]


class Site(NamedTuple):
    """A network parameter site: dotted name, shape, fan-in of its layer, and its role."""

    name: str
    shape: tuple[int, ...]
    fan_in: int
    role: str  # "kernel" or "bias"

    @property
    def layer(self) -> str:
        return self.name.rsplit(".", 1)[0]


def _check_scale(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"`{name}` must be a positive number; got {value!r}.")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite positive number; got {value}.")


@dataclass(frozen=True)
class Prior:
    """Base class of weight priors. Subclasses are frozen dataclasses."""

    name: ClassVar[str] = "prior"

    def distribution(self, site: Site) -> dist.Distribution:
        """The prior of one site, with event shape equal to ``site.shape``."""
        raise NotImplementedError

    def sample(self, site: Site) -> jax.Array:
        """Declare the site in the NumPyro model (hierarchical priors add hyper-sites here)."""
        return numpyro.sample(site.name, self.distribution(site))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Normal(Prior):
    """Independent ``Normal(0, scale)`` on every entry of the tensor.

    Parameters
    ----------
    scale : float
        Prior standard deviation.
    """

    name: ClassVar[str] = "normal"
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_scale(self.scale, "scale")

    def distribution(self, site: Site) -> dist.Distribution:
        return dist.Normal(0.0, self.scale).expand(site.shape).to_event(len(site.shape))


@dataclass(frozen=True)
class FanInNormal(Prior):
    """``Normal(0, scale / sqrt(fan_in))`` on kernels and ``Normal(0, bias_scale)`` on biases.

    The fan-in scaling keeps the prior variance of each unit's pre-activation independent
    of the layer width, the standard choice for Bayesian neural networks (Neal, 1996).

    Parameters
    ----------
    scale : float
        Kernel scale before dividing by ``sqrt(fan_in)``.
    bias_scale : float
        Standard deviation of bias entries.
    """

    name: ClassVar[str] = "fan_in_normal"
    scale: float = 1.0
    bias_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_scale(self.scale, "scale")
        _check_scale(self.bias_scale, "bias_scale")

    def distribution(self, site: Site) -> dist.Distribution:
        std = self.scale / np.sqrt(site.fan_in) if site.role == "kernel" else self.bias_scale
        return dist.Normal(0.0, std).expand(site.shape).to_event(len(site.shape))


@dataclass(frozen=True)
class Flat(Prior):
    """Improper flat prior: MAP under it is maximum likelihood (the 2016 seed post).

    Only meaningful for ``method="map"``; sampling methods need a proper prior.
    """

    name: ClassVar[str] = "flat"

    def distribution(self, site: Site) -> dist.Distribution:
        return dist.ImproperUniform(constraints.real, (), event_shape=site.shape)


@dataclass(frozen=True)
class CallablePrior(Prior):
    """Wraps a user callable ``(name, shape) -> Distribution``; not serialisable."""

    name: ClassVar[str] = "callable"
    function: Callable[[str, tuple[int, ...]], dist.Distribution] = None  # type: ignore[assignment]

    def distribution(self, site: Site) -> dist.Distribution:
        prior = self.function(site.name, site.shape)
        if not isinstance(prior, dist.Distribution):
            raise TypeError(
                f"The prior callable returned {type(prior).__name__} for site {site.name!r}; "
                "it must return a numpyro.distributions.Distribution."
            )
        full_shape = tuple(prior.batch_shape) + tuple(prior.event_shape)
        if full_shape == ():
            return prior.expand(site.shape).to_event(len(site.shape))
        if full_shape != tuple(site.shape):
            raise ValueError(
                f"The prior callable returned a distribution of shape {full_shape} for site "
                f"{site.name!r}, which has shape {site.shape}; return a scalar distribution "
                "or one of the site's shape."
            )
        return prior.to_event(len(prior.batch_shape)) if prior.batch_shape else prior

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "repr": repr(self.function)}


@dataclass(frozen=True)
class PriorMap:
    """Per-site priors: ``entries`` maps site or layer names to priors, ``default`` the rest."""

    entries: tuple[tuple[str, Prior], ...] = ()
    default: Prior = FanInNormal()

    def for_site(self, site: Site) -> Prior:
        lookup = dict(self.entries)
        return lookup.get(site.name, lookup.get(site.layer, self.default))

    def check_sites(self, sites: tuple[Site, ...]) -> None:
        """Raise if a key names no site of this network (catches typos before fitting)."""
        known = {site.name for site in sites} | {site.layer for site in sites}
        unknown = [key for key, _ in self.entries if key not in known]
        if unknown:
            raise ValueError(
                f"Prior keys {unknown} match no parameter site; valid keys are "
                f"{sorted(known)} and 'default'."
            )

    def sample(self, site: Site) -> jax.Array:
        return self.for_site(site).sample(site)

    def to_config(self) -> dict[str, Any]:
        return {
            "name": "map",
            "default": self.default.to_config(),
            "entries": {key: prior.to_config() for key, prior in self.entries},
        }


def resolve_prior(prior: Any) -> PriorMap:
    """Normalise any accepted ``prior`` argument to a hashable :class:`PriorMap`."""
    if prior is None:
        return PriorMap()
    if isinstance(prior, PriorMap):
        return prior
    if isinstance(prior, Prior):
        return PriorMap(default=prior)
    if isinstance(prior, Mapping):
        entries = []
        default: Prior = FanInNormal()
        for key, value in prior.items():
            if not isinstance(key, str):
                raise TypeError(f"Prior dict keys must be site names (str); got {key!r}.")
            if not isinstance(value, Prior):
                raise TypeError(
                    f"Prior dict value for {key!r} must be a bayes_mdn.priors.Prior such as "
                    f"priors.Normal(1.0); got {type(value).__name__}."
                )
            if key == "default":
                default = value
            else:
                entries.append((key, value))
        return PriorMap(tuple(sorted(entries, key=lambda item: item[0])), default)
    if callable(prior):
        return PriorMap(default=CallablePrior(prior))
    raise TypeError(
        "`prior` must be a bayes_mdn.priors.Prior, a dict of site names to priors, or a "
        f"callable (name, shape) -> Distribution; got {type(prior).__name__}."
    )


_PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (Normal, FanInNormal, Flat)}


@dataclass(frozen=True)
class UnavailablePrior(Prior):
    """Stands in for a callable prior after loading: predictions work, refitting does not."""

    name: ClassVar[str] = "unavailable"
    description: str = ""

    def distribution(self, site: Site) -> dist.Distribution:
        raise ValueError(
            f"This model was saved with a custom callable prior ({self.description}), which "
            "cannot be stored. Pass the prior again, e.g. dataclasses.replace(model, prior=...)."
        )


def _single_prior_from_config(config: Mapping[str, Any]) -> Prior:
    options = dict(config)
    name = options.pop("name", None)
    if name == "callable":
        return UnavailablePrior(description=str(options.get("repr", "")))
    if name not in _PRIORS:
        raise ValueError(f"Unknown prior {name!r} in saved configuration.")
    return _PRIORS[name](**options)


def prior_from_config(config: Mapping[str, Any]) -> PriorMap:
    """Rebuild a :class:`PriorMap` from :meth:`PriorMap.to_config` output."""
    entries = tuple(
        (key, _single_prior_from_config(value)) for key, value in config["entries"].items()
    )
    return PriorMap(entries, _single_prior_from_config(config["default"]))


def log_density(prior_map: PriorMap, sites: tuple[Site, ...], params: Mapping[str, Any]) -> Any:
    """Total prior log-density of `params` (for tests and hand checks)."""
    return sum(
        jnp.sum(prior_map.for_site(site).distribution(site).log_prob(params[site.name]))
        for site in sites
    )
