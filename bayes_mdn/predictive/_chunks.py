"""Host-side chunk planning and the loop over input chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bayes_mdn.predictive._evaluator import input_major_sizes

# --------------------------------------------------------------------------- chunked driver
_chunk_sizes = input_major_sizes  # the planner lives in the evaluator


def _pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    missing = size - array.shape[0]
    if missing == 0:
        return array
    return np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)], axis=0)


def _map_chunks(
    kernel: Callable[..., Any],
    row_arrays: tuple[np.ndarray, ...],
    chunk: int,
    *,
    batch_axis: int = 0,
) -> Any:
    """Run `kernel(*row_chunks, chunk_index)` over row chunks of host arrays and gather the
    (host) outputs along `batch_axis` into fresh NumPy arrays. Padding and gathering stay in
    NumPy so that no shape-specific eager JAX op is compiled per call."""
    num_rows = row_arrays[0].shape[0]
    leaves, treedef = None, None
    for start in range(0, num_rows, chunk):
        stop = min(start + chunk, num_rows)
        pieces = tuple(_pad_rows(a[start:stop], chunk) for a in row_arrays)
        result, result_def = jax.tree.flatten(jax.device_get(kernel(*pieces, start // chunk)))
        if leaves is None:
            # Preallocated outputs, filled chunk by chunk: the chunks' own arrays (views of
            # device buffers on the CPU, each with its bookkeeping) are released at once; a
            # list of them held 150 MB for the 31 250 chunks of M = 10^6 (scale.py).
            leaves = [np.empty(_with_rows(value.shape, batch_axis, num_rows), value.dtype)
                      for value in result]
            treedef = result_def
        region = (slice(None),) * batch_axis + (slice(start, stop),)
        trim = (slice(None),) * batch_axis + (slice(0, stop - start),)
        for out, value in zip(leaves, result, strict=True):
            out[region] = value[trim]
    return jax.tree.unflatten(treedef, leaves)


def _with_rows(shape: tuple[int, ...], axis: int, num_rows: int) -> tuple[int, ...]:
    return (*shape[:axis], num_rows, *shape[axis + 1:])
