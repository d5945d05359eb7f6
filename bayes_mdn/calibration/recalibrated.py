"""A posterior predictive recalibrated by a monotone map R of its cdf, and the fitting of R.

The recalibrated predictive at input x has cdf ``G(y) = R(F(y))`` where F is the posterior
predictive cdf and R a :class:`~bayes_mdn.calibration.maps.CalibrationMap`. Every query is
answered consistently from that one definition:

=====================  =====================================================================
``cdf(y)``             ``R(F(y))``
``log_prob(y)``        ``log f(y) + log r(F(y))``; discrete families ``log(R(F(y)) -
                       R(F(y - 1)))``
``quantiles(q)``       ``F^-1(R^-1(q))`` (R does not depend on x, so one quantile query)
``sample(key, n)``     inverse transform: ``F^-1(R^-1(V))``, V uniform
``log_prob_grid``      as ``log_prob`` on a grid
``hdr``, ``modes``     from the recalibrated density on a grid, as the base predictive does
``mean``, ``variance`` trapezoid rule of ``y g(y)`` and ``(y - mean)**2 g(y)`` on a grid
                       spanning the recalibrated 1e-7 and 1 - 1e-7 quantiles (sums over
                       integers for discrete families): numerical, not closed form
=====================  =====================================================================

The predictive is a :class:`~bayes_mdn.PredictiveMixture` subclass, so metrics and plots
accept it; queries that need the mixture structure itself (``mixture_parameters``,
``variance_decomposition``, ``entropy_decomposition``) raise a ValueError, since a
recalibrated predictive is no longer a mixture over draws.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._progress import progress_bar
from bayes_mdn._validation import check_choice, check_key, check_levels, check_positive_int
from bayes_mdn.calibration._grid import (
    JOINT_REASON,
    cdf_on_grid,
    check_calibration_data,
    check_one_output,
)
from bayes_mdn.calibration.loo import MIN_LOO_DRAWS, PARETO_K_THRESHOLD, loo_pit_values
from bayes_mdn.calibration.maps import (
    DEFAULT_IDENTITY_WEIGHT,
    MIN_POINTS,
    CalibrationMap,
    IdentityMap,
    fit_map,
)
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.predictive.grids import hdr_on_grid, modes_on_grid
from bayes_mdn.predictive.mixture import _check_level
from bayes_mdn.scaling import to_compute

if TYPE_CHECKING:
    from bayes_mdn.posterior import Posterior

__all__ = ["RecalibratedPredictive", "pit_values", "recalibrate"]

#: Probability left out of each tail by the grids of moments, hdr and CRPS.
_TAIL = 1e-7
#: Levels whose quantiles bracket the inverse-transform search of :meth:`sample`.
_BRACKET_LEVELS = np.concatenate([[1e-12, 1e-9, 1e-6, 1e-4, 1e-3],
                                  np.linspace(0.01, 0.99, 99), [0.999, 1 - 1e-4, 1 - 1e-6]])
_NOT_A_MIXTURE = ("a recalibrated predictive has cdf R(F(y)) and is no longer a mixture over "
                  "posterior draws. Call it on the posterior without recalibration "
                  "(Posterior.recalibration = None: dataclasses.replace(post, "
                  "recalibration=None)).")


@dataclass(frozen=True, eq=False)
class RecalibratedPredictive(PredictiveMixture):
    """A posterior predictive with cdf ``R(F(y))`` (D = 1): see the module docstring.

    Attributes
    ----------
    recalibration : CalibrationMap
        The map R; :class:`~bayes_mdn.calibration.maps.IdentityMap` gives back the base
        predictive exactly.
    (the other attributes are those of :class:`~bayes_mdn.PredictiveMixture`)
    """

    recalibration: CalibrationMap = field(default_factory=IdentityMap)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_one_output(self.num_outputs, "Recalibration", JOINT_REASON)
        if not isinstance(self.recalibration, CalibrationMap):
            raise TypeError("`recalibration` must be a bayes_mdn.calibration CalibrationMap; "
                            f"got {type(self.recalibration).__name__}.")

    @property
    def base(self) -> PredictiveMixture:
        """The predictive before recalibration (same inputs)."""
        return PredictiveMixture(model=self.model, draws=self.draws,
                                 standardizer=self.standardizer, X_std=self.X_std,
                                 max_elements=self.max_elements)

    @property
    def _discrete(self) -> bool:
        return bool(getattr(self.model.family, "discrete", False))

    def __repr__(self) -> str:
        return (f"RecalibratedPredictive(inputs={self.num_inputs}, draws={self.num_draws}, "
                f"components={self.num_components}, map={self.recalibration.kind!r})")

    # ----------------------------------------------------------------- pointwise
    def cdf(self, y: Any) -> np.ndarray:
        """``R(F(y))``, float64 (M, 1)."""
        return self.recalibration(self.base.cdf(y))

    def log_prob(self, y: Any) -> np.ndarray:
        """``log f(y) + log r(F(y))`` (discrete: ``log(R(F(y)) - R(F(y - 1)))``), (M,)
        float64, in original units."""
        base = self.base
        log_density = base.log_prob(y)
        targets = base._targets(y)  # validated; standardised (discrete: unchanged)
        values = self._to_original(targets)
        if self._discrete:
            upper = self.recalibration(base.cdf(values))[:, 0]
            lower = self.recalibration(base.cdf(values - 1))[:, 0]
            with np.errstate(divide="ignore"):
                mass = np.log(np.maximum(upper - lower, 0.0))
            return np.where(np.isfinite(log_density), mass, -np.inf)
        return log_density + self.recalibration.log_density(base.cdf(values)[:, 0])

    def log_prob_grid(self, grid: Any) -> np.ndarray:
        """Recalibrated log-density on a grid of y values per input, (M, G) float64.

        Parameters
        ----------
        grid : array-like, shape (G,) or (M, G)
        """
        base = self.base
        log_density = base.log_prob_grid(grid)  # validates the grid
        values = np.broadcast_to(np.asarray(grid, np.float64), log_density.shape)
        if self._discrete:
            upper = self.recalibration(cdf_on_grid(base, values))
            lower = self.recalibration(cdf_on_grid(base, values - 1))
            with np.errstate(divide="ignore"):
                mass = np.log(np.maximum(upper - lower, 0.0))
            return np.where(np.isfinite(log_density), mass, -np.inf)
        return log_density + self.recalibration.log_density(cdf_on_grid(base, values))

    # ----------------------------------------------------------------- quantiles, samples
    def quantiles(self, q: Any, *, num_iterations: int | None = None) -> np.ndarray:
        """``F^-1(R^-1(q))``, (Q, M, 1) float64."""
        levels = check_levels(q)
        return self.base.quantiles(self._inner_levels(levels), num_iterations=num_iterations)

    def _inner_levels(self, levels: np.ndarray) -> np.ndarray:
        """``R^-1(levels)`` kept where the base quantiles can resolve them: a level that
        rounds to 1 in the compute dtype has no finite quantile."""
        top = 1 - 4 * float(np.finfo(to_compute(0.0).dtype).eps)
        return np.clip(self.recalibration.inverse(levels), 1e-15, top)

    def _inverse_base_cdf(self, levels: np.ndarray) -> np.ndarray:
        """``F^-1(w)`` of the base predictive at per-input levels `levels` (S, M), by a
        search bracketed by the base quantiles at ``_BRACKET_LEVELS``; (S, M) float64."""
        base = self.base
        num_samples, num_inputs = levels.shape
        top = 1 - 4 * float(np.finfo(to_compute(0.0).dtype).eps)
        bracket = np.concatenate([_BRACKET_LEVELS, [top]])
        levels = np.clip(levels, bracket[0], bracket[-1])
        table = base.quantiles(bracket)[:, :, 0].astype(np.float64)  # (T, M)
        column = np.clip(np.searchsorted(bracket, levels), 1, bracket.size - 1)
        inputs = np.broadcast_to(np.arange(num_inputs), levels.shape)
        lower, upper = table[column - 1, inputs], table[column, inputs]
        tiled = base[np.tile(np.arange(num_inputs), num_samples)]
        flat = levels.reshape(-1)
        lower, upper = lower.reshape(-1), upper.reshape(-1)
        if self._discrete:
            lower = lower - 1  # F(lower) < w <= F(upper): integer search for the upper end
            while np.any(upper - lower > 1):
                middle = np.floor(0.5 * (lower + upper))
                below = tiled.cdf(middle[:, None])[:, 0] < flat
                lower = np.where(below, middle, lower)
                upper = np.where(below, upper, middle)
            return upper.reshape(levels.shape)
        for _ in range(40):
            middle = 0.5 * (lower + upper)
            below = tiled.cdf(middle[:, None])[:, 0] < flat
            lower = np.where(below, middle, lower)
            upper = np.where(below, upper, middle)
        return (0.5 * (lower + upper)).reshape(levels.shape)

    def sample(self, key: jax.Array, num_samples: int = 1) -> np.ndarray:
        """Samples by inverse transform, ``F^-1(R^-1(V))`` with V ~ Uniform(0, 1).

        The base levels ``R^-1(V)`` are clipped into [1e-12, 1 - 4 eps] (eps of the compute
        dtype: 5e-7 in float32), the range where the base quantiles are finite; this moves
        at most that much probability.

        Returns
        -------
        numpy.ndarray, shape (num_samples, M, 1), float64
        """
        key = check_key(key)
        num_samples = check_positive_int(num_samples, "num_samples")
        uniform = np.asarray(jax.random.uniform(key, (num_samples, self.num_inputs),
                                                dtype=np.float32), np.float64)
        levels = self.recalibration.inverse(uniform)
        return self._inverse_base_cdf(levels)[..., None]

    # ----------------------------------------------------------------- grids
    def _grid(self, grid_size: int, tail: float = _TAIL) -> np.ndarray:
        """(M, G) float64 grid between the recalibrated `tail` and 1 - `tail` quantiles
        (every integer of that range for discrete families, padded with its last value)."""
        bounds = self.quantiles([tail, 1 - tail])[:, :, 0]
        if self._discrete:
            lower = np.maximum(np.floor(bounds[0]), self.model.family.support[0])
            size = int(np.max(bounds[1] - lower)) + 1
            if size > self.max_elements:
                raise ValueError(f"The predictive spreads over {size} integers; pass "
                                 f"max_elements={size} or more to Posterior.predictive().")
            grid = lower[:, None] + np.arange(size, dtype=np.float64)
            return np.minimum(grid, np.maximum(bounds[1], lower)[:, None])
        fractions = np.linspace(0.0, 1.0, grid_size)
        return bounds[0][:, None] + (bounds[1] - bounds[0])[:, None] * fractions

    def _density_on(self, grid: np.ndarray) -> np.ndarray:
        """Recalibrated density (continuous) or mass (discrete) on `grid` (M, G)."""
        return np.exp(self.log_prob_grid(grid))

    def _integer_mass(self, grid: np.ndarray) -> np.ndarray:
        """Masses on a padded integer grid with each repeated end counted once."""
        mass = self._density_on(grid)
        repeated = np.concatenate([np.zeros((grid.shape[0], 1), bool),
                                   np.diff(grid, axis=1) == 0], axis=1)
        return np.where(repeated, 0.0, mass)

    def mean(self, *, grid_size: int = 4096) -> np.ndarray:
        """Recalibrated mean, (M, 1) float64, by the trapezoid rule on a `grid_size`-point
        grid over the 1e-7 to 1 - 1e-7 quantiles (a sum over integers for discrete
        families), normalised by the grid's mass."""
        self.model.family.check_moments(1)
        return self._moments(grid_size)[0]

    def variance(self, *, grid_size: int = 4096) -> np.ndarray:
        """Recalibrated variance, (M, 1) float64, numerically as :meth:`mean`."""
        self.model.family.check_moments(2)
        return self._moments(grid_size)[1]

    def _moments(self, grid_size: int) -> tuple[np.ndarray, np.ndarray]:
        grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        grid = self._grid(grid_size)
        if self._discrete:
            weights = self._integer_mass(grid)
        else:
            density = self._density_on(grid)
            widths = np.diff(grid, axis=1)
            weights = np.zeros_like(density)
            weights[:, :-1] += 0.5 * widths * density[:, :-1]
            weights[:, 1:] += 0.5 * widths * density[:, 1:]
        weights = weights / np.sum(weights, axis=1, keepdims=True)
        mean = np.sum(weights * grid, axis=1)
        variance = np.sum(weights * np.square(grid - mean[:, None]), axis=1)
        return mean[:, None], variance[:, None]

    def modes(self, *, grid_size: int = 512, min_relative_density: float = 1e-3
              ) -> list[np.ndarray]:
        """Local maxima of the recalibrated density (or mass), highest first; as
        :meth:`PredictiveMixture.modes`, on a grid over the 0.0005-0.9995 quantiles."""
        grid_size = check_positive_int(grid_size, "grid_size", minimum=3)
        grid = self._grid(grid_size, tail=5e-4)
        if self._discrete:
            mass = self._integer_mass(grid)
            with np.errstate(divide="ignore"):
                return modes_on_grid(grid, np.log(mass), discrete=True,
                                     min_relative_density=min_relative_density)
        return modes_on_grid(grid, self.log_prob_grid(grid),
                             min_relative_density=min_relative_density)

    def hdr(self, level: float, *, grid_size: int = 2048) -> list[np.ndarray]:
        """Highest-density region of the recalibrated density, as
        :meth:`PredictiveMixture.hdr` (the set ``{y : g(y) >= c}`` of mass `level`), on a
        grid over the 1e-7 to 1 - 1e-7 quantiles."""
        level = _check_level(level)
        grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        grid = self._grid(grid_size)
        if self._discrete:
            return hdr_on_grid(grid, self._integer_mass(grid), level, discrete=True)
        return hdr_on_grid(grid, self._density_on(grid), level)

    def crps(self, y: Any, *, grid_size: int = 1024) -> np.ndarray:
        """Pointwise CRPS ``integral (G(z) - 1{y <= z})**2 dz`` (M, 1) float64, by the
        trapezoid rule on two grids meeting at y (so the jump at y is exact); used by
        :func:`bayes_mdn.metrics.crps` for a recalibrated predictive."""
        base = self.base
        values = self._to_original(base._targets(y))[:, 0]
        bounds = self.quantiles([_TAIL, 1 - _TAIL])[:, :, 0]
        lower, upper = np.minimum(bounds[0], values), np.maximum(bounds[1], values)
        half = max(8, grid_size // 2)
        fractions = np.linspace(0.0, 1.0, half)
        left = lower[:, None] + (values - lower)[:, None] * fractions
        right = values[:, None] + (upper - values)[:, None] * fractions
        if self._discrete:  # a step function: integrate exactly between integers
            score = np.zeros(self.num_inputs)
            for start, stop, below in ((lower, values, True), (values, upper, False)):
                size = int(np.max(np.ceil(stop) - np.floor(start))) + 1
                knots = np.floor(start)[:, None] + np.arange(size)
                knots = np.clip(knots, start[:, None], stop[:, None])
                cdf = self.recalibration(cdf_on_grid(base, knots))
                term = np.square(cdf if below else 1 - cdf)
                score += np.sum(term[:, :-1] * np.diff(knots, axis=1), axis=1)
            return score[:, None]
        total = np.zeros(self.num_inputs)
        for grid, below in ((left, True), (right, False)):
            cdf = self.recalibration(cdf_on_grid(base, grid))
            term = np.square(cdf if below else 1 - cdf)
            total += np.trapezoid(term, grid, axis=1)
        return total[:, None]

    # ----------------------------------------------------------------- not a mixture
    def variance_decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError(f"variance_decomposition(): {_NOT_A_MIXTURE}")

    def entropy_decomposition(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise ValueError(f"entropy_decomposition(): {_NOT_A_MIXTURE}")

    def mixture_parameters(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise ValueError(f"mixture_parameters(): {_NOT_A_MIXTURE}")

    def reduce(self, num_components: int = 30, **kwargs: Any) -> PredictiveMixture:
        raise ValueError(f"reduce(): {_NOT_A_MIXTURE}")


# --------------------------------------------------------------------------- fitting
def pit_values(pred: PredictiveMixture, y: np.ndarray, *, key: jax.Array | None) -> np.ndarray:
    """PIT values (N,) of targets (N, 1): ``F(y)``, randomised for discrete families
    (``F(y - 1) + V (F(y) - F(y - 1))``, V uniform; needs `key`)."""
    upper = np.asarray(pred.cdf(y), np.float64)[:, 0]
    if not getattr(pred.model.family, "discrete", False):
        return upper
    if key is None:
        raise TypeError("Recalibrating a discrete family randomises its PIT values and needs "
                        "`key`, e.g. key=jax.random.key(0).")
    lower = np.minimum(np.asarray(pred.cdf(y - 1), np.float64)[:, 0], upper)
    noise = np.asarray(jax.random.uniform(key, upper.shape), np.float64)
    return np.clip(lower + noise * (upper - lower), 0.0, 1.0)


def _default_fit_options(posterior: Posterior) -> dict[str, Any]:
    """The fit options recorded in ``posterior.info`` that the method accepts."""
    # The cross-fit refits the model: the inference registry says which options exist.
    from bayes_mdn.inference import METHODS

    fields = METHODS[posterior.method][0].__dataclass_fields__
    options = {name: value for name, value in posterior.info.items()
               if name in fields and isinstance(value, (int, float, str, bool))}
    if options.get("lr_schedule") == "custom":
        options.pop("lr_schedule")
    if "init" in fields and "init" in posterior.info:
        recorded = posterior.info["init"]
        if recorded is None or recorded == "auto":
            options["init"] = recorded
        else:  # started from another fit, recorded by its method name only (not stored):
            options["init"] = fields["init"].default  # the refits use the method's own start
    return options


def recalibrate(
    posterior: Posterior,
    X: Any,
    y: Any,
    *,
    method: str = "isotonic",
    cv: int | str | None = None,
    key: jax.Array | None = None,
    fit_options: Mapping[str, Any] | None = None,
    refit: Callable[..., Posterior] | None = None,
    num_draws: int | None = None,
    num_bins: int | None = None,
    identity_weight: float = DEFAULT_IDENTITY_WEIGHT,
) -> Posterior:
    """The posterior with a recalibration map fitted to PIT values; see
    :meth:`bayes_mdn.Posterior.recalibrate` for the parameters."""
    method = check_choice(method, "method", ("isotonic", "beta"))
    check_one_output(posterior.num_outputs, "Recalibration", JOINT_REASON)
    if key is not None:
        key = check_key(key)
    if (isinstance(identity_weight, bool) or not isinstance(identity_weight, (int, float))
            or not 0 < identity_weight < 1):
        raise ValueError(f"`identity_weight` must lie strictly between 0 and 1, e.g. 0.01; "
                         f"got {identity_weight!r}.")
    if num_bins is not None:
        num_bins = check_positive_int(num_bins, "num_bins")
    k_hat = None
    if isinstance(cv, str):
        if cv != "loo":
            raise ValueError(f"`cv` must be an integer >= 2 (the number of folds), \"loo\" or "
                             f"None; got {cv!r}.")
        total = posterior.num_chains * posterior.num_draws
        if posterior.kind == "point" or total < MIN_LOO_DRAWS:
            raise ValueError(
                f"recalibrate(cv='loo') reweights posterior draws and needs at least "
                f"{MIN_LOO_DRAWS}; this {posterior.method} fit has {total}. Use cv=5 "
                "(refits on folds) or held-out rows (cv=None).")
        X, y = check_calibration_data(X, y, posterior.num_features, 1, MIN_POINTS[method],
                                      f"recalibrate(method={method!r}, cv='loo')")
        draws = None if num_draws is None else min(check_positive_int(num_draws, "num_draws"),
                                                   total)
        if draws is not None and draws < MIN_LOO_DRAWS:
            raise ValueError(f"recalibrate(cv='loo') needs num_draws >= {MIN_LOO_DRAWS}; got "
                             f"{num_draws}.")
        u, k_hat = loo_pit_values(posterior, X, y, key=key, num_draws=draws)
        _warn_high_pareto_k(k_hat, posterior.method)
    elif cv is None:
        X, y = check_calibration_data(X, y, posterior.num_features, 1, MIN_POINTS[method],
                                      f"recalibrate(method={method!r})")
        total = posterior.num_chains * posterior.num_draws
        draws = None if num_draws is None else min(check_positive_int(num_draws, "num_draws"),
                                                   total)
        pred = posterior.predictive(X, num_draws=draws)
        pred = pred.base if isinstance(pred, RecalibratedPredictive) else pred
        u = pit_values(pred, y, key=key)
    else:
        if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
            raise ValueError(f"`cv` must be an integer >= 2 (the number of folds), e.g. 5; "
                             f"got {cv!r}.")
        if key is None:
            raise TypeError("recalibrate(cv=...) refits the model on folds and needs `key`, "
                            "e.g. key=jax.random.key(0).")
        X, y = check_calibration_data(X, y, posterior.num_features, 1,
                                      max(MIN_POINTS[method], 2 * int(cv)),
                                      f"recalibrate(method={method!r}, cv={cv})")
        options = dict(_default_fit_options(posterior) if fit_options is None else fit_options)
        if refit is not None and not callable(refit):
            raise TypeError("`refit` must be a callable refit(X, y, key=...) -> Posterior.")
        u = _cross_fitted_pit(posterior, X, y, int(cv), key, options, refit, num_draws)
    fitted = fit_map(u, method, num_bins=num_bins, identity_weight=float(identity_weight))
    record = {"method": method, "num_points": int(u.size),
              "cv": cv if cv is None or isinstance(cv, str) else int(cv)}
    if k_hat is not None:
        record.update(max_pareto_k=float(np.nanmax(k_hat)),
                      fraction_high_pareto_k=float(np.mean(~(k_hat <= PARETO_K_THRESHOLD))))
    info = {**posterior.info, "recalibration": record}
    return dataclasses.replace(posterior, recalibration=fitted, info=info)


def _warn_high_pareto_k(k_hat: np.ndarray, method: str) -> None:
    high = ~(k_hat <= PARETO_K_THRESHOLD)  # NaN counts as high
    if high.any():
        warnings.warn(
            f"recalibrate(cv='loo'): the importance weights of {int(high.sum())} of "
            f"{k_hat.size} rows have Pareto k-hat above {PARETO_K_THRESHOLD} (max "
            f"{np.nanmax(k_hat):.2f}), so their leave-one-out PIT values are unreliable "
            f"({method} fit). Use cv=5 (refits on folds) or held-out rows (cv=None).",
            UserWarning, stacklevel=4)


def _cross_fitted_pit(posterior: Posterior, X: np.ndarray, y: np.ndarray, cv: int,
                      key: jax.Array, options: dict[str, Any],
                      refit: Callable[..., Posterior] | None, num_draws: int | None
                      ) -> np.ndarray:
    """PIT values of every row under a fit on the other folds (cv refits)."""
    split_key, *fold_keys = jax.random.split(key, 2 * cv + 1)
    order = np.asarray(jax.random.permutation(split_key, X.shape[0]))
    folds = np.array_split(order, cv)
    u = np.empty(X.shape[0])
    with progress_bar(cv, desc="recalibrate: cross-fitting") as bar:
        for index, held in enumerate(folds):
            train = np.setdiff1d(order, held)
            fit_key, pit_key = fold_keys[2 * index], fold_keys[2 * index + 1]
            if refit is not None:
                fold = refit(X[train], y[train], key=fit_key)
            else:
                fold = posterior.model.fit(X[train], y[train], key=fit_key,
                                           method=posterior.method, **options)
            draws = None if num_draws is None else min(num_draws,
                                                       fold.num_chains * fold.num_draws)
            pred = fold.predictive(X[held], num_draws=draws)
            pred = pred.base if isinstance(pred, RecalibratedPredictive) else pred
            u[held] = pit_values(pred, y[held], key=pit_key)
            bar.update(1)
    return u
