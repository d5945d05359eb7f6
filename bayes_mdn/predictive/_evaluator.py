"""The one evaluator of draws x inputs: a memory model, a chunk planner, the draw loops.

Every query of the posterior predictive evaluates the network of S posterior draws at M
inputs. This module decides how:

* **Memory model** (:func:`network_width`): the largest number of values one draw's network
  holds per input in any intermediate array, read off the traced computation of
  :meth:`MDN.mixture <bayes_mdn.MDN.mixture>` itself, so it counts the built-in hidden layers,
  the heads and every layer of a Flax or Equinox feature network (whose widths the model
  cannot otherwise see).
* **Chunk plan** (:func:`plan_chunks`): inputs per kernel call and draws per step, so that
  inputs x draws x (terms per input and draw) stays within ``max_elements``, in one of two
  layouts chosen from the shapes:

  - *input-major* (few inputs, many draws): all draws of a few inputs at once, the draws
    vmapped (``(m, b, K)`` arrays); the draws are split only when one input's mixture does
    not fit;
  - *draw-major* (many inputs): ``lax.scan`` over the draws, each step one draw's network on
    a large block of inputs (one matmul chain, the network in its column layout), folded into
    a running reduction. Per pair of input and draw this does the arithmetic of a
    hand-written kernel (benchmarks/predictive_speed.py).
* **Draw loops**: :func:`evaluate_chunk` / :func:`reduce_draws` (input-major),
  :func:`scan_draws` (draw-major) and :func:`map_draws` (per-draw values, draws first),
  which every kernel of the package uses: the predictive's queries (CRPS included), the
  ArviZ adapter (through :mod:`bayes_mdn.predictive.per_draw`), the
  function-space diagnostics (:func:`draw_batch_size`, all reference inputs per call) and
  the fit-time scores (through :meth:`PredictiveMixture.log_prob
  <bayes_mdn.PredictiveMixture.log_prob>`; :func:`latent_width` sizes the Pareto-k batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from bayes_mdn.model import MDN

__all__ = ["DRAW_MAJOR_BLOCK", "DRAW_MAJOR_MIN_INPUTS", "draw_batch_size", "latent_width",
           "map_draws", "network_width", "plan_chunks", "whole_mixture_chunk"]

#: Largest block of inputs a draw-major step evaluates: blocks of 1024-4096 inputs keep one
#: draw's activations in the CPU caches; 32768 ran 1.8x slower than 1024 (2 cores, seed net).
DRAW_MAJOR_BLOCK = 2048
#: Queries at fewer inputs use the input-major layout (draws vmapped within one call).
DRAW_MAJOR_MIN_INPUTS = 256
#: ... and so do queries whose terms per input leave room for fewer inputs per draw-major
#: step than this (e.g. a 2048-point grid x K = 20): a scan step must carry enough work.
DRAW_MAJOR_MIN_BLOCK = 64


# --------------------------------------------------------------------------- memory model
def _jaxpr_sizes(jaxpr: Any) -> list[int]:
    """Element counts of every intermediate of a jaxpr, sub-jaxprs included, in order."""
    sizes: list[int] = []
    for equation in jaxpr.eqns:
        for var in equation.outvars:
            aval = getattr(var, "aval", None)
            shape = getattr(aval, "shape", None)
            if shape is not None:
                sizes.append(math.prod(shape))
        for value in equation.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    sizes.extend(_jaxpr_sizes(inner))
    return sizes


_WIDTHS: dict[tuple[Any, ...], int] = {}


def network_width(model: MDN, draws: Mapping[str, Any], num_features: int,
                  num_outputs: int) -> int:
    """Largest number of values per input held by a layer of one draw's network, before
    the mixture heads.

    The built-in hidden layers count with their widths. A Flax or Equinox feature network is
    traced (nothing runs) at two batch sizes: an intermediate whose size grows by ``w`` per
    extra input holds ``w`` values per input, and the largest such ``w`` counts. The heads
    and component parameters (``K x (1 + parameter widths)`` per input) are counted by the
    queries as their ``K x D`` terms, a small fixed multiple of them.

    Parameters
    ----------
    model : MDN
    draws : mapping of str to array
        Posterior draws with one leading draw axis (only shapes and dtypes are read).
    num_features, num_outputs : int
        P and D.

    Returns
    -------
    int
        0 for a network without hidden layers or feature network.
    """
    width = max(model.hidden_sizes, default=0)
    if model.network is None:
        return int(width)
    shapes = tuple((name, tuple(value.shape[1:]), str(np.dtype(value.dtype)))
                   for name, value in draws.items())
    cache_key = (model.network, shapes, num_features, num_outputs)
    if cache_key not in _WIDTHS:
        dtype = jnp.dtype(next(iter(draws.values())).dtype)
        one_draw = {name: jax.ShapeDtypeStruct(shape, jnp.dtype(kind))
                    for name, shape, kind in shapes}

        def features(latents, X):
            weights = model.network_weights(latents, num_features, num_outputs)
            return model.network.apply(weights, X)

        def trace(rows: int) -> list[int]:
            X = jax.ShapeDtypeStruct((rows, num_features), dtype)
            return _jaxpr_sizes(jax.make_jaxpr(features)(one_draw, X).jaxpr)

        small, large = trace(3), trace(7)
        if len(small) == len(large):
            grown = [(b - a) // 4 for a, b in zip(small, large, strict=True)]
        else:  # a structure that changes with the batch size: the largest per-row size
            grown = [max(large) // 7]
        _WIDTHS[cache_key] = max([0, *grown])
    return int(max(width, _WIDTHS[cache_key]))


def latent_width(model: MDN, num_features: int, num_outputs: int, dtype: Any) -> int:
    """:func:`network_width` for a model without draws at hand (e.g. before a fit): the
    latent sites' shapes come from :meth:`MDN.latent_shapes <bayes_mdn.MDN.latent_shapes>`.
    """
    if model.network is None:
        return int(max(model.hidden_sizes, default=0))
    draws = {name: jax.ShapeDtypeStruct((1, *shape), jnp.dtype(dtype))
             for name, shape in model.latent_shapes(num_features, num_outputs).items()}
    return network_width(model, draws, num_features, num_outputs)


# --------------------------------------------------------------------------- chunk plan
def _next_power_of_two(value: int) -> int:
    return 1 << max(0, int(value - 1).bit_length())


def _num_chunks(num_draws: int, draw_chunk: int) -> int:
    return -(-num_draws // draw_chunk)


def input_major_sizes(num_inputs: int, num_draws: int, per_draw: int, max_elements: int,
                      per_input: int = 0) -> tuple[int, int]:
    """Inputs per kernel call and draws per scan step, all draws of an input first.

    A call holds about ``input_chunk * (draw_chunk * per_draw + per_input)`` values in its
    largest intermediate array. While one input's whole mixture fits, all draws go in one
    step and the input chunk is the largest power of two that fits (no larger than needed
    for `num_inputs`). Otherwise each call takes one input and the draws are split into as
    few steps as fit, balanced so that the last, padded step wastes little. One input and
    one draw (``per_draw + per_input`` values) is the finest split.

    Returns
    -------
    input_chunk : int
        A power of two.
    draw_chunk : int
        At most `num_draws`.
    """
    whole = num_draws * per_draw + per_input
    if whole <= max_elements:
        fitting = max_elements // whole
        return min(1 << (fitting.bit_length() - 1), _next_power_of_two(num_inputs)), num_draws
    fitting = max(1, (max_elements - per_input) // per_draw)
    return 1, _num_chunks(num_draws, _num_chunks(num_draws, fitting))


def draw_major_block(num_inputs: int, per_draw: int, max_elements: int) -> int:
    """Inputs per draw-major call: a power of two, at most :data:`DRAW_MAJOR_BLOCK`, with
    ``block * per_draw <= max_elements`` (at least 1)."""
    fitting = max(1, max_elements // per_draw)
    return min(1 << (fitting.bit_length() - 1), _next_power_of_two(num_inputs),
               DRAW_MAJOR_BLOCK)


def plan_chunks(num_inputs: int, num_draws: int, per_draw: int, max_elements: int, *,
                per_input: int = 0, layout: str = "auto") -> tuple[str, int, int]:
    """Choose the layout and chunk sizes of a query.

    Parameters
    ----------
    num_inputs, num_draws : int
        M and S.
    per_draw : int
        Values per (input, draw) in the largest array of the query: the maximum of the
        network's width (:func:`network_width`) and the query's own terms (K x D x levels or
        grid points).
    max_elements : int
        The budget on values held at once.
    per_input : int
        Values per input that do not scale with the draws.
    layout : {"auto", "input", "draw"}
        ``"auto"``: draw-major from :data:`DRAW_MAJOR_MIN_INPUTS` inputs and two draws on,
        when a step holds at least :data:`DRAW_MAJOR_MIN_BLOCK` inputs.

    Returns
    -------
    layout : {"input", "draw"}
    input_chunk : int
    draw_chunk : int
        1 in the draw-major layout.
    """
    if layout == "auto":
        many = (num_inputs >= DRAW_MAJOR_MIN_INPUTS and num_draws > 1 and per_input == 0
                and draw_major_block(num_inputs, per_draw, max_elements)
                >= DRAW_MAJOR_MIN_BLOCK)
        layout = "draw" if many else "input"
    if layout == "draw":
        return "draw", draw_major_block(num_inputs, per_draw, max_elements), 1
    return "input", *input_major_sizes(num_inputs, num_draws, per_draw, max_elements,
                                       per_input)


def draw_batch_size(num_inputs: int, num_draws: int, per_draw: int, max_elements: int) -> int:
    """Draws evaluated at once when every call takes all `num_inputs` inputs (queries that
    reduce over the inputs of each draw, such as the function-space diagnostics): the most
    with ``num_inputs * draws * per_draw <= max_elements``, at least 1, at most
    `num_draws`."""
    return max(1, min(num_draws, max_elements // max(1, num_inputs * per_draw)))


def whole_mixture_chunk(num_inputs: int, per_input: int, max_elements: int) -> int:
    """Inputs per call for a query that holds each input's whole S x K mixture (and
    `per_input` values in all per input, e.g. S x K x K' for :meth:`reduce
    <bayes_mdn.PredictiveMixture.reduce>`): the largest power of two with
    ``inputs * per_input <= max_elements`` (at least 1), no larger than needed."""
    fitting = max(1, max_elements // max(1, per_input))
    return min(1 << (fitting.bit_length() - 1), _next_power_of_two(num_inputs))


# --------------------------------------------------------------------------- draw loops
class DrawChunk(NamedTuple):
    """One chunk of b draws evaluated at m inputs, in standardised units of y.

    log_weights : (m, b, K) log mixing weights within each draw (log-softmax, no 1/S).
    params : dict of (m, b, K, d) component parameters.
    valid : (b,) False for the copies that pad the last chunk.
    first : scalar index of the chunk's first draw.
    """

    log_weights: jax.Array
    params: dict[str, jax.Array]
    valid: jax.Array
    first: jax.Array


def num_draws_of(draws: Mapping[str, jax.Array]) -> int:
    return int(next(iter(draws.values())).shape[0])


def evaluate_chunk(model: MDN, draws, y_shift, y_scale, X_std, draw_chunk: int, index
                   ) -> DrawChunk:
    """Evaluate draws ``[index * b, (index + 1) * b)`` (b = `draw_chunk`) at every input.

    Parameters are in standardised units of y (`y_shift` is unused). Positions past the
    last draw gather the last real draw again (a dynamic gather instead of a padded copy of
    all draws) and are flagged invalid.
    """
    num_draws = num_draws_of(draws)
    first = index * draw_chunk
    positions = first + jnp.arange(draw_chunk)
    if draw_chunk == num_draws:  # one chunk: no gather needed
        subset = draws
    else:
        take = jnp.minimum(positions, num_draws - 1)
        subset = jax.tree.map(lambda value: value[take], draws)

    def one_draw(params):
        return model.mixture(params, X_std, y_scale)

    log_weights, params = jax.vmap(one_draw, out_axes=1)(subset)  # (m, b, K), (m, b, K, d)
    return DrawChunk(log_weights, params, positions < num_draws, first)


def reduce_draws(body, init, model, draws, y_shift, y_scale, X_std, draw_chunk, *,
                 stacked: DrawChunk | None = None):
    """Fold ``carry = body(carry, chunk)`` over all draw chunks (input-major layout).

    With one chunk the body is called directly (no loop); otherwise ``lax.scan`` visits the
    chunks in order, recomputing each from the draws or reading it from `stacked`.
    """
    num_chunks = _num_chunks(num_draws_of(draws), draw_chunk)
    if stacked is not None:
        if num_chunks == 1:
            return body(init, jax.tree.map(lambda value: value[0], stacked))
        return jax.lax.scan(lambda carry, chunk: (body(carry, chunk), None), init, stacked)[0]

    def get(index):
        return evaluate_chunk(model, draws, y_shift, y_scale, X_std, draw_chunk, index)

    if num_chunks == 1:
        return body(init, get(0))
    return jax.lax.scan(lambda carry, index: (body(carry, get(index)), None), init,
                        jnp.arange(num_chunks))[0]


def stack_draws(model, draws, y_shift, y_scale, X_std, draw_chunk) -> DrawChunk:
    """All draw chunks, stacked on a leading axis: (num_chunks, m, b, K, ...)."""
    num_chunks = _num_chunks(num_draws_of(draws), draw_chunk)
    return jax.lax.map(
        lambda index: evaluate_chunk(model, draws, y_shift, y_scale, X_std, draw_chunk, index),
        jnp.arange(num_chunks),
    )


def scan_draws(body: Callable[[Any, jax.Array, dict[str, jax.Array]], Any], init: Any,
               model: MDN, draws: Mapping[str, jax.Array], y_scale: jax.Array,
               X_std: jax.Array) -> Any:
    """Fold ``carry = body(carry, log_weights, params)`` over the draws, one at a time
    (draw-major layout): each step runs one draw's network on all m inputs of `X_std`.

    `log_weights` is (m, K) (log-softmax within the draw) and `params` a dict of (m, K, d)
    component parameters in standardised units of y.
    """
    def step(carry, weights):
        log_weights, params = model.mixture(weights, X_std, y_scale)
        return body(carry, log_weights, params), None

    return jax.lax.scan(step, init, dict(draws))[0]


def map_draws(fn: Callable[[DrawChunk], Any], model: MDN, draws: Mapping[str, jax.Array],
              y_shift: jax.Array, y_scale: jax.Array, X_std: jax.Array, draw_chunk: int
              ) -> Any:
    """Per-draw values (input-major layout): ``fn(chunk)`` maps a chunk of b draws at the m
    inputs to arrays with the draws first, (b, ...); the results of all chunks come back as
    (S, ...), the padding of the last chunk dropped. The chunks are visited by ``lax.map``
    over chunk indices (each chunk gathers its draws: no padded copy of all draws), so one
    chunk's intermediates are alive at a time.
    """
    num_draws = num_draws_of(draws)
    num_chunks = _num_chunks(num_draws, draw_chunk)

    def one(index):
        return fn(evaluate_chunk(model, draws, y_shift, y_scale, X_std, draw_chunk, index))

    if num_chunks == 1:
        return jax.tree.map(lambda value: value[:num_draws], one(0))
    stacked = jax.lax.map(one, jnp.arange(num_chunks))  # (C, b, ...)
    return jax.tree.map(lambda value: value.reshape(-1, *value.shape[2:])[:num_draws], stacked)
