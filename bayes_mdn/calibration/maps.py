"""Monotone recalibration maps R: [0, 1] -> [0, 1] fitted to PIT values.

A predictive with cdf F is recalibrated to the cdf ``G(y) = R(F(y))``. When R is a
continuous, strictly increasing cdf on [0, 1] with density r > 0, G is again a distribution:
its density is ``r(F(y)) f(y)`` (it integrates to 1 because R(0) = 0 and R(1) = 1), its
quantiles are ``F^-1(R^-1(q))``. R is fitted so that the calibration PIT values ``u_i = F(y_i)``
become uniform: R estimates the cdf of the PIT values.

Maps (all mixed with the identity, ``R = (1 - w) R_0 + w u`` with a small ``w``, so that
r >= w > 0 everywhere and no test point can get zero density):

* :class:`IdentityMap` -- ``R(u) = u`` (nothing changes);
* :class:`IsotonicMap` -- the isotonic fit of the PIT values (their empirical cdf, which is
  the isotonic regression of the indicators ``1{u_i <= u}``), smoothed: a monotone cubic
  (PCHIP, Fritsch-Carlson) through the points ``(u_(j), j / B)`` at B equal-count bins. The
  number of bins is chosen by cross-validation of the held-out PIT log-density ``log r(u)``,
  which is exactly the change in test log-likelihood the map makes, so a smoother map wins
  when the data cannot support a finer one;
* :class:`BetaMap` -- beta calibration (Kull, Silva Filho & Flach 2017),
  ``R(u) = sigmoid(c + a log u - b log(1 - u))`` with a, b > 0, fitted by maximum
  likelihood of the PIT values under its density.

Every map stores plain float64 arrays and a JSON-ready config (:meth:`CalibrationMap.to_dict`,
:func:`map_from_dict`), so it is saved with a posterior without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["MAPS", "BetaMap", "CalibrationMap", "IdentityMap", "IsotonicMap", "fit_map",
           "map_from_dict"]

#: Default weight of the identity in every fitted map: r(u) >= this everywhere.
DEFAULT_IDENTITY_WEIGHT = 0.01
#: Bisection steps of the inverse: 2**-64 of the unit interval, below float64 resolution.
_INVERSE_STEPS = 64
#: Fewest calibration PIT values each method accepts.
MIN_POINTS = {"isotonic": 20, "beta": 10}


def _as_unit(u: Any) -> np.ndarray:
    return np.clip(np.asarray(u, np.float64), 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class CalibrationMap:
    """A continuous, strictly increasing cdf R on [0, 1] with R(0) = 0 and R(1) = 1.

    Subclasses define ``_base`` and ``_base_density``; the identity mixing, the inverse and
    the serialisation are shared.

    Attributes
    ----------
    identity_weight : float
        w in ``R = (1 - w) R_0 + w u``; 0 <= w <= 1.
    """

    kind: ClassVar[str] = "base"
    identity_weight: float = DEFAULT_IDENTITY_WEIGHT

    # ----------------------------------------------------------------- to override
    def _base(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _base_density(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    # ----------------------------------------------------------------- queries
    def __call__(self, u: Any) -> np.ndarray:
        """R(u), float64, same shape as `u` (values clipped into [0, 1] first)."""
        u = _as_unit(u)
        w = self.identity_weight
        return np.clip((1 - w) * self._base(u) + w * u, 0.0, 1.0)

    def density(self, u: Any) -> np.ndarray:
        """r(u) = R'(u) >= ``identity_weight``, float64."""
        u = _as_unit(u)
        w = self.identity_weight
        return (1 - w) * self._base_density(u) + w

    def log_density(self, u: Any) -> np.ndarray:
        """log r(u), float64 (finite whenever ``identity_weight`` > 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.density(u))

    def inverse(self, p: Any) -> np.ndarray:
        """R^-1(p) by bisection (R is strictly increasing), float64, same shape as `p`."""
        p = _as_unit(p)
        lower, upper = np.zeros_like(p), np.ones_like(p)
        for _ in range(_INVERSE_STEPS):
            middle = 0.5 * (lower + upper)
            below = self(middle) < p
            lower = np.where(below, middle, lower)
            upper = np.where(below, upper, middle)
        return np.where(p <= 0, 0.0, np.where(p >= 1, 1.0, 0.5 * (lower + upper)))

    @property
    def is_identity(self) -> bool:
        return False

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-ready config, float64 arrays) that :func:`map_from_dict` turns back into
        an equal map."""
        return ({"kind": self.kind, "identity_weight": float(self.identity_weight)},
                {name: np.asarray(value, np.float64) for name, value in self._arrays().items()})


@dataclass(frozen=True, eq=False)
class IdentityMap(CalibrationMap):
    """R(u) = u: the predictive is returned unchanged."""

    kind: ClassVar[str] = "identity"
    identity_weight: float = 1.0

    def _base(self, u: np.ndarray) -> np.ndarray:
        return u

    def _base_density(self, u: np.ndarray) -> np.ndarray:
        return np.ones_like(u)

    def __call__(self, u: Any) -> np.ndarray:
        return _as_unit(u)

    def density(self, u: Any) -> np.ndarray:
        return np.ones_like(_as_unit(u))

    def inverse(self, p: Any) -> np.ndarray:
        return _as_unit(p)

    @property
    def is_identity(self) -> bool:
        return True


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson (PCHIP) knot slopes of a monotone interpolant, as scipy's
    ``PchipInterpolator``: weighted harmonic means of the secants inside, a one-sided
    three-point formula (clipped to keep monotonicity) at the ends."""
    h = np.diff(x)
    delta = np.diff(y) / h
    slopes = np.zeros_like(x)
    if x.size == 2:
        return np.full_like(x, delta[0])
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    same_sign = (delta[:-1] > 0) & (delta[1:] > 0)
    slopes[1:-1] = np.where(same_sign, harmonic, 0.0)

    def end(h0, h1, d0, d1):
        slope = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(slope) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(slope) > 3 * abs(d0):
            return 3 * d0
        return slope

    slopes[0] = end(h[0], h[1], delta[0], delta[1])
    slopes[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return slopes


@dataclass(frozen=True, eq=False)
class IsotonicMap(CalibrationMap):
    """Smoothed isotonic map: a monotone cubic Hermite (PCHIP) cdf through knots.

    Attributes
    ----------
    knots_u, knots_p : numpy.ndarray, shape (L,)
        Strictly increasing knots from (0, 0) to (1, 1): ``R_0(knots_u) = knots_p``.
    identity_weight : float
    """

    kind: ClassVar[str] = "isotonic"
    knots_u: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    knots_p: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    identity_weight: float = DEFAULT_IDENTITY_WEIGHT

    def __post_init__(self) -> None:
        u = np.asarray(self.knots_u, np.float64)
        p = np.asarray(self.knots_p, np.float64)
        if (u.ndim != 1 or u.shape != p.shape or u.size < 2 or u[0] != 0 or u[-1] != 1
                or p[0] != 0 or p[-1] != 1 or np.any(np.diff(u) <= 0)
                or np.any(np.diff(p) <= 0)):
            raise ValueError("IsotonicMap knots must increase strictly from (0, 0) to (1, 1).")
        object.__setattr__(self, "knots_u", u)
        object.__setattr__(self, "knots_p", p)
        object.__setattr__(self, "_slopes", _pchip_slopes(u, p))

    def _segment(self, u: np.ndarray):
        index = np.clip(np.searchsorted(self.knots_u, u, side="right") - 1, 0,
                        self.knots_u.size - 2)
        x0, x1 = self.knots_u[index], self.knots_u[index + 1]
        y0, y1 = self.knots_p[index], self.knots_p[index + 1]
        m0, m1 = self._slopes[index], self._slopes[index + 1]
        h = x1 - x0
        return (u - x0) / h, h, y0, y1, m0, m1

    def _base(self, u: np.ndarray) -> np.ndarray:
        t, h, y0, y1, m0, m1 = self._segment(u)
        t2, t3 = t * t, t * t * t
        return ((2 * t3 - 3 * t2 + 1) * y0 + (t3 - 2 * t2 + t) * h * m0
                + (-2 * t3 + 3 * t2) * y1 + (t3 - t2) * h * m1)

    def _base_density(self, u: np.ndarray) -> np.ndarray:
        t, h, y0, y1, m0, m1 = self._segment(u)
        t2 = t * t
        value = ((6 * t2 - 6 * t) * y0 / h + (3 * t2 - 4 * t + 1) * m0
                 + (-6 * t2 + 6 * t) * y1 / h + (3 * t2 - 2 * t) * m1)
        return np.maximum(value, 0.0)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"knots_u": self.knots_u, "knots_p": self.knots_p}


@dataclass(frozen=True, eq=False)
class BetaMap(CalibrationMap):
    """Beta calibration map ``R_0(u) = sigmoid(c + a log u - b log(1 - u))``, a, b > 0.

    a = b = 1, c = 0 is the identity; a, b > 1 widens a predictive that was too wide (PIT
    values bunched in the middle), a, b < 1 widens one that was too narrow (PIT values
    piled up at 0 and 1), c shifts it.
    """

    kind: ClassVar[str] = "beta"
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    identity_weight: float = DEFAULT_IDENTITY_WEIGHT

    def _logit(self, u: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.c + self.a * np.log(u) - self.b * np.log1p(-u)

    def _base(self, u: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-self._logit(u)))

    def _base_density(self, u: np.ndarray) -> np.ndarray:
        value = self._base(u)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = self.a / u + self.b / (1 - u)
            density = value * (1 - value) * slope
        return np.where(np.isfinite(density), density, 0.0)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"params": np.array([self.a, self.b, self.c])}


MAPS: dict[str, type[CalibrationMap]] = {
    "identity": IdentityMap, "isotonic": IsotonicMap, "beta": BetaMap}


def map_from_dict(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> CalibrationMap:
    """The map that :meth:`CalibrationMap.to_dict` described."""
    kind = config.get("kind")
    if kind not in MAPS:
        raise ValueError(f"Unknown recalibration map kind {kind!r}; known: {sorted(MAPS)}.")
    weight = float(config.get("identity_weight", DEFAULT_IDENTITY_WEIGHT))
    if kind == "identity":
        return IdentityMap()
    if kind == "isotonic":
        return IsotonicMap(knots_u=arrays["knots_u"], knots_p=arrays["knots_p"],
                           identity_weight=weight)
    a, b, c = (float(value) for value in arrays["params"])
    return BetaMap(a=a, b=b, c=c, identity_weight=weight)


# --------------------------------------------------------------------------- fitting
def _knot_levels(num_bins: int, num_points: int) -> np.ndarray:
    """num_bins - 1 levels, evenly spaced on the standard Normal scale between the levels
    that leave 5 PIT values beyond the outermost knots: the tails, where interval coverage
    is decided, get knots of their own."""
    if num_bins < 2:
        return np.array([])
    from scipy.special import ndtr, ndtri  # scipy is a dependency of jax

    edge = float(ndtri(max(0.5, 1.0 - 5.0 / num_points)))
    if num_bins == 2 or edge <= 0:
        return np.array([0.5])[: num_bins - 1]
    return ndtr(np.linspace(-edge, edge, num_bins - 1))


def _isotonic_with_bins(u: np.ndarray, num_bins: int, weight: float) -> IsotonicMap:
    """PCHIP through the PIT quantiles at :func:`_knot_levels` (finer in the tails)."""
    ordered = np.sort(u)
    levels = _knot_levels(num_bins, u.size)
    # Quantile j / B of the PIT values, midway between neighbouring order statistics.
    inner = np.quantile(ordered, levels, method="midpoint") if num_bins > 1 else np.array([])
    knots_u = np.concatenate([[0.0], inner, [1.0]])
    knots_p = np.concatenate([[0.0], levels, [1.0]])
    # Ties (repeated PIT values) can repeat a knot or put one at 0 or 1: keep the first of
    # each, so both knot sequences increase strictly.
    keep, last = [0], 0.0
    for index in range(1, knots_u.size - 1):
        if last + 1e-9 < knots_u[index] < 1.0 - 1e-9:
            keep.append(index)
            last = knots_u[index]
    keep.append(knots_u.size - 1)
    return IsotonicMap(knots_u=knots_u[keep], knots_p=knots_p[keep], identity_weight=weight)


def _fit_beta(u: np.ndarray, weight: float) -> BetaMap:
    """Maximum likelihood of the PIT values under the beta-calibration density."""
    from scipy.optimize import minimize  # scipy is a dependency of jax

    u = np.clip(u, 1e-12, 1 - 1e-12)

    def loss(theta: np.ndarray) -> float:
        candidate = BetaMap(a=float(np.exp(theta[0])), b=float(np.exp(theta[1])),
                            c=float(theta[2]), identity_weight=weight)
        value = -np.mean(candidate.log_density(u))
        return float(value) if np.isfinite(value) else 1e10

    result = minimize(loss, np.zeros(3), method="Nelder-Mead",
                      options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
    theta = result.x if result.fun <= loss(np.zeros(3)) else np.zeros(3)
    return BetaMap(a=float(np.exp(theta[0])), b=float(np.exp(theta[1])), c=float(theta[2]),
                   identity_weight=weight)


def _bin_candidates(num_points: int) -> list[int]:
    """Bin counts tried by the cross-validation: at least 10 points per bin."""
    candidates = [2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128]
    return [b for b in candidates if b * 10 <= num_points] or [2]


def _choose_bins(u: np.ndarray, weight: float, num_folds: int = 5) -> int:
    """Bin count with the highest held-out mean log r(u) over `num_folds` folds."""
    order = np.random.default_rng(0).permutation(u.size)  # fixed: deterministic fits
    folds = np.array_split(order, num_folds)
    best, best_score = 2, -np.inf
    for bins in _bin_candidates(u.size * (num_folds - 1) // num_folds):
        score = 0.0
        for held in folds:
            train = np.setdiff1d(order, held)
            candidate = _isotonic_with_bins(u[train], bins, weight)
            score += float(np.sum(candidate.log_density(u[held])))
        if score > best_score:
            best, best_score = bins, score
    return best


def fit_map(u: Any, method: str = "isotonic", *, num_bins: int | None = None,
            identity_weight: float = DEFAULT_IDENTITY_WEIGHT) -> CalibrationMap:
    """Fit a recalibration map to PIT values.

    Parameters
    ----------
    u : array-like, shape (N,)
        PIT values ``F(y_i)`` of calibration targets under the predictive to recalibrate
        (randomised for discrete families), in [0, 1].
    method : {"isotonic", "beta", "identity"}
    num_bins : int, optional
        Isotonic only: equal-count bins of the smoothed isotonic fit; default chosen by
        5-fold cross-validation of the held-out PIT log-density.
    identity_weight : float
        Weight w of the identity in ``R = (1 - w) R_0 + w u`` (keeps r >= w > 0).

    Returns
    -------
    CalibrationMap
    """
    u = np.asarray(u, np.float64).reshape(-1)
    if method == "identity":
        return IdentityMap()
    if method == "beta":
        return _fit_beta(u, identity_weight)
    if num_bins is None:
        num_bins = _choose_bins(u, identity_weight)
    return _isotonic_with_bins(u, num_bins, identity_weight)
