"""The one root-finder for quantiles: Chandrupatla's bracketed method, and integer bisection
for discrete families.

Both solve ``F(x) = q`` elementwise for an increasing F (a cdf) given a bracket with
``F(lower) <= q <= F(upper)``, stop as soon as every element has converged (``lax.while_loop``)
and never leave the bracket, so a noisy (float32) F cannot send them astray.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["X_TOLERANCE", "solve_increasing"]

#: Absolute tolerance on x, in the units of the solve (standardised y for the predictive),
#: added to 2 machine epsilons relative: about the float32 resolution of an O(1) value.
X_TOLERANCE = 5e-7


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    ok = denominator != 0
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), jnp.inf)


def _chandrupatla(f: Callable[[jax.Array], jax.Array], lower: jax.Array, upper: jax.Array,
                  f_lower: jax.Array, f_upper: jax.Array, x_tolerance: float,
                  max_iterations: int) -> tuple[jax.Array, jax.Array]:
    """Root of f (f(lower) <= 0 <= f(upper)) by Chandrupatla's method (1997), vectorised.

    Each step evaluates f once at ``a + t (b - a)``: inverse quadratic interpolation through
    the last three points when it is safe (Chandrupatla's criterion), bisection otherwise,
    never closer to the bracket's ends than the tolerance. An element stops when
    f is exactly 0 there or the bracket is narrower than ``2 eps |x| + x_tolerance``.

    Returns the root estimates and the number of steps taken.
    """
    eps = jnp.finfo(lower.dtype).eps
    state = dict(a=upper, b=lower, c=upper, fa=f_upper, fb=f_lower, fc=f_upper,
                 t=jnp.full_like(lower, 0.5), done=jnp.zeros(lower.shape, bool),
                 xm=lower, step=jnp.zeros((), jnp.int32))

    def cond(s):
        return (s["step"] < max_iterations) & ~jnp.all(s["done"])

    def body(s):
        a, b, c, fa, fb, fc, t = (s[k] for k in ("a", "b", "c", "fa", "fb", "fc", "t"))
        xt = a + t * (b - a)
        ft = f(xt)
        same = jnp.sign(ft) == jnp.sign(fa)
        c, fc = jnp.where(same, a, b), jnp.where(same, fa, fb)
        b, fb = jnp.where(same, b, a), jnp.where(same, fb, fa)
        a, fa = xt, ft
        closer = jnp.abs(fa) < jnp.abs(fb)
        xm, fm = jnp.where(closer, a, b), jnp.where(closer, fa, fb)
        tolerance = 2 * eps * jnp.abs(xm) + x_tolerance
        limit = _safe_divide(tolerance, jnp.abs(b - c))
        finished = (fm == 0) | (limit > 0.5)
        xi = _safe_divide(a - b, c - b)
        phi = _safe_divide(fa - fb, fc - fb)
        interpolate = (phi**2 < xi) & ((1 - phi) ** 2 < 1 - xi)
        inverse_quadratic = (_safe_divide(fa, fb - fa) * _safe_divide(fc, fb - fc)
                             + _safe_divide(c - a, b - a) * _safe_divide(fa, fc - fa)
                             * _safe_divide(fb, fc - fb))
        t = jnp.where(interpolate & jnp.isfinite(inverse_quadratic), inverse_quadratic, 0.5)
        limit = jnp.minimum(limit, 0.5)
        t = jnp.clip(t, limit, 1 - limit)
        done = s["done"]
        new = dict(a=a, b=b, c=c, fa=fa, fb=fb, fc=fc, t=t, xm=xm)
        out = {k: jnp.where(done, s[k], v) for k, v in new.items()}
        out["done"] = done | finished
        out["step"] = s["step"] + 1
        return out

    final = jax.lax.while_loop(cond, body, state)
    return final["xm"], final["step"]


def _integer_bisection(f: Callable[[jax.Array], jax.Array], lower: jax.Array,
                       upper: jax.Array, max_iterations: int) -> jax.Array:
    """Smallest integer k in (lower, upper] with f(k) >= 0, given f(lower) < 0 <= f(upper)
    on integers `lower` < `upper`: bisection keeping that invariant until hi = lo + 1."""
    def cond(s):
        lo, hi, step = s
        return (step < max_iterations) & jnp.any(hi - lo > 1)

    def body(s):
        lo, hi, step = s
        mid = jnp.floor(0.5 * (lo + hi))
        below = f(mid) < 0
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid), step + 1

    return jax.lax.while_loop(cond, body, (lower, upper, jnp.zeros((), jnp.int32)))[1]


def solve_increasing(cdf: Callable[[jax.Array], jax.Array], q: jax.Array, lower: jax.Array,
                     upper: jax.Array, *, discrete: bool = False,
                     x_tolerance: float = X_TOLERANCE, max_iterations: int = 64
                     ) -> jax.Array:
    """Quantiles: x with ``cdf(x) = q`` elementwise, for an increasing `cdf`.

    Parameters
    ----------
    cdf : callable
        Maps an array of the full output shape to cdf values of that shape.
    q : Array
        Levels, broadcasting against `lower`.
    lower, upper : Array
        A bracket, full output shape: ``cdf(lower) <= q <= cdf(upper)``. For a discrete
        family, integers with ``cdf(lower) < q`` (e.g. one below the smallest component
        quantile).
    discrete : bool
        Return the smallest integer k with ``cdf(k) >= q`` (integer bisection).
    x_tolerance : float
        Continuous case: stop once the bracket is narrower than
        ``2 eps |x| + x_tolerance``.
    max_iterations : int
        Cap on cdf evaluations (Chandrupatla needs about 6-12 on a mixture).

    Returns
    -------
    Array
        Same shape as `lower`.
    """
    q = jnp.broadcast_to(q, lower.shape).astype(lower.dtype)
    if discrete:
        return _integer_bisection(lambda x: cdf(x) - q, lower, upper, max_iterations)
    f_lower = jnp.minimum(cdf(lower) - q, 0.0)
    f_upper = jnp.maximum(cdf(upper) - q, 0.0)
    return _chandrupatla(lambda x: cdf(x) - q, lower, upper, f_lower, f_upper, x_tolerance,
                         max_iterations)[0]
