"""The one root-finder for quantiles: Chandrupatla's bracketed method, and integer bisection
for discrete families.

Both solve ``F(x) = q`` elementwise for an increasing F (a cdf) given a bracket with
``F(lower) <= q <= F(upper)``, stop as soon as every element has converged (``lax.while_loop``)
and never leave the bracket, so a noisy (float32) F cannot send them astray.
:func:`solve_from_guess` builds that bracket around a guess instead (a few evaluations of F
stepping away from it), for when a cheap estimate of the root is at hand.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["X_TOLERANCE", "solve_from_guess", "solve_increasing"]

#: Absolute tolerance on x, in the units of the solve (standardised y for the predictive),
#: added to 2 machine epsilons relative: about the float32 resolution of an O(1) value.
X_TOLERANCE = 5e-7


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    ok = denominator != 0
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), jnp.inf)


def _chandrupatla(f: Callable[[jax.Array], jax.Array], lower: jax.Array, upper: jax.Array,
                  f_lower: jax.Array, f_upper: jax.Array, x_tolerance: float,
                  max_iterations: int, t: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
    """Root of f (f(lower) <= 0 <= f(upper)) by Chandrupatla's method (1997), vectorised.

    Each step evaluates f once at ``a + t (b - a)``: inverse quadratic interpolation through
    the last three points when it is safe (Chandrupatla's criterion), bisection otherwise,
    never closer than half the tolerance to the bracket's ends. An element stops when f is
    exactly 0 at a point or its bracket (the last points on either side of the root) is
    narrower than ``2 eps |x| + x_tolerance``, and returns the end with the smaller |f|.
    The first point is ``upper + t (lower - upper)`` (`t`: default 0.5, bisection); the end
    values only steer the interpolation, so estimates of them do (their signs must hold).

    Returns the root estimates and the number of steps taken.
    """
    eps = jnp.finfo(lower.dtype).eps
    t = jnp.full_like(lower, 0.5) if t is None else t
    state = dict(a=upper, b=lower, c=upper, fa=f_upper, fb=f_lower, fc=f_upper,
                 t=t, done=jnp.zeros(lower.shape, bool),
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
        width = jnp.abs(b - a)  # the bracket
        finished = (fm == 0) | (width < tolerance)
        limit = _safe_divide(0.5 * tolerance, width)
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


def _secant_fraction(lower: jax.Array, upper: jax.Array, f_lower: jax.Array,
                     f_upper: jax.Array, x_tolerance: float) -> jax.Array:
    """Chandrupatla's first fraction t (point ``upper + t (lower - upper)``) at the chord's
    root, kept half the tolerance away from both ends."""
    eps = jnp.finfo(lower.dtype).eps
    t = _safe_divide(f_upper, f_upper - f_lower)
    tolerance = 2 * eps * jnp.maximum(jnp.abs(lower), jnp.abs(upper)) + x_tolerance
    limit = jnp.minimum(_safe_divide(0.5 * tolerance, jnp.abs(upper - lower)), 0.5)
    return jnp.clip(jnp.where(jnp.isfinite(t), t, 0.5), limit, 1 - limit)


def _bracket_from_guess(f, guess, step, f_far, max_expansions):
    """Bracket around `guess`: f there, then probes `step`, 4 `step`, 16 `step`, ... beyond
    the last one, towards the root, until f changes sign.

    Returns (lower, upper, f_lower, f_upper): the innermost evaluated points on each side of
    the root, and -inf or +inf (with the value from `f_far`) on a side that no probe
    reached within `max_expansions` probes.
    """
    f_guess = f(guess)
    rising = f_guess < 0  # the root is above the guess
    inf = jnp.full_like(guess, jnp.inf)
    state = dict(lower=jnp.where(rising | (f_guess == 0), guess, -inf),
                 upper=jnp.where(rising, inf, guess),
                 f_lower=jnp.where(rising | (f_guess == 0), f_guess, f_far[0]),
                 f_upper=jnp.where(rising, f_far[1], f_guess), step=step,
                 count=jnp.zeros((), jnp.int32))

    def open_side(s):
        return jnp.isinf(s["lower"]) | jnp.isinf(s["upper"])

    def cond(s):
        return (s["count"] < max_expansions) & jnp.any(open_side(s))

    def body(s):
        active = open_side(s)
        probe = jnp.where(rising, s["lower"] + s["step"], s["upper"] - s["step"])
        f_probe = f(probe)
        to_lower = active & (f_probe < 0)
        to_upper = active & (f_probe >= 0)
        return dict(lower=jnp.where(to_lower, probe, s["lower"]),
                    upper=jnp.where(to_upper, probe, s["upper"]),
                    f_lower=jnp.where(to_lower, f_probe, s["f_lower"]),
                    f_upper=jnp.where(to_upper, f_probe, s["f_upper"]),
                    step=jnp.where(active, 4 * s["step"], s["step"]), count=s["count"] + 1)

    s = jax.lax.while_loop(cond, body, state)
    return s["lower"], s["upper"], s["f_lower"], s["f_upper"]


def solve_from_guess(f: Callable[[jax.Array], jax.Array], guess: jax.Array, step: jax.Array,
                     f_far: tuple[jax.Array, jax.Array],
                     fallback: Callable[[], tuple[jax.Array, jax.Array]], *,
                     x_tolerance: float = X_TOLERANCE, max_iterations: int = 64,
                     max_expansions: int = 12) -> jax.Array:
    """Root of an increasing f near a guess: bracket it by stepping away from the guess,
    then Chandrupatla's method inside that bracket.

    f is evaluated at `guess`, then at ``guess +- step``, ``+- 5 step``, ``+- 21 step``, ...
    (towards the root, as f's sign says) until its sign changes: a bracket of evaluated
    points, as narrow as the guess is good. Chandrupatla's method starts at the chord's root
    and stops within ``2 eps |x| + x_tolerance`` as :func:`solve_increasing` does.

    Parameters
    ----------
    f : callable
        Increasing function of an array of `guess`'s shape (e.g. ``cdf(x) - q``).
    guess, step : Array
        Estimate of the root and of its error (> 0), same shape.
    f_far : pair of Array
        f's limits at -inf and +inf (e.g. ``-q`` and ``1 - q``); they only steer the
        interpolation where no probe reached a side.
    fallback : callable
        Returns a bracket (lower, upper) with ``f(lower) <= 0 <= f(upper)``, whose end is
        used on a side that `max_expansions` probes did not reach; called under
        ``lax.cond``, so only evaluated then.
    x_tolerance, max_iterations : float, int
        As in :func:`solve_increasing` (`max_iterations`: Chandrupatla steps).
    max_expansions : int
        Probes after the guess.

    Returns
    -------
    Array
        Same shape as `guess`.
    """
    bounds = _bracket_from_guess(f, guess, step, f_far, max_expansions)

    def widen(bounds):
        lower, upper, f_lower, f_upper = bounds
        far_lower, far_upper = fallback()
        return (jnp.where(jnp.isinf(lower), far_lower, lower),
                jnp.where(jnp.isinf(upper), far_upper, upper), f_lower, f_upper)

    lower, upper, f_lower, f_upper = jax.lax.cond(
        jnp.any(jnp.isinf(bounds[0]) | jnp.isinf(bounds[1])), widen, lambda b: b, bounds)
    f_lower, f_upper = jnp.minimum(f_lower, 0.0), jnp.maximum(f_upper, 0.0)
    t = _secant_fraction(lower, upper, f_lower, f_upper, x_tolerance)
    return _chandrupatla(f, lower, upper, f_lower, f_upper, x_tolerance, max_iterations, t)[0]


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
        Cap on cdf evaluations (Chandrupatla steps: about 12 from the extreme component
        quantiles of a 1000-draw mixture of the seed network, 3 from a tight bracket).

    Returns
    -------
    Array
        Same shape as `lower`.
    """
    q = jnp.broadcast_to(q, lower.shape).astype(lower.dtype)
    if discrete:
        return _integer_bisection(lambda x: cdf(x) - q, lower, upper, max_iterations)
    # The ends are not evaluated: the cdf's limits, 0 and 1, stand in for their values
    # (only the interpolation uses them; the bracket holds by the caller's construction).
    f_lower, f_upper = -q, 1.0 - q
    t = _secant_fraction(lower, upper, f_lower, f_upper, x_tolerance)
    return _chandrupatla(lambda x: cdf(x) - q, lower, upper, f_lower, f_upper, x_tolerance,
                         max_iterations, t)[0]
