"""The frozen MDN specification and the NumPyro model built from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from bayes_mdn import network
from bayes_mdn._validation import check_positive_int
from bayes_mdn.families import Family, family_from_config, resolve_family
from bayes_mdn.feature_networks import network_from_config, resolve_network
from bayes_mdn.priors import Site, prior_from_config, resolve_prior

if TYPE_CHECKING:
    from bayes_mdn.posterior import Posterior

__all__ = ["MDN", "mean_log_likelihood", "point_log_prob", "predictive_log_likelihood"]

LOGITS = "logits"
#: Draw entries named ``LINEARISED_PREFIX + site`` hold the point at which the network is
#: linearised (Laplace's linearised predictive); see :meth:`MDN.mixture`.
LINEARISED_PREFIX = "linearised_at:"


@dataclass(frozen=True)
class MDN:
    """A Bayesian Mixture Density Network: the model specification, validated on construction.

    The network maps standardised inputs through ``hidden_sizes`` dense layers with
    ``activation``, then one linear head per mixture parameter: ``logits`` (K mixing
    logits) and the family's heads (for a Normal, ``loc`` and ``scale``, K x D each).
    Every kernel and bias is a NumPyro sample site with a prior.

    Parameters
    ----------
    num_components : int
        K, the number of mixture components.
    hidden_sizes : tuple of int
        Widths of the hidden layers; ``()`` gives a linear model of the mixture parameters.
    activation : str
        One of ``"tanh"``, ``"relu"``, ``"elu"``, ``"gelu"``, ``"silu"``, ``"softplus"``,
        ``"sigmoid"``.
    family : str or bayes_mdn.families.Family
        Component family, e.g. ``"normal"`` or ``bayes_mdn.families.Normal(min_scale=1e-3)``.
    prior : Prior, dict, callable or None
        Weight priors; see :mod:`bayes_mdn.priors`. ``None`` means ``FanInNormal()``.
    network : flax.linen.Module or equinox.Module, optional
        A feature network run on the standardised inputs before the hidden layers (use
        ``hidden_sizes=()`` to put the heads straight on its features). Its arrays get
        priors like every other site; see :mod:`bayes_mdn.feature_networks`.

    Examples
    --------
    >>> import bayes_mdn as bm
    >>> model = bm.MDN(num_components=3, hidden_sizes=(8,))
    >>> model.num_components
    3
    """

    num_components: int = 5
    hidden_sizes: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    family: Family | str = "normal"
    prior: Any = field(default=None)
    network: Any = field(default=None)

    def __post_init__(self) -> None:
        check_positive_int(self.num_components, "num_components")
        sizes = self.hidden_sizes
        if isinstance(sizes, (int, bool)) or not hasattr(sizes, "__iter__"):
            raise TypeError(
                "`hidden_sizes` must be a sequence of layer widths such as (15, 15); "
                f"got {sizes!r}."
            )
        sizes = tuple(sizes)
        for width in sizes:
            check_positive_int(width, "hidden_sizes entries")
        object.__setattr__(self, "num_components", int(self.num_components))
        object.__setattr__(self, "hidden_sizes", tuple(int(width) for width in sizes))
        if not isinstance(self.activation, str):
            raise TypeError(f"`activation` must be a string; got {self.activation!r}.")
        activation = self.activation.lower()
        if activation not in network.ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}; choose one of "
                f"{sorted(network.ACTIVATIONS)}."
            )
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "family", resolve_family(self.family))
        object.__setattr__(self, "prior", resolve_prior(self.prior))
        object.__setattr__(self, "network", resolve_network(self.network))

    # ----------------------------------------------------------------------------- structure
    def head_sizes(self, num_outputs: int) -> dict[str, int]:
        """Output width of each head: K logits, then K x d per family parameter."""
        sizes = {LOGITS: self.num_components}
        for name, width in self.family.head_dims(num_outputs).items():
            sizes[name] = self.num_components * width
        return sizes

    def layout(self, num_features: int, num_outputs: int) -> tuple[network.Layer, ...]:
        """Dense layers for P = `num_features` inputs and D = `num_outputs` outputs.

        With a custom feature network the first dense layer reads its H features instead.
        """
        width = num_features if self.network is None else self.network.feature_size(num_features)
        return network.layer_layout(width, self.hidden_sizes, self.head_sizes(num_outputs))

    def sites(self, num_features: int, num_outputs: int) -> tuple[Site, ...]:
        """Every parameter site with its shape, fan-in and role, in network order."""
        sites = [] if self.network is None else list(self.network.sites(num_features))
        for layer in self.layout(num_features, num_outputs):
            sites.append(Site(f"{layer.name}.kernel", (layer.fan_in, layer.fan_out), layer.fan_in,
                              "kernel"))
            sites.append(Site(f"{layer.name}.bias", (layer.fan_out,), layer.fan_in, "bias"))
        return tuple(sites)

    def num_parameters(self, num_features: int, num_outputs: int) -> int:
        """Total number of network weights and biases."""
        return sum(math.prod(site.shape) for site in self.sites(num_features, num_outputs))

    def latent_shapes(self, num_features: int, num_outputs: int) -> dict[str, tuple[int, ...]]:
        """Shape of every latent sample site: the keys of posterior draws.

        For most priors these are the weight sites themselves; hierarchical priors add
        non-centred latents (e.g. ``"hidden_0.kernel.z"`` and ``"hidden_0.kernel.tau"``).
        Families may add their own sites last (e.g. ``"family.df"`` of
        ``StudentT(df="global")``).
        """
        sites = self.sites(num_features, num_outputs)
        latents = {**self.prior.latent_distributions(sites),
                   **self.family.latent_distributions(num_outputs)}
        return {name: tuple(prior.batch_shape) + tuple(prior.event_shape)
                for name, prior in latents.items()}

    def network_weights(self, latents: Mapping[str, jax.Array], num_features: int,
                        num_outputs: int) -> dict[str, jax.Array]:
        """Network weights ``{site name: array}`` from latent values (one draw, no draw axes)."""
        return self.prior.weights(self.sites(num_features, num_outputs), latents)

    def initial_latents(self, weights: Mapping[str, jax.Array], num_features: int,
                        num_outputs: int) -> dict[str, jax.Array]:
        """Latent values reproducing network `weights` (one draw, no draw axes), plus the
        family's own sites at their starting values."""
        latents = self.prior.initial_latents(self.sites(num_features, num_outputs), weights)
        dtype = next(iter(weights.values())).dtype
        return {**latents, **self.family.initial_latents(num_outputs, dtype)}

    # ----------------------------------------------------------------------------- maths
    def mixture(
        self, params: Mapping[str, jax.Array], X_std: jax.Array, y_scale: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mixture log-weights and component parameters in standardised units.

        Parameters
        ----------
        params : mapping of str to Array
            One value per latent site (see :meth:`latent_shapes`; no leading draw axes,
            vmap for several draws). Entries named ``LINEARISED_PREFIX + site`` (see
            :meth:`Posterior.prediction_draws <bayes_mdn.Posterior.prediction_draws>`) make
            the heads those of the network linearised at that point.
        X_std : Array, shape (N, P)
            Standardised inputs.
        y_scale : Array, shape (D,)
            Standard deviations used to standardise y.

        Returns
        -------
        log_weights : Array, shape (N, K)
            Log mixing weights (log-softmax of the logits head).
        component_params : dict of str to Array, each (N, K, d)
        """
        num_outputs = y_scale.shape[-1]
        centre = {name[len(LINEARISED_PREFIX):]: value for name, value in params.items()
                  if name.startswith(LINEARISED_PREFIX)}
        if centre:
            params = {name: value for name, value in params.items()
                      if not name.startswith(LINEARISED_PREFIX)}
            raw = self._linearised_outputs(params, centre, X_std, num_outputs)
        else:
            raw = self._raw_outputs(params, X_std, num_outputs)
        log_weights = jax.nn.log_softmax(raw[LOGITS], axis=-1)
        batch = X_std.shape[:-1]
        heads = {
            name: raw[name].reshape(*batch, self.num_components, width)
            for name, width in self.family.head_dims(num_outputs).items()
        }
        family_sites = self.family.latent_distributions(num_outputs)
        if family_sites:
            latents = {name: params[name] for name in family_sites}
            return log_weights, self.family.constrain(heads, y_scale, latents)
        return log_weights, self.family.constrain(heads, y_scale)

    def _raw_outputs(self, latents: Mapping[str, jax.Array], X_std: jax.Array,
                     num_outputs: int) -> dict[str, jax.Array]:
        """Every head's raw output ``{head: (N, width)}`` before any constraint."""
        layout = self.layout(X_std.shape[-1], num_outputs)
        weights = self.network_weights(latents, X_std.shape[-1], num_outputs)
        inputs = X_std if self.network is None else self.network.apply(weights, X_std)
        return network.apply(weights, inputs, layout, self.activation)

    def _linearised_outputs(self, latents: Mapping[str, jax.Array],
                            centre: Mapping[str, jax.Array], X_std: jax.Array,
                            num_outputs: int) -> dict[str, jax.Array]:
        """Raw head outputs of the network linearised at `centre` (first-order Taylor
        expansion in the latents, one Jacobian-vector product):
        ``f(centre) + J(centre) (latents - centre)``.

        The sites of `centre` are the network's latents; other entries of `latents` (a
        family's own sites) are not linearised.
        """
        tangent = {name: latents[name] - value for name, value in centre.items()}
        at_centre, change = jax.jvp(
            lambda point: self._raw_outputs(point, X_std, num_outputs), (dict(centre),),
            (tangent,))
        return {name: at_centre[name] + change[name] for name in at_centre}

    def numpyro_model(
        self,
        X_std: jax.Array,
        y_std: jax.Array | None = None,
        *,
        y_scale: jax.Array,
        subsample_size: int | None = None,
    ) -> None:
        """The NumPyro model in standardised units: priors on every site, a mixture likelihood.

        Parameters
        ----------
        X_std : Array, shape (N, P)
        y_std : Array, shape (N, D), optional
            Observed standardised targets; ``None`` samples them.
        y_scale : Array, shape (D,)
            Standard deviations of y, defining the number of outputs D.
        subsample_size : int, optional
            Minibatch size of the data plate; the likelihood is rescaled by N / batch.
        """
        num_rows, num_features = X_std.shape
        params = {}
        for site in self.sites(num_features, y_scale.shape[-1]):
            params.update(self.prior.sample(site))
        for name, prior in self.family.latent_distributions(y_scale.shape[-1]).items():
            params[name] = numpyro.sample(name, prior)
        with numpyro.plate("data", num_rows, subsample_size=subsample_size) as index:
            X_batch = X_std if subsample_size is None else X_std[index]
            y_batch = y_std if (y_std is None or subsample_size is None) else y_std[index]
            log_weights, component_params = self.mixture(params, X_batch, y_scale)
            likelihood = dist.MixtureSameFamily(
                dist.Categorical(logits=log_weights),
                self.family.distribution(component_params),
            )
            numpyro.sample("y", likelihood, obs=y_batch)

    # ----------------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, *, key: jax.Array, method: str = "map", **options: Any
            ) -> Posterior:
        """Fit the model and return an immutable :class:`~bayes_mdn.Posterior`.

        Parameters
        ----------
        X : array-like, shape (N, P)
            Inputs (NumPy, JAX or pandas; a DataFrame's column names are recorded in
            ``Posterior.info["feature_names"]``). Standardised internally; a constant column
            is kept (it carries no information). At least 2 rows.
        y : array-like, shape (N,) or (N, D)
            Targets. Standardised internally for location-scale families, for which a
            constant output column is refused (a point mass has no density to fit).
        key : PRNG key
            E.g. ``jax.random.key(0)``. The same key gives bit-identical results.
        method : str
            ``"map"`` (AutoDelta + Adam), ``"ensemble"`` (E vmapped MAP fits), ``"svi"``
            (``guide=`` "normal", "lowrank", "mvn" or "flow"), ``"laplace"`` (Gaussian at
            the MAP point) or ``"nuts"`` (multi-chain NUTS). See :mod:`bayes_mdn.inference`.
        **options
            Method options such as ``num_steps``, ``learning_rate``, ``init`` (a fitted
            Posterior to start from), ``num_chains``, ``X_test``/``y_test``, and
            ``checkpoint=path, checkpoint_every=n`` / ``resume=path`` to save and continue
            long runs (see :mod:`bayes_mdn.inference._checkpoint`).

        Returns
        -------
        Posterior

        Raises
        ------
        ValueError, TypeError
            Before anything is compiled, for invalid data (non-finite values, wrong shapes or
            dtypes, fewer than 2 rows, a constant target) or options.
        """
        # Facade accessor: inference sits above the model (it imports MDN), so import on use.
        from bayes_mdn.inference import fit

        return fit(self, X, y, key=key, method=method, **options)

    # ----------------------------------------------------------------------------- config
    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description, inverted by :meth:`from_config`."""
        return {
            "num_components": self.num_components,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "family": self.family.to_config(),
            "prior": self.prior.to_config(),
            "network": None if self.network is None else self.network.to_config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MDN:
        """Rebuild a model from :meth:`to_config` output."""
        return cls(
            num_components=int(config["num_components"]),
            hidden_sizes=tuple(int(width) for width in config["hidden_sizes"]),
            activation=str(config["activation"]),
            family=family_from_config(config["family"]),
            prior=prior_from_config(config["prior"]),
            network=network_from_config(config.get("network")),
        )



# --------------------------------------------------------------------------- the likelihood
def point_log_prob(model: MDN, params: Mapping[str, jax.Array], X_std: jax.Array,
                   y_std: jax.Array, y_scale: jax.Array) -> jax.Array:
    """Per-row log-likelihood of one parameter value, in standardised units.

    Parameters
    ----------
    model : MDN
    params : dict of str to Array
        One value per latent site (see :meth:`MDN.latent_shapes`).
    X_std, y_std : Array, shapes (N, P) and (N, D)
        Standardised inputs and targets.
    y_scale : Array, shape (D,)

    Returns
    -------
    Array, shape (N,)
    """
    log_weights, component_params = model.mixture(params, X_std, y_scale)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(logits=log_weights), model.family.distribution(component_params)
    )
    return mixture.log_prob(y_std)


def mean_log_likelihood(model: MDN, params: Mapping[str, jax.Array], X_std: jax.Array,
                        y_std: jax.Array, y_scale: jax.Array) -> jax.Array:
    """Mean log-likelihood per row of one parameter value, in *standardised* units (add the
    standardizer's log-Jacobian for original units)."""
    return jnp.mean(point_log_prob(model, params, X_std, y_std, y_scale))


def predictive_log_likelihood(model: MDN, draws: Mapping[str, jax.Array], X_std: jax.Array,
                              y_std: jax.Array, y_scale: jax.Array) -> jax.Array:
    """Mean log posterior-predictive density per row, averaging the density over draws.

    Parameters
    ----------
    draws : dict of str to Array
        Each site with a leading draw axis (S, ...).

    Returns
    -------
    Array, scalar
        ``mean_n log (1/S) sum_s p(y_n | x_n, theta_s)`` in standardised units.
    """
    per_draw = jax.vmap(lambda params: point_log_prob(model, params, X_std, y_std, y_scale)
                        )(draws)  # (S, N)
    num_draws = per_draw.shape[0]
    return jnp.mean(logsumexp(per_draw, axis=0) - jnp.log(num_draws))
