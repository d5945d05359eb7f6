"""Minibatch rows for stochastic optimisation, drawn in O(batch) time.

NumPyro's data plate draws its ``subsample_size`` rows itself. On the CPU it runs a
Fisher-Yates shuffle that builds ``arange(N)`` and scans over the batch every step: about
2 ms per step at N = 10^4 and most of a step at N = 10^7 (benchmarks/scale.py). Here each
step draws its batch from the optimiser's key and hands it to the plate (numpyro's
``substitute`` of the plate site), so a step costs the same at any N.

A batch is a uniform random subset of the rows (no repeats, every subset equally likely),
as NumPyro's own draw is, so the likelihood estimate ``N / B * sum over the batch`` stays
unbiased with the variance of sampling without replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.handlers import substitute

__all__ = ["minibatch_indices", "minibatched"]

#: Below this many rows per batch row, a batch is a prefix of a random permutation of all
#: rows (O(N log N), cheap at that N); above it, the first B distinct of a few more than B
#: draws with replacement (O(B log B)).
PERMUTATION_RATIO = 8
#: Extra draws beyond 2 B. With N > 8 B, fewer than B distinct values among 2 B + 32 draws
#: has probability far below 1e-12 for every B (the expected number of repeats is below
#: B / 4 + 5); in that event the batch would hold a repeated row.
EXTRA_DRAWS = 32


def minibatch_indices(key: jax.Array, num_rows: int, batch_size: int) -> jax.Array:
    """A uniform random subset of ``range(num_rows)`` of size `batch_size`, in random order.

    Parameters
    ----------
    key : PRNG key
    num_rows : int
        N, static.
    batch_size : int
        B <= N, static.

    Returns
    -------
    Array of int32, shape (B,)
    """
    if batch_size > num_rows:
        raise ValueError(f"batch_size ({batch_size}) must not exceed num_rows ({num_rows}).")
    if num_rows <= PERMUTATION_RATIO * batch_size:
        return jax.random.permutation(key, num_rows)[:batch_size].astype(jnp.int32)
    # The first B distinct values of an i.i.d. uniform sequence are a uniform random
    # B-subset (by symmetry), in uniformly random order.
    draws = jax.random.randint(key, (2 * batch_size + EXTRA_DRAWS,), 0, num_rows, jnp.int32)
    order = jnp.argsort(draws, stable=True)  # equal values keep their draw order
    ordered = draws[order]
    repeat_sorted = jnp.concatenate([jnp.zeros(1, bool), ordered[1:] == ordered[:-1]])
    repeat = jnp.zeros_like(repeat_sorted).at[order].set(repeat_sorted)
    first_distinct = jnp.argsort(repeat, stable=True)[:batch_size]  # in draw order
    return draws[first_distinct]


def minibatched(model_fn: Callable[..., None], plate: str) -> Callable[..., None]:
    """`model_fn` with an extra keyword ``batch_indices`` (B,): the rows its `plate` (built
    with ``subsample_size=B``) uses; None leaves the draw to NumPyro."""

    def model_with_batch(*args: Any, batch_indices: Any = None, **kwargs: Any) -> None:
        if batch_indices is None:
            return model_fn(*args, **kwargs)
        with substitute(data={plate: batch_indices}):
            return model_fn(*args, **kwargs)

    return model_with_batch
