"""The pure-JAX network: an MLP feature extractor and one linear head per mixture parameter.

No NumPyro and no global state: parameters are a flat ``dict`` keyed by dotted site
names (``"hidden_0.kernel"``, ``"loc.bias"``), the same strings a prior dict uses.
The layout is a tuple of :class:`Layer` records, hashable so it can be a static
argument of ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS",
    "Layer",
    "apply",
    "init_params",
    "layer_layout",
    "site_shapes",
]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}


@dataclass(frozen=True)
class Layer:
    """One dense layer: ``outputs = inputs @ kernel + bias``.

    Attributes
    ----------
    name : str
        Site prefix, e.g. ``"hidden_0"`` or ``"loc"``.
    fan_in, fan_out : int
        Kernel shape ``(fan_in, fan_out)``.
    is_head : bool
        Head layers read the last hidden features and are not followed by an activation.
    """

    name: str
    fan_in: int
    fan_out: int
    is_head: bool = False


def layer_layout(
    num_features: int, hidden_sizes: tuple[int, ...], head_sizes: Mapping[str, int]
) -> tuple[Layer, ...]:
    """Describe every dense layer of the network.

    Parameters
    ----------
    num_features : int
        P, the number of input columns.
    hidden_sizes : tuple of int
        Widths of the hidden layers; empty for a linear model.
    head_sizes : mapping of str to int
        Output width of each head, e.g. ``{"logits": K, "loc": K * D, "scale": K * D}``.

    Returns
    -------
    tuple of Layer
        Hidden layers in order, then one head layer per entry of `head_sizes`.
    """
    layers = []
    fan_in = num_features
    for index, width in enumerate(hidden_sizes):
        layers.append(Layer(f"hidden_{index}", fan_in, width))
        fan_in = width
    for name, width in head_sizes.items():
        layers.append(Layer(name, fan_in, width, is_head=True))
    return tuple(layers)


def site_shapes(layout: tuple[Layer, ...]) -> dict[str, tuple[int, ...]]:
    """Map each parameter site name to its shape, in network order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layout:
        shapes[f"{layer.name}.kernel"] = (layer.fan_in, layer.fan_out)
        shapes[f"{layer.name}.bias"] = (layer.fan_out,)
    return shapes


def apply(
    params: Mapping[str, jax.Array],
    X: jax.Array,
    layout: tuple[Layer, ...],
    activation: str,
) -> dict[str, jax.Array]:
    """Run the network.

    Parameters
    ----------
    params : mapping of str to Array
        One array per site of :func:`site_shapes`.
    X : Array, shape (N, P)
        Standardised inputs.
    layout : tuple of Layer
    activation : str
        A key of :data:`ACTIVATIONS`.

    Returns
    -------
    dict of str to Array
        Raw (unconstrained) head outputs, each of shape (N, fan_out).
    """
    act = ACTIVATIONS[activation]
    # Activations run as (width, N), the rows along the minor axis, and the head outputs are
    # transposed back at the end: on the CPU this halves the cost of a gradient at N = 200
    # and stays ahead at N = 4000 and under vmap (benchmarks/nuts_cost.py).
    features = jnp.swapaxes(X, -1, -2)
    for layer in layout:
        if not layer.is_head:
            kernel = params[f"{layer.name}.kernel"]
            bias = params[f"{layer.name}.bias"]
            features = act(jnp.swapaxes(kernel, -1, -2) @ features + bias[..., None])
    heads = [layer for layer in layout if layer.is_head]
    # All heads in one matmul: several small matmuls cost about twice as much on the CPU as
    # one wide one. lax.split (one primitive, unlike three slices) transposes to a
    # concatenation in the gradient; slices would transpose to pads that XLA adds up
    # element by element (up to 3x slower at N = 4000 under vmap).
    kernel = jnp.concatenate([params[f"{layer.name}.kernel"] for layer in heads], axis=-1)
    bias = jnp.concatenate([params[f"{layer.name}.bias"] for layer in heads], axis=-1)
    outputs = jnp.swapaxes(kernel, -1, -2) @ features + bias[..., None]
    parts = jax.lax.split(outputs, [layer.fan_out for layer in heads], axis=outputs.ndim - 2)
    return {layer.name: jnp.swapaxes(part, -1, -2)
            for layer, part in zip(heads, parts, strict=True)}


def init_params(
    key: jax.Array,
    layout: tuple[Layer, ...],
    head_bias: Mapping[str, jax.Array],
    *,
    head_kernel_scale: float = 0.1,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
    """Initial parameters: LeCun-normal hidden kernels, small head kernels, chosen head biases.

    Small head kernels make the initial mixture almost input-independent and equal to the
    one described by `head_bias` (spread locations, near-uniform weights), so optimisation
    starts from a sensible density instead of a random one.

    Parameters
    ----------
    key : PRNG key
    layout : tuple of Layer
    head_bias : mapping of str to Array
        Initial bias of each head layer, shape (fan_out,).
    head_kernel_scale : float
        Standard deviation of head kernels, times ``1 / sqrt(fan_in)``.
    dtype : dtype

    Returns
    -------
    dict of str to Array
    """
    keys = jax.random.split(key, len(layout))
    params: dict[str, jax.Array] = {}
    for layer_key, layer in zip(keys, layout, strict=True):
        scale = (head_kernel_scale if layer.is_head else 1.0) / jnp.sqrt(layer.fan_in)
        kernel = scale * jax.random.normal(layer_key, (layer.fan_in, layer.fan_out), dtype)
        if layer.is_head:
            bias = jnp.asarray(head_bias[layer.name], dtype).reshape(layer.fan_out)
        else:
            bias = jnp.zeros((layer.fan_out,), dtype)
        params[f"{layer.name}.kernel"] = kernel
        params[f"{layer.name}.bias"] = bias
    return params
