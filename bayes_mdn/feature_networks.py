"""User-supplied feature networks: a Flax (linen) or Equinox module in front of the MDN heads.

``bm.MDN(network=module, hidden_sizes=())`` runs the module on the standardised inputs, then
the built-in hidden layers (none with ``hidden_sizes=()``) and the mixture heads. Every array
of the module becomes a parameter site named by its path, ``"features.Dense_0.kernel"``
(Flax) or ``"features.layers.0.weight"`` (Equinox), with a prior from the same prior
specification as the rest of the network (dotted names, a dict, or the
``random_flax_module`` convention ``(name, shape) -> Distribution``). Arrays with two or more
dimensions are kernels, with the fan-in of their layer; the others are biases.

So the draws, the predictive, the diagnostics and every inference method treat a custom
network exactly like the built-in MLP. Flax and Equinox are optional extras:
``pip install "bayes-mdn[flax]"`` or ``pip install "bayes-mdn[equinox]"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from bayes_mdn.priors import Site

__all__ = ["EquinoxNetwork", "FeatureNetwork", "FlaxNetwork", "UnavailableNetwork",
           "network_from_config", "resolve_network"]

PREFIX = "features"


def _path_name(path: tuple[Any, ...]) -> str:
    """A dotted site name from a pytree key path."""
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return ".".join([PREFIX, *parts])


@dataclass(frozen=True, eq=False)
class FeatureNetwork:
    """Base adapter: a module's arrays as named sites, its forward pass on flat weights.

    Equality and hashing are by identity (modules may hold arrays), so one adapter object
    identifies one network for compilation caches.
    """

    module: Any
    library: ClassVar[str] = "custom"

    # Subclasses provide the parameter template for P inputs and the forward pass.
    def _template(self, num_features: int) -> Any:
        raise NotImplementedError

    def _forward(self, tree: Any, X: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _fan_in(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def _initial_tree(self, key: jax.Array, num_features: int, dtype: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared machinery
    def _structure(self, num_features: int) -> tuple[tuple[str, ...], Any, tuple[Any, ...]]:
        cache = self.__dict__.setdefault("_structures", {})
        if num_features not in cache:
            template = self._template(num_features)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
            names = tuple(_path_name(path) for path, _ in leaves)
            if len(set(names)) != len(names):
                raise ValueError(f"The {self.library} module's parameter paths are not unique: "
                                 f"{names}.")
            cache[num_features] = (names, treedef, tuple(leaf for _, leaf in leaves))
        return cache[num_features]

    def sites(self, num_features: int) -> tuple[Site, ...]:
        """One :class:`~bayes_mdn.priors.Site` per array of the module."""
        names, _, leaves = self._structure(num_features)
        sites = []
        for name, leaf in zip(names, leaves, strict=True):
            shape = tuple(int(size) for size in leaf.shape)
            if len(shape) >= 2:
                sites.append(Site(name, shape, self._fan_in(shape), "kernel"))
            else:
                sites.append(Site(name, shape, max(1, math.prod(shape)), "bias"))
        return tuple(sites)

    def feature_size(self, num_features: int) -> int:
        """H, the width of the module's output for P = `num_features` inputs."""
        cache = self.__dict__.setdefault("_sizes", {})
        if num_features not in cache:
            _, treedef, leaves = self._structure(num_features)
            tree = jax.tree_util.tree_unflatten(treedef, leaves)
            out = jax.eval_shape(self._forward, tree,
                                 jax.ShapeDtypeStruct((2, num_features), jnp.float32))
            if len(out.shape) != 2 or out.shape[0] != 2:
                raise ValueError(
                    f"The {self.library} feature network must map inputs (N, P) to features "
                    f"(N, H); for (2, {num_features}) it returned shape {tuple(out.shape)}."
                )
            cache[num_features] = int(out.shape[1])
        return cache[num_features]

    def apply(self, weights: dict[str, jax.Array], X: jax.Array) -> jax.Array:
        """Features (..., H) of standardised inputs (..., P) under the given site values."""
        num_features = X.shape[-1]
        names, treedef, _ = self._structure(num_features)
        tree = jax.tree_util.tree_unflatten(treedef, [weights[name] for name in names])
        batch = X.shape[:-1]
        features = self._forward(tree, X.reshape(-1, num_features))
        return features.reshape(*batch, features.shape[-1])

    def init(self, key: jax.Array, num_features: int, dtype: Any = jnp.float32
             ) -> dict[str, jax.Array]:
        """Initial site values from `key` (vmappable over keys)."""
        names, _, _ = self._structure(num_features)
        leaves = jax.tree_util.tree_leaves(self._initial_tree(key, num_features, dtype))
        return {name: jnp.asarray(leaf, dtype) for name, leaf in zip(names, leaves, strict=True)}

    def to_config(self) -> dict[str, Any]:
        return {"name": self.library, "repr": repr(self.module)[:200]}

    @cached_property
    def description(self) -> str:
        return f"{self.library} module {type(self.module).__name__}"


@dataclass(frozen=True, eq=False)
class FlaxNetwork(FeatureNetwork):
    """A ``flax.linen.Module`` mapping (N, P) inputs to (N, H) features.

    Kernels follow Flax's layout (inputs on the leading axes), so the fan-in is the product
    of all but the last axis. Initial values come from ``module.init`` with the fit's key.
    """

    library: ClassVar[str] = "flax"

    def _template(self, num_features: int) -> Any:
        return jax.eval_shape(lambda key: self._initial_tree(key, num_features, jnp.float32),
                              jax.random.key(0))

    def _initial_tree(self, key: jax.Array, num_features: int, dtype: Any) -> Any:
        return self.module.init(key, jnp.zeros((1, num_features), dtype))["params"]

    def _forward(self, tree: Any, X: jax.Array) -> jax.Array:
        return self.module.apply({"params": tree}, X)

    def _fan_in(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape[:-1])


@dataclass(frozen=True, eq=False)
class EquinoxNetwork(FeatureNetwork):
    """An ``equinox.Module`` mapping one input vector (P,) to features (H,) (vmapped over rows).

    Weights follow Equinox's layout (outputs first), so the fan-in is the product of all but
    the first axis. Initial values: the module's own arrays, with every kernel redrawn
    LeCun-normal from the fit's key, so ensemble members and chains start apart.
    """

    library: ClassVar[str] = "equinox"

    @cached_property
    def _parts(self) -> tuple[Any, Any]:
        import equinox as eqx

        return eqx.partition(self.module, eqx.is_inexact_array)

    def _template(self, num_features: int) -> Any:
        return self._parts[0]

    def _initial_tree(self, key: jax.Array, num_features: int, dtype: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(self._parts[0])
        keys = jax.random.split(key, max(1, len(leaves)))
        fresh = []
        for leaf_key, leaf in zip(keys, leaves, strict=False):
            if leaf.ndim >= 2:
                scale = 1.0 / math.sqrt(self._fan_in(tuple(leaf.shape)))
                leaf = scale * jax.random.normal(leaf_key, leaf.shape, dtype)
            fresh.append(jnp.asarray(leaf, dtype))
        return jax.tree_util.tree_unflatten(treedef, fresh)

    def _forward(self, tree: Any, X: jax.Array) -> jax.Array:
        import equinox as eqx

        module = eqx.combine(tree, self._parts[1])
        return jax.vmap(module)(X)

    def _fan_in(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape[1:])


@dataclass(frozen=True, eq=False)
class UnavailableNetwork(FeatureNetwork):
    """Stands in for a custom network after loading a saved model: it cannot be stored."""

    library: ClassVar[str] = "unavailable"

    def _structure(self, num_features: int):
        raise ValueError(
            f"This model was saved with a custom feature network ({self.module}), which cannot "
            "be stored. Pass the module again: posterior = dataclasses.replace(posterior, "
            "model=dataclasses.replace(posterior.model, network=module))."
        )

    def to_config(self) -> dict[str, Any]:
        return {"name": "unavailable", "repr": str(self.module)}


def _is_flax(module: Any) -> bool:
    try:
        import flax.linen as nn
    except ImportError:
        return False
    return isinstance(module, nn.Module)


def _is_equinox(module: Any) -> bool:
    try:
        import equinox as eqx
    except ImportError:
        return False
    return isinstance(module, eqx.Module)


def resolve_network(network: Any) -> FeatureNetwork | None:
    """Wrap a Flax linen or Equinox module (or pass an adapter or None through).

    Raises
    ------
    TypeError
        For anything else, naming the supported libraries and their install extras.
    """
    if network is None or isinstance(network, FeatureNetwork):
        return network
    if _is_flax(network):
        return FlaxNetwork(network)
    if _is_equinox(network):
        return EquinoxNetwork(network)
    raise TypeError(
        "`network` must be a flax.linen.Module or an equinox.Module mapping inputs (N, P) to "
        f"features; got {type(network).__name__}. Install the library with "
        "pip install \"bayes-mdn[flax]\" or pip install \"bayes-mdn[equinox]\"."
    )


def network_from_config(config: dict[str, Any] | None) -> FeatureNetwork | None:
    """The stand-in for a saved custom network (modules are code, never deserialised)."""
    if config is None:
        return None
    return UnavailableNetwork(f"{config.get('name')}: {config.get('repr', '')}")
