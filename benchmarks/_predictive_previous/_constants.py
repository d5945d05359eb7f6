# ruff: noqa
"""Budgets and tolerances shared by the predictive kernels and queries."""

#: Default bound on the number of (input, draw, component[, quantile or grid point]) terms
#: evaluated at once; 2**20 float32 terms are 4 MiB per intermediate array. On the CPU,
#: 2**22 (16 MiB) made every call map and unmap fresh temporaries: 37-58 % of a query's time
#: went to the kernel, and quantiles ran 2.9x and means 1.3x slower than with 2**20
#: (benchmarks/scale.py --max-elements). On a GPU pass a larger ``max_elements``.
DEFAULT_MAX_ELEMENTS = 2**20

#: Tail mass cut from each significant component when a query needs a grid covering the
#: whole predictive (hdr, entropy): at most (2 + K) * _SUPPORT_TAIL of any draw's mass is lost.
_SUPPORT_TAIL = 1e-6
#: Components lighter than this (within their draw) do not widen that grid.
_SUPPORT_MIN_WEIGHT = 1e-6
#: Components at least this heavy (within their draw) must be resolved by that grid.
_RESOLVE_MIN_WEIGHT = 1e-3
