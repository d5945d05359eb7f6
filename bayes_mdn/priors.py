"""Prior specifications: one NumPyro prior per weight tensor, addressable by dotted site name.

A ``prior`` argument of :class:`bayes_mdn.MDN` may be

* a :class:`Prior` (applied to every site), e.g. ``FanInNormal()`` (the default);
* a dict from site names (``"hidden_0.kernel"``), layer names (``"loc"``) or
  ``"default"`` to :class:`Prior` objects; the most specific key wins;
* a callable ``(name, shape) -> numpyro.distributions.Distribution`` (the convention of
  ``numpyro.contrib.module.random_flax_module``); a scalar distribution is expanded to the
  site's shape.

The priors: :class:`Normal`, :class:`FanInNormal` (default), :class:`Laplace`,
:class:`StudentT`, :class:`Hierarchical` (a learned scale per tensor or per input unit, ARD),
:class:`Horseshoe` (regularised) and :class:`Flat` (maximum likelihood, MAP only).

Hierarchical priors are non-centred: their NumPyro sites are latents (``"<site>.z"``,
``"<site>.tau"``, ...) from which the weight is computed, so posterior draws hold latents and
:meth:`bayes_mdn.MDN.network_weights` maps them to weights. Other priors' latent is the
weight itself, under the site's own name.

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
    "Hierarchical",
    "Horseshoe",
    "Laplace",
    "Normal",
    "Prior",
    "PriorMap",
    "Site",
    "StudentT",
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

    # Latent parametrisation. Most priors put one sample site on the weight tensor itself.
    # Hierarchical priors are written non-centred: independent latent sites (standard normal
    # z, positive scales) and the weight a deterministic function of them, which keeps the
    # posterior free of funnels for NUTS and the scales free to move for MAP and VI.
    def latent_distributions(self, site: Site) -> dict[str, dist.Distribution]:
        """The independent NumPyro sites that determine the weight tensor of `site`.

        Returns a dict from site name to a distribution whose event shape is the latent's
        shape. The default is the weight itself: ``{site.name: self.distribution(site)}``.
        """
        return {site.name: self.distribution(site)}

    def weight(self, site: Site, latents: Mapping[str, jax.Array]) -> jax.Array:
        """The weight tensor (``site.shape``) from the latent values of `site`."""
        return latents[site.name]

    def initial_latents(self, site: Site, weight: jax.Array) -> dict[str, jax.Array]:
        """Latent values that reproduce `weight` (the network initialisation) exactly."""
        return {site.name: weight}

    def sample(self, site: Site) -> dict[str, jax.Array]:
        """Declare the latent sites of `site` in the NumPyro model; returns their values."""
        return {name: numpyro.sample(name, prior)
                for name, prior in self.latent_distributions(site).items()}

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


def _fan_in_std(site: Site, scale: float, bias_scale: float, fan_in: bool) -> float:
    """Per-entry scale: `scale` / sqrt(fan_in) on kernels (if `fan_in`), `bias_scale` on biases."""
    if site.role != "kernel":
        return bias_scale
    return scale / np.sqrt(site.fan_in) if fan_in else scale


def _check_fan_in_flag(value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`fan_in` must be True or False; got {value!r}.")


@dataclass(frozen=True)
class Laplace(Prior):
    """Independent ``Laplace(0, b)`` entries: sparser weights than a Normal of the same scale.

    Parameters
    ----------
    scale : float
        Laplace scale b of kernel entries (standard deviation b * sqrt(2)), divided by
        ``sqrt(fan_in)`` when `fan_in` is true.
    bias_scale : float
        Laplace scale of bias entries.
    fan_in : bool
        Scale kernels by ``1 / sqrt(fan_in)`` as :class:`FanInNormal` does.
    """

    name: ClassVar[str] = "laplace"
    scale: float = 1.0
    bias_scale: float = 1.0
    fan_in: bool = True

    def __post_init__(self) -> None:
        _check_scale(self.scale, "scale")
        _check_scale(self.bias_scale, "bias_scale")
        _check_fan_in_flag(self.fan_in)

    def distribution(self, site: Site) -> dist.Distribution:
        scale = _fan_in_std(site, self.scale, self.bias_scale, self.fan_in)
        return dist.Laplace(0.0, scale).expand(site.shape).to_event(len(site.shape))


@dataclass(frozen=True)
class StudentT(Prior):
    """Independent Student-t entries: heavy tails let a few weights grow large.

    Parameters
    ----------
    df : float
        Degrees of freedom (smaller is heavier-tailed; 1 is Cauchy).
    scale : float
        Scale of kernel entries, divided by ``sqrt(fan_in)`` when `fan_in` is true.
    bias_scale : float
        Scale of bias entries.
    fan_in : bool
        Scale kernels by ``1 / sqrt(fan_in)``.
    """

    name: ClassVar[str] = "student_t"
    df: float = 3.0
    scale: float = 1.0
    bias_scale: float = 1.0
    fan_in: bool = True

    def __post_init__(self) -> None:
        _check_scale(self.df, "df")
        _check_scale(self.scale, "scale")
        _check_scale(self.bias_scale, "bias_scale")
        _check_fan_in_flag(self.fan_in)

    def distribution(self, site: Site) -> dist.Distribution:
        scale = _fan_in_std(site, self.scale, self.bias_scale, self.fan_in)
        return dist.StudentT(self.df, 0.0, scale).expand(site.shape).to_event(len(site.shape))


@dataclass(frozen=True)
class Hierarchical(Prior):
    """A learned scale per weight tensor (or per input unit: ARD) with a half-normal hyperprior.

    ``w = z * tau * base`` with ``z ~ Normal(0, 1)`` entries and ``tau ~ HalfNormal(scale)``
    (``HalfNormal(bias_scale)`` for biases); ``base`` is ``1 / sqrt(fan_in)`` on kernels when
    `fan_in` is true. The data choose how large each layer's (or each input's) weights are,
    instead of a fixed prior scale. The latent sites are ``"<site>.z"`` and ``"<site>.tau"``
    (non-centred, so NUTS sees no funnel); ``MDN.network_weights`` turns them into weights.

    Meant for the sampling methods (NUTS, SVI): the posterior is the same whatever the
    parametrisation, but its *mode* is not. The MAP point of (z, tau) lacks the
    ``-n log tau`` volume term of the weights' own density, so MAP lets the scales grow and
    overfits (on the seed problem with 200 points: MAP -5.2 nats/point, NUTS -1.54). For
    point estimates use a fixed-scale prior such as :class:`FanInNormal`, or an ensemble.

    Parameters
    ----------
    scale : float
        Scale of the half-normal hyperprior on kernel scales.
    bias_scale : float
        Scale of the half-normal hyperprior on bias scales.
    fan_in : bool
        Multiply kernel entries by ``1 / sqrt(fan_in)``.
    group : {"tensor", "input"}
        ``"tensor"``: one scale per weight tensor. ``"input"``: one scale per input unit
        (row) of each kernel, automatic relevance determination (ARD); biases keep one.
    """

    name: ClassVar[str] = "hierarchical"
    scale: float = 1.0
    bias_scale: float = 1.0
    fan_in: bool = True
    group: str = "tensor"

    def __post_init__(self) -> None:
        _check_scale(self.scale, "scale")
        _check_scale(self.bias_scale, "bias_scale")
        _check_fan_in_flag(self.fan_in)
        if self.group not in ("tensor", "input"):
            raise ValueError(f"`group` must be 'tensor' or 'input'; got {self.group!r}.")

    def distribution(self, site: Site) -> dist.Distribution:
        raise ValueError(
            "A Hierarchical prior has no closed-form marginal per weight; use "
            "latent_distributions(site) (its sites are '<site>.z' and '<site>.tau')."
        )

    def _tau_shape(self, site: Site) -> tuple[int, ...]:
        if self.group == "input" and site.role == "kernel":
            return (site.shape[0], 1)
        return ()

    def _hyper(self, site: Site) -> float:
        return self.scale if site.role == "kernel" else self.bias_scale

    def _base(self, site: Site) -> float:
        return float(_fan_in_std(site, 1.0, 1.0, self.fan_in))

    def latent_distributions(self, site: Site) -> dict[str, dist.Distribution]:
        tau_shape = self._tau_shape(site)
        return {
            f"{site.name}.z": dist.Normal(0.0, 1.0).expand(site.shape).to_event(len(site.shape)),
            f"{site.name}.tau": dist.HalfNormal(self._hyper(site)).expand(tau_shape)
            .to_event(len(tau_shape)),
        }

    def weight(self, site: Site, latents: Mapping[str, jax.Array]) -> jax.Array:
        return latents[f"{site.name}.z"] * latents[f"{site.name}.tau"] * self._base(site)

    def initial_latents(self, site: Site, weight: jax.Array) -> dict[str, jax.Array]:
        # Start each scale at its hyperprior scale; z then reproduces the weight exactly.
        tau = jnp.full(self._tau_shape(site), self._hyper(site), dtype=weight.dtype)
        return {f"{site.name}.z": weight / (tau * self._base(site)), f"{site.name}.tau": tau}


@dataclass(frozen=True)
class Horseshoe(Prior):
    """Regularised horseshoe on kernels (Piironen & Vehtari, 2017); Normal biases.

    ``w = z * tau * lambda_tilde`` with ``z ~ Normal(0, 1)``, local scales
    ``lambda ~ HalfCauchy(1)``, a global scale ``tau ~ HalfCauchy(global_scale * base)``
    (``base = 1 / sqrt(fan_in)`` when `fan_in` is true) and a slab
    ``c^2 ~ InverseGamma(slab_df / 2, slab_df * slab_scale^2 / 2)`` that bounds the large
    weights: ``lambda_tilde^2 = c^2 lambda^2 / (c^2 + tau^2 lambda^2)``. Most weights shrink
    to zero, a few escape. Latent sites per kernel: ``"<site>.z"``, ``"<site>.lambda"``,
    ``"<site>.tau"``, ``"<site>.c2"``.

    Parameters
    ----------
    global_scale : float
        Scale of the half-Cauchy prior on the global shrinkage tau (before fan-in scaling).
    slab_scale : float
        Scale of the slab, the typical size of weights that escape shrinkage.
    slab_df : float
        Degrees of freedom of the slab.
    bias_scale : float
        Standard deviation of the Normal prior on biases.
    fan_in : bool
        Scale the global shrinkage by ``1 / sqrt(fan_in)``.
    """

    name: ClassVar[str] = "horseshoe"
    global_scale: float = 1.0
    slab_scale: float = 2.0
    slab_df: float = 4.0
    bias_scale: float = 1.0
    fan_in: bool = True

    def __post_init__(self) -> None:
        for name in ("global_scale", "slab_scale", "slab_df", "bias_scale"):
            _check_scale(getattr(self, name), name)
        _check_fan_in_flag(self.fan_in)

    def distribution(self, site: Site) -> dist.Distribution:
        if site.role != "kernel":
            return dist.Normal(0.0, self.bias_scale).expand(site.shape).to_event(len(site.shape))
        raise ValueError(
            "A Horseshoe prior has no closed-form marginal per weight; use "
            "latent_distributions(site)."
        )

    def _tau_scale(self, site: Site) -> float:
        return float(_fan_in_std(site, self.global_scale, self.global_scale, self.fan_in))

    def latent_distributions(self, site: Site) -> dict[str, dist.Distribution]:
        if site.role != "kernel":
            return {site.name: self.distribution(site)}
        rank = len(site.shape)
        half_df = 0.5 * self.slab_df
        return {
            f"{site.name}.z": dist.Normal(0.0, 1.0).expand(site.shape).to_event(rank),
            f"{site.name}.lambda": dist.HalfCauchy(1.0).expand(site.shape).to_event(rank),
            f"{site.name}.tau": dist.HalfCauchy(self._tau_scale(site)),
            f"{site.name}.c2": dist.InverseGamma(half_df, half_df * self.slab_scale ** 2),
        }

    @staticmethod
    def _shrinkage(site: Site, lam, tau, c2):
        lam2 = jnp.square(lam)
        return tau * jnp.sqrt(c2 * lam2 / (c2 + jnp.square(tau) * lam2))

    def weight(self, site: Site, latents: Mapping[str, jax.Array]) -> jax.Array:
        if site.role != "kernel":
            return latents[site.name]
        shrink = self._shrinkage(site, latents[f"{site.name}.lambda"],
                                 latents[f"{site.name}.tau"], latents[f"{site.name}.c2"])
        return latents[f"{site.name}.z"] * shrink

    def initial_latents(self, site: Site, weight: jax.Array) -> dict[str, jax.Array]:
        if site.role != "kernel":
            return {site.name: weight}
        lam = jnp.ones(site.shape, weight.dtype)
        tau = jnp.asarray(self._tau_scale(site), weight.dtype)
        c2 = jnp.asarray(self.slab_scale ** 2, weight.dtype)
        return {f"{site.name}.z": weight / self._shrinkage(site, lam, tau, c2),
                f"{site.name}.lambda": lam, f"{site.name}.tau": tau, f"{site.name}.c2": c2}


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

    def sample(self, site: Site) -> dict[str, jax.Array]:
        return self.for_site(site).sample(site)

    def latent_distributions(self, sites: tuple[Site, ...]) -> dict[str, dist.Distribution]:
        """Every latent site of the network, in network order."""
        latents: dict[str, dist.Distribution] = {}
        for site in sites:
            latents.update(self.for_site(site).latent_distributions(site))
        return latents

    def weights(self, sites: tuple[Site, ...], latents: Mapping[str, jax.Array]
                ) -> dict[str, jax.Array]:
        """Network weights ``{site.name: array}`` from latent values."""
        return {site.name: self.for_site(site).weight(site, latents) for site in sites}

    def initial_latents(self, sites: tuple[Site, ...], weights: Mapping[str, jax.Array]
                        ) -> dict[str, jax.Array]:
        """Latent values reproducing the network `weights` (one value per latent site)."""
        latents: dict[str, jax.Array] = {}
        for site in sites:
            latents.update(self.for_site(site).initial_latents(site, weights[site.name]))
        return latents

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


_PRIORS: dict[str, type[Prior]] = {
    cls.name: cls
    for cls in (Normal, FanInNormal, Flat, Laplace, StudentT, Hierarchical, Horseshoe)
}


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
    """Total prior log-density of the latent values `params` (one entry per latent site)."""
    return sum(jnp.sum(prior.log_prob(params[name]))
               for name, prior in prior_map.latent_distributions(sites).items())
