"""The posterior predictive at new inputs: a mixture over S draws x K components.

For draw s the network gives mixing weights w_sk(x) and component parameters; the posterior
predictive is the uniform average over draws,

    p(y | x) = (1 / S) sum_s sum_k w_sk(x) p_k(y | theta_sk(x)),

i.e. one mixture of S * K components with log-weights ``log w_sk - log S``.

Nothing of size M x S x K is ever held in memory. Every query runs a compiled kernel over
chunks of inputs (padded to a power of two, so a new M rarely recompiles), planned by the
one evaluator of draws x inputs (:mod:`._evaluator`: its memory model counts every layer,
a Flax/Equinox feature network's included). At many inputs the reductions (mean, variances,
log_prob, cdf, grids, entropy) run *draw-major* (:mod:`._reductions`): ``jax.lax.scan`` over
the draws, each step one draw's network on a block of up to 2048 inputs, folded into a
running reduction; at few inputs *input-major*: all draws of a few inputs at once, the draws
split into scanned chunks only when one input's whole mixture does not fit. Quantiles keep
each input chunk's mixture and solve all levels with Chandrupatla's method (:mod:`._roots`).
Chunk sizes keep inputs x draws x max(K x D x (levels or grid points), widest layer) under
``max_elements``.
A last, partial draw chunk repeats the final real draw and masks the copies out (log-weight
-inf, weight 0), so chunking never changes a result beyond float rounding.

Units: the kernels evaluate everything in standardised units of y, ``(y - y_shift) / y_scale``,
where values are O(1) whatever the data's units. Targets and grids are standardised here, on
the host, in float64 before the cast to the compute dtype, and results are mapped back in
float64: locations (means, quantiles, samples, modes, interval ends) as
``value * y_scale + y_shift``, variances times ``y_scale**2``, log-densities and entropies
plus or minus ``sum(log y_scale)``. Results in original units are therefore float64 arrays,
so that y ~ 1e8 + O(1) keeps its O(1) part and a variance of 1e40 does not overflow.
Families that keep y unstandardised (``family.standardize_y`` False) have shift 0 and scale 1.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._validation import (
    as_targets,
    check_choice,
    check_key,
    check_levels,
    check_positive_int,
)
from bayes_mdn.families import inverse_softplus
from bayes_mdn.predictive import _compress, _crps, _quantiles, _reductions
from bayes_mdn.predictive._chunks import _chunk_sizes, _map_chunks
from bayes_mdn.predictive._constants import DEFAULT_MAX_ELEMENTS
from bayes_mdn.predictive._evaluator import network_width, plan_chunks, whole_mixture_chunk
from bayes_mdn.predictive._kernels import (
    _cdf_kernel,
    _entropy_grid_kernel,
    _entropy_mc_kernel,
    _log_prob_grid_kernel,
    _log_prob_kernel,
    _mixture_kernel,
    _moments_kernel,
    _num_chunks,
    _num_draws,
    _sample_kernel,
    _support_kernel,
    _variance_split_kernel,
)
from bayes_mdn.predictive.grids import hdr_on_grid, modes_on_grid
from bayes_mdn.scaling import Standardizer, to_compute

if TYPE_CHECKING:
    from bayes_mdn.model import MDN


__all__ = ["PredictiveMixture"]


def _check_level(level: Any) -> float:
    """Validate an HDR probability mass strictly between 0 and 1."""
    if (isinstance(level, bool) or np.ndim(level) != 0
            or np.asarray(level).dtype.kind not in "iuf"):
        raise TypeError(f"`level` must be a number strictly between 0 and 1, e.g. 0.9; got "
                        f"{level!r} ({type(level).__name__}).")
    value = float(level)
    if not 0.0 < value < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1, e.g. 0.9 for a 90% "
                         f"region; got {value}.")
    return value


def _merged_mixture(log_weight: np.ndarray, loc: np.ndarray, raw_scale: np.ndarray,
                    standardizer: Standardizer, dtype: Any, max_elements: int
                    ) -> PredictiveMixture:
    """A one-draw PredictiveMixture whose inputs are per-input mixture parameters.

    The network has no hidden layer and head kernels that select the columns of the inputs
    ``[log_weight | loc | raw_scale]`` (M, 3 K'), so the mixture at input i is exactly the
    parameters of row i (scale = softplus(raw_scale), no floor), in standardised units.
    """
    from bayes_mdn.families import Normal
    from bayes_mdn.model import MDN

    num_components = log_weight.shape[1]
    model = MDN(num_components=num_components, hidden_sizes=(),
                family=Normal(min_scale=0.0))
    width = 3 * num_components
    draws = {}
    for index, head in enumerate(("logits", "loc", "scale")):
        kernel = np.zeros((1, width, num_components), dtype)
        kernel[0, index * num_components + np.arange(num_components),
               np.arange(num_components)] = 1.0
        draws[f"{head}.kernel"] = kernel
        draws[f"{head}.bias"] = np.zeros((1, num_components), dtype)
    merged = Standardizer(np.zeros(width), np.ones(width), np.asarray(standardizer.y_shift),
                          np.asarray(standardizer.y_scale))
    X = np.concatenate([log_weight, loc, raw_scale], axis=1).astype(dtype)
    return PredictiveMixture(model, draws, merged, X, max_elements)


# --------------------------------------------------------------------------- public class
@dataclass(frozen=True, eq=False)
class PredictiveMixture:
    """Posterior predictive distribution at M inputs: batch shape (M,), event shape (D,).

    Created by :meth:`bayes_mdn.Posterior.predictive`; every result is in the original units
    of y (float64 where it carries those units; see the module docstring). All queries are
    evaluated in bounded memory (see ``max_elements``).

    Attributes
    ----------
    model : MDN
    draws : mapping of str to Array
        Network parameters with a leading draw axis S.
    standardizer : Standardizer
    X_std : numpy.ndarray, shape (M, P)
        Standardised inputs in the compute dtype (kept on the host; moved chunk by chunk).
    max_elements : int
        Budget on terms evaluated at once (inputs x draws x components x outputs x extra
        axis such as quantile levels or grid points): the size of the largest intermediate
        array of a query, so peak memory is a small multiple of ``4 * max_elements`` bytes
        in float32. Inputs and, when one input's whole mixture is over budget, draws are
        processed in chunks. The finest split is one input and one draw.
    """

    model: MDN
    draws: Mapping[str, jax.Array]
    standardizer: Standardizer
    X_std: np.ndarray
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def __post_init__(self) -> None:
        X_std = np.array(self.X_std)
        X_std.setflags(write=False)
        object.__setattr__(self, "X_std", X_std)

    # ----------------------------------------------------------------------- shapes
    @property
    def num_inputs(self) -> int:
        """M, the number of inputs."""
        return int(self.X_std.shape[0])

    @property
    def num_outputs(self) -> int:
        """D, the dimension of y."""
        return int(self.standardizer.y_scale.shape[0])

    @property
    def num_draws(self) -> int:
        """S, the number of posterior draws mixed over."""
        return _num_draws(self.draws)

    @property
    def num_components(self) -> int:
        """K, the number of components per draw."""
        return self.model.num_components

    @property
    def batch_shape(self) -> tuple[int]:
        return (self.num_inputs,)

    @property
    def event_shape(self) -> tuple[int]:
        return (self.num_outputs,)

    def __repr__(self) -> str:
        return (
            f"PredictiveMixture(inputs={self.num_inputs}, outputs={self.num_outputs}, "
            f"draws={self.num_draws}, components={self.num_components})"
        )

    def __len__(self) -> int:
        return self.num_inputs

    def __getitem__(self, index: Any) -> PredictiveMixture:
        """The predictive at a subset of the inputs (int, slice, or integer/boolean array).

        An integer keeps the batch axis: ``pred[3]`` has batch shape (1,).
        """
        if isinstance(index, (int, np.integer)):
            if not -self.num_inputs <= index < self.num_inputs:
                raise IndexError(f"Input index {index} is out of range for {self.num_inputs} "
                                 "inputs.")
            index = [int(index)]
        try:
            subset = self.X_std[index]
        except IndexError as error:
            raise IndexError(f"Invalid input index {index!r}: {error}") from None
        if subset.ndim != 2 or subset.shape[0] == 0:
            raise IndexError(f"Index {index!r} selects no inputs; select at least one.")
        return dataclasses.replace(self, X_std=subset)

    # ----------------------------------------------------------------------- helpers
    def _scalers(self) -> tuple[jax.Array, jax.Array]:
        return to_compute(self.standardizer.y_shift), to_compute(self.standardizer.y_scale)

    # Kernels work in standardised units of y; these convert on the host, in float64.
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(y_shift, y_scale), each (D,) float64."""
        return (np.asarray(self.standardizer.y_shift, np.float64),
                np.asarray(self.standardizer.y_scale, np.float64))

    def _to_standardised(self, values: Any) -> np.ndarray:
        """Values in original units, (..., D) (or any shape when D = 1, e.g. a grid (M, G)),
        to standardised units in the compute dtype; the affine map runs in float64 first."""
        shift, scale = self._affine()
        return ((np.asarray(values, np.float64) - shift) / scale).astype(self.X_std.dtype)

    def _to_original(self, values: Any) -> np.ndarray:
        """Standardised locations (..., D) (any shape when D = 1) to original units, float64."""
        shift, scale = self._affine()
        return np.asarray(values, np.float64) * scale + shift

    def _log_scale(self) -> float:
        """``sum(log y_scale)``: subtract from a standardised log-density, add to an entropy."""
        return float(np.sum(np.log(self._affine()[1])))

    def _per_draw(self, extra: int = 1) -> int:
        """Values per (input, draw) in a query's largest array: K x D x `extra` terms, or the
        widest layer of the network (hidden layers and a feature network's own layers;
        :func:`~._evaluator.network_width`) where that is larger."""
        width = network_width(self.model, self.draws, int(self.X_std.shape[1]),
                              self.num_outputs)
        return max(self.num_components * self.num_outputs * extra, width)

    def _chunk_plan(self, extra: int = 1, per_input: int = 0) -> tuple[int, int]:
        """(input_chunk, draw_chunk) of the input-major layout for a query whose terms per
        (input, draw) are K x D x `extra`, plus `per_input` terms per input that do not
        scale with draws."""
        return _chunk_sizes(self.num_inputs, self.num_draws, self._per_draw(extra),
                            self.max_elements, per_input)

    def _plan(self, extra: int = 1, per_input: int = 0) -> tuple[str, int, int]:
        """(layout, input_chunk, draw_chunk), the layout chosen from the shapes
        (:func:`~._evaluator.plan_chunks`)."""
        return plan_chunks(self.num_inputs, self.num_draws, self._per_draw(extra),
                           self.max_elements, per_input=per_input)

    def _reduce(self, input_kernel, draw_kernel, row_arrays=(), *, extra: int = 1,
                static=()):
        """Run a reduction over the draws in the layout :meth:`_plan` chooses: `draw_kernel`
        (draw-major, :mod:`._reductions`) or `input_kernel` (input-major)."""
        layout, input_chunk, draw_chunk = self._plan(extra)
        kernel = draw_kernel if layout == "draw" else input_kernel
        return self._run(kernel, row_arrays, static=static, plan=(input_chunk, draw_chunk))

    def _run(self, kernel, row_arrays=(), *, extra: int = 1, per_input: int = 0,
             batch_axis: int = 0, static=(), trailing=(), key=None, plan=None):
        """Call ``kernel(model, draw_chunk, *static, draws, y_shift, y_scale, X, *rows,
        *trailing[, key, start])`` input chunk by input chunk, where `start` is the chunk's
        first input index. A `plan` of (input_chunk, None) calls the kernel without a draw
        chunk (all draws at once)."""
        input_chunk, draw_chunk = plan or self._chunk_plan(extra, per_input)
        head = () if draw_chunk is None else (draw_chunk,)
        y_shift, y_scale = self._scalers()
        draws = jax.device_put(dict(self.draws))  # once per query, not once per chunk

        def call(X_chunk, *rest):
            *chunk_rows, index = rest
            key_args = () if key is None else (key, index * input_chunk)
            return kernel(self.model, *head, *static, draws, y_shift, y_scale, X_chunk,
                          *chunk_rows, *trailing, *key_args)

        return _map_chunks(call, (self.X_std, *row_arrays), input_chunk, batch_axis=batch_axis)

    def _targets(self, y: Any) -> np.ndarray:
        """Validated targets (M, D), standardised, in the compute dtype."""
        values = as_targets(y, "y", num_outputs=self.num_outputs)
        if values.shape[0] != self.num_inputs:
            raise ValueError(
                f"`y` must have one row per input ({self.num_inputs}); got {values.shape[0]} rows."
            )
        return self._to_standardised(values)

    def _require_one_output(self, query: str, advice: str) -> None:
        if self.num_outputs != 1:
            raise ValueError(f"{query} is defined for one output (D = 1); this model has D = "
                             f"{self.num_outputs}. {advice}")

    def _support_grid(self, grid_size: int, points_per_iqr: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-input range (M,) holding all but a negligible tail of every draw (D = 1), in
        standardised units (float64).

        Also returns, per input, the grid size that `grid_size` points fall short of (0 where
        they suffice): the grid must put `points_per_iqr` points across the interquartile
        range of every heavy component (weight >= 1e-3 within its draw), or it would miss
        or smear that component.
        """
        # Four component quantiles per (input, draw, component): extra = 4.
        lower, upper, narrowest = (value[:, 0].astype(np.float64)
                                   for value in self._run(_support_kernel, extra=4))
        with np.errstate(divide="ignore"):  # no heavy component (K > 1000): no requirement
            needed = np.ceil((upper - lower) * points_per_iqr / narrowest) + 1
        return lower, upper, np.where(needed > grid_size, needed, 0).astype(np.int64)

    @staticmethod
    def _warn_coarse(query: str, grid_size: int, needed: np.ndarray) -> None:
        coarse = needed > 0
        if np.any(coarse):
            warnings.warn(
                f"{query}: a {grid_size}-point grid is too coarse to resolve the narrowest "
                f"heavy component at {int(coarse.sum())} of {coarse.size} inputs; results "
                f"there may be inaccurate. Pass grid_size={int(needed.max())} or more.",
                UserWarning, stacklevel=3,
            )

    # Discrete families (D = 1): grids are the integers of a range per input.
    def _integer_support(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-input integer range [lower, upper] (M,) holding all but a negligible tail of
        every draw (the same tail cut as :meth:`_support_grid`), in original units.

        Discrete families do not standardise y, so these integers are also the kernels'
        units (the integer entropy grid is built inside the kernel)."""
        lower, upper, _ = (self._to_original(value[:, 0])
                           for value in self._run(_support_kernel, extra=4))
        lower = np.maximum(np.floor(lower), self.model.family.support[0])
        return lower, np.maximum(np.ceil(upper), lower)

    def _integer_blocks(self, query: str, lower: np.ndarray, upper: np.ndarray):
        """Yield (part, grid) over blocks of inputs: `grid` (m, G) holds the integers
        ``lower_i, lower_i + 1, ...`` (at least up to ``upper_i``) and block x G stays within
        ``max_elements``."""
        size = int(np.max(upper - lower)) + 1
        if size > self.max_elements:
            raise ValueError(
                f"{query}: the predictive of this discrete family spreads over {size} integers "
                f"at some inputs, more than max_elements={self.max_elements} can evaluate at "
                f"once. Pass max_elements={size} or more to Posterior.predictive()."
            )
        block = max(1, self.max_elements // size)
        for start in range(0, self.num_inputs, block):
            part = self if block >= self.num_inputs else self[start:start + block]
            yield part, lower[start:start + block, None] + np.arange(size, dtype=np.float64)

    # ----------------------------------------------------------------------- queries
    def log_prob(self, y: Any) -> np.ndarray:
        """Log posterior-predictive density at `y`, in original units.

        Parameters
        ----------
        y : array-like, shape (M,) or (M, D)

        Returns
        -------
        numpy.ndarray, shape (M,), float64
        """
        log_density = self._reduce(_log_prob_kernel, _reductions.log_prob_kernel,
                                   (self._targets(y),))
        return log_density.astype(np.float64) - self._log_scale()

    def cdf(self, y: Any) -> np.ndarray:
        """Marginal cdf of each output dimension at `y`.

        Parameters
        ----------
        y : array-like, shape (M,) or (M, D)

        Returns
        -------
        numpy.ndarray, shape (M, D)
        """
        return self._reduce(_cdf_kernel, _reductions.cdf_kernel, (self._targets(y),))

    def crps(self, y: Any, *, method: str = "auto", key: jax.Array | None = None,
             num_samples: int = 1000, grid_size: int | None = None) -> np.ndarray:
        """Continuous ranked probability score of each output's marginal at `y`, per input.

        ``CRPS(F, y) = integral (F(z) - 1{y <= z})**2 dz = E|X - y| - 1/2 E|X - X'|`` with
        X, X' independent draws from the marginal predictive F. It is strictly proper, in
        the units of y, and equals the absolute error for a point prediction (lower is
        better). :func:`bayes_mdn.metrics.crps` averages it over the inputs.

        Methods:

        * ``"closed_form"`` (families declaring ``closed_form_crps``: Normal components):
          exact, using ``E|N(m, s**2)| = s sqrt(2/pi) exp(-m**2 / (2 s**2)) + m (1 - 2
          Phi(-m/s))`` for the S * K terms of ``E|X - y|`` and the (S * K)**2 pairs of
          ``E|X - X'|``; the pairs are visited in chunks, so memory stays within
          ``max_elements``, but the cost grows as (S * K)**2 per input.
        * ``"quadrature"`` (the same families): ``E|X - y|`` exact, and ``1/2 E|X - X'| =
          integral F(z) (1 - F(z)) dz`` by the trapezoid rule on a grid covering all but
          about 1e-6 of every significant component's mass; cost ``grid_size * S * K`` per
          input. The integrand is smooth, so the rule converges geometrically: with 1.5
          grid points per interquartile range of the narrowest heavy component (weight >=
          1e-3 within its draw) the error is about 1e-7 of the scale of the components. By
          default each input gets the smallest power-of-two grid (128 to 8192 points) that
          meets this; a UserWarning says when an input needs more.
        * ``"sample"`` (any family; needs `key`): the unbiased estimator ``mean_i |x_i - y|
          - 1/2 mean_{i != j} |x_i - x_j|`` from `num_samples` predictive samples per
          input, using all sample pairs (from the sorted sample). Its standard error shrinks
          as ``1 / sqrt(num_samples)``.
        * ``"auto"``: with a closed form, ``"closed_form"`` when S * K <= 64; above that,
          per input, the quadrature unless its grid would cost more than the closed form's
          pairs (grid points >= 2 S * K), which is then used instead. ``"sample"`` for
          every other family (discrete ones included).

        Parameters
        ----------
        y : array-like, shape (M,) or (M, D)
            Targets in original units, one row per input.
        method : {"auto", "closed_form", "quadrature", "sample"}
        key : PRNG key, optional
            Required by ``"sample"`` (and so by ``"auto"`` without a closed form); checked
            but unused otherwise.
        num_samples : int
            Samples per input for ``"sample"`` (at least 2).
        grid_size : int, optional
            Quadrature points per input and output for ``"quadrature"`` (at least 16);
            default chosen per input as described above.

        Returns
        -------
        numpy.ndarray, shape (M, D), float64
            Never negative, never NaN; in the units of y.

        Raises
        ------
        ValueError
            For ``"closed_form"`` or ``"quadrature"`` with a family that has no closed
            form, or bad `y`, `num_samples` or `grid_size`.
        TypeError
            Without `key` where sampling is needed, or with a key that is not a PRNG key.
        """
        method = check_choice(method, "method", _crps.METHODS)
        num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
        if grid_size is not None:
            grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        if key is not None:
            key = check_key(key)
        # The kernels work in standardised units of y; the CRPS scales with y_scale.
        scores = _crps.crps_scores(self, self._targets(y), method, key, num_samples, grid_size)
        return scores.astype(np.float64) * np.asarray(self.standardizer.y_scale, np.float64)

    def mean(self) -> np.ndarray:
        """Predictive mean, a float64 numpy.ndarray of shape (M, D)."""
        self.model.family.check_moments(1)
        layout, input_chunk, draw_chunk = self._plan()
        if layout == "draw":
            mean = self._run(_reductions.mean_kernel, plan=(input_chunk, draw_chunk))
        else:
            mean = self._run(_moments_kernel, plan=(input_chunk, draw_chunk))[0]
        return self._to_original(mean)

    def variance(self) -> np.ndarray:
        """Predictive marginal variance (aleatoric + epistemic), a float64 numpy.ndarray
        (M, D)."""
        self.model.family.check_moments(2)
        aleatoric, epistemic = self._variance_split()
        return (aleatoric + epistemic) * np.square(self._affine()[1])

    def _variance_split(self) -> tuple[np.ndarray, np.ndarray]:
        """(aleatoric, epistemic), each (M, D) float64, in standardised units."""
        layout, input_chunk, draw_chunk = self._plan()
        if layout == "draw":
            _, aleatoric, epistemic = self._run(_reductions.moments_kernel,
                                                plan=(input_chunk, draw_chunk))
        else:
            aleatoric, epistemic = self._run(_variance_split_kernel,
                                             plan=(input_chunk, draw_chunk))
        return aleatoric.astype(np.float64), epistemic.astype(np.float64)

    def variance_decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        """Split the predictive variance by the law of total variance over posterior draws.

        Returns
        -------
        aleatoric : numpy.ndarray, shape (M, D), float64
            ``E_s[Var(y | x, theta_s)]``: noise the model expects even with known weights.
        epistemic : numpy.ndarray, shape (M, D), float64
            ``Var_s[E(y | x, theta_s)]``: disagreement between draws; zero for MAP.
            ``aleatoric + epistemic`` equals :meth:`variance`.
        """
        self.model.family.check_moments(2)
        squared_scale = np.square(self._affine()[1])
        aleatoric, epistemic = self._variance_split()
        return aleatoric * squared_scale, epistemic * squared_scale

    def quantiles(self, q: Any, *, num_iterations: int | None = None) -> np.ndarray:
        """Marginal quantiles, solving ``cdf(x) = q`` for all levels at once (monotone in `q`).

        Each input's S x K mixture is evaluated once per chunk of inputs (when it fits the
        ``max_elements`` budget; otherwise the network is re-run per step) and Chandrupatla's
        bracketed root-finder (inverse quadratic interpolation safeguarded by bisection)
        solves every level. With 192 draws or more (D = 1, continuous family) each level
        starts from the quantiles of two mixtures of 32 of the draws and the full cdf
        brackets it within a step or two of that estimate: about 5 full cdf evaluations per
        level instead of 40 bisection steps. Otherwise the bracket starts at the extreme
        component quantiles. Either bracket never loses the root.

        Tolerance: in standardised units of y (``(y - shift) / scale``) a result stops once
        its bracket is narrower than ``2 eps |x| + 5e-7`` (eps of the compute dtype), i.e.
        about ``(2.4e-7 |x| + 5e-7) * y_scale`` in original units in float32; where the
        mixture density is f, ``|cdf(quantile(q)) - q|`` is then at most about f times that
        plus the float32 rounding of the S x K-term cdf sum (~1e-6). For a discrete family
        the result is the smallest integer k with ``cdf(k) >= q`` (integer bisection).

        Parameters
        ----------
        q : float or array-like, shape (Q,)
            Probabilities strictly between 0 and 1.
        num_iterations : int, optional
            Cap on root-finder steps (Chandrupatla's, or bisection's) per level; the default,
            64 (40 in float32), is never reached by a continuous mixture. Fewer steps stop early
            with the current best estimate.

        Returns
        -------
        numpy.ndarray, shape (Q, M, D), float64
        """
        levels = check_levels(q)
        if num_iterations is not None:
            num_iterations = check_positive_int(num_iterations, "num_iterations")
        return self._to_original(self._standardised_quantiles(levels, num_iterations))

    def _standardised_quantiles(self, levels: np.ndarray, num_iterations: int | None = None
                                ) -> np.ndarray:
        """Quantiles (Q, M, D) at validated float64 `levels`, in standardised units."""
        if num_iterations is None:
            num_iterations = 64 if to_compute(0.0).dtype == np.float64 else 40
        input_chunk, draw_chunk = self._chunk_plan(levels.size)
        # Keep every draw chunk's mixture for the bisection steps when that fits the budget
        # too; otherwise the network is re-run per step (compute instead of memory).
        padded_draws = _num_chunks(self.num_draws, draw_chunk) * draw_chunk
        widths = sum(self.model.family.head_dims(self.num_outputs).values())
        cached = (draw_chunk == self.num_draws
                  or input_chunk * padded_draws * self.num_components * (1 + widths)
                  <= self.max_elements)
        values = self._run(_quantiles.quantile_kernel, batch_axis=1,
                           static=(num_iterations, cached), trailing=(to_compute(levels),),
                           plan=(input_chunk, draw_chunk))
        # Monotone in q: each level's estimate is within the tolerance of its true quantile,
        # and so is the running maximum over the levels in increasing order.
        order = np.argsort(levels, kind="stable")
        values[order] = np.maximum.accumulate(values[order], axis=0)
        return values

    def sample(self, key: jax.Array, num_samples: int = 1) -> np.ndarray:
        """Draw from the posterior predictive.

        The samples depend only on `key` and each input's position, not on how the query
        is chunked (``max_elements``).

        Parameters
        ----------
        key : PRNG key
        num_samples : int
            Samples per input.

        Returns
        -------
        numpy.ndarray, shape (num_samples, M, D), float64
        """
        key = check_key(key)
        num_samples = check_positive_int(num_samples, "num_samples")
        return self._to_original(self._run(_sample_kernel, batch_axis=1, static=(num_samples,),
                                           key=key, per_input=num_samples * self.num_components))

    def modes(self, *, grid_size: int = 512, min_relative_density: float = 1e-3
              ) -> list[np.ndarray]:
        """Local maxima of the predictive density (D = 1), highest first.

        The density is evaluated on a grid spanning the 0.0005-0.9995 quantiles, local maxima
        are found on it and refined by parabolic interpolation of the log-density. For a
        discrete family the probability mass is evaluated at every integer of that range and
        the modes are integers k with ``p(k - 1) < p(k) >= p(k + 1)``.

        Parameters
        ----------
        grid_size : int
            Grid points per input; modes closer than the spacing may merge. Unused by
            discrete families (every integer is a grid point).
        min_relative_density : float
            Drop maxima whose density is below this fraction of the highest one (numerical
            ripples between heavily overlapping components).

        Returns
        -------
        list of numpy.ndarray
            One array of shape (num_modes_i, 1) per input, sorted by density, descending.
        """
        if self.num_outputs != 1:
            raise ValueError(
                f"modes() is defined here for one output (D = 1); this model has D = "
                f"{self.num_outputs}. Query each output's marginal via quantiles() instead."
            )
        grid_size = check_positive_int(grid_size, "grid_size", minimum=3)
        levels = np.array([5e-4, 1 - 5e-4])
        if self.model.family.discrete:
            bounds = self.quantiles(levels)[:, :, 0]  # (2, M)
            modes: list[np.ndarray] = []
            lower = np.maximum(bounds[0], self.model.family.support[0])
            for part, grid in self._integer_blocks("modes()", lower, bounds[1]):
                log_mass = part.log_prob_grid(grid)
                modes.extend(modes_on_grid(grid, log_mass, discrete=True,
                                           min_relative_density=min_relative_density))
            return modes
        # Grid, density and refinement in standardised units; the modes are mapped back.
        bounds = self._standardised_quantiles(levels)[:, :, 0].astype(np.float64)  # (2, M)
        fractions = np.linspace(0.0, 1.0, grid_size)
        grid = (bounds[0][:, None] + (bounds[1] - bounds[0])[:, None] * fractions).astype(
            self.X_std.dtype)  # (M, G)
        log_density = self._reduce(_log_prob_grid_kernel, _reductions.log_prob_grid_kernel,
                                   (grid,), extra=grid_size)
        return [self._to_original(mode) for mode in modes_on_grid(
            grid.astype(np.float64), log_density.astype(np.float64),
            min_relative_density=min_relative_density)]

    def hdr(self, level: float, *, grid_size: int = 2048) -> list[np.ndarray]:
        """Highest-density region (D = 1): the smallest set holding probability `level`.

        For each input the region is ``{y : p(y | x) >= c}`` with c chosen so that it holds
        mass `level`; a multimodal predictive gives a union of disjoint intervals. The
        density is evaluated on a grid covering all but about 1e-6 of the mass of every
        draw; c is solved exactly for the piecewise-linear interpolant of the density
        (normalised to the grid's mass), and interval ends are where that interpolant
        crosses c, so every end has density c up to the interpolation error.

        Parameters
        ----------
        level : float
            Probability mass strictly between 0 and 1, e.g. 0.9.
        grid_size : int
            Grid points per input (at least 16). A UserWarning says when the grid is too
            coarse for the narrowest heavy component; the mass error shrinks as
            ``1 / grid_size**2``.

        Returns
        -------
        list of numpy.ndarray
            One float64 array of shape (num_intervals_i, 2) per input: rows of
            ``[lower, upper]`` in increasing order. For a discrete family the region is the
            smallest set of integers with mass >= `level` (highest probabilities first), and
            each row is an inclusive run of integers ``lower, lower + 1, ..., upper``;
            `grid_size` is then unused (every integer of the support range is evaluated).

        Examples
        --------
        >>> import numpy as np
        >>> import bayes_mdn as bm
        >>> from bayes_mdn.scaling import Standardizer
        >>> draws = {"logits.kernel": np.zeros((1, 1, 1)), "logits.bias": np.zeros((1, 1)),
        ...          "loc.kernel": np.zeros((1, 1, 1)), "loc.bias": np.zeros((1, 1)),
        ...          "scale.kernel": np.zeros((1, 1, 1)), "scale.bias": np.full((1, 1), 3.0)}
        >>> model = bm.MDN(num_components=1, hidden_sizes=(),
        ...                family=bm.families.Normal(min_scale=0.0))
        >>> identity = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
        >>> pred = bm.PredictiveMixture(model, draws, identity, np.zeros((1, 1), np.float32))
        >>> [region] = pred.hdr(0.95)  # N(0, softplus(3)): about 0 +- 1.96 * 3.049
        >>> np.round(region / np.log1p(np.exp(3.0)), 2)
        array([[-1.96,  1.96]])
        """
        level = _check_level(level)
        self._require_one_output("hdr()", "Use quantiles() for per-output central intervals.")
        grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
        if self.model.family.discrete:
            regions: list[np.ndarray] = []
            for part, grid in self._integer_blocks("hdr()", *self._integer_support()):
                log_mass = part._reduce(_log_prob_grid_kernel,
                                        _reductions.log_prob_grid_kernel,
                                        (part._to_standardised(grid),), extra=grid.shape[1])
                regions.extend(hdr_on_grid(grid, np.exp(log_mass.astype(np.float64)), level,
                                           discrete=True))
            return regions
        # Host blocks bound the (inputs, grid) arrays the interval search holds.
        block = max(1, self.max_elements // grid_size)
        fractions = np.linspace(0.0, 1.0, grid_size)
        regions: list[np.ndarray] = []
        needed = []
        for start in range(0, self.num_inputs, block):
            part = self if block >= self.num_inputs else self[start:start + block]
            # Grid and intervals in standardised units (densities O(1)); ends mapped back.
            lower, upper, part_needed = part._support_grid(grid_size, 8.0)
            needed.append(part_needed)
            grid = (lower[:, None] + (upper - lower)[:, None] * fractions).astype(
                self.X_std.dtype)
            log_density = part._reduce(
                _log_prob_grid_kernel, _reductions.log_prob_grid_kernel, (grid,), extra=grid_size)
            regions.extend(self._to_original(region) for region in hdr_on_grid(
                grid.astype(np.float64), np.exp(log_density.astype(np.float64)), level))
        self._warn_coarse("hdr()", grid_size, np.concatenate(needed))
        return regions

    def entropy_decomposition(
        self,
        *,
        key: jax.Array | None = None,
        method: str = "auto",
        grid_size: int = 1024,
        num_samples: int = 1000,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split the predictive entropy into expected entropy and mutual information.

        ``H[p(y | x)] = E_s H[p(y | x, theta_s)] + I(y; theta | x)``: the first term is the
        aleatoric part (what each draw is unsure of), the mutual information the epistemic
        part (disagreement between draws; zero for one draw, and >= 0). Entropies are
        differential, in nats, in the original units of y.

        Two estimators:

        * ``"quadrature"`` (D = 1, the default there): deterministic trapezoid rule for
          ``-p log p`` of the mixture and of every draw on a ``grid_size``-point grid that
          covers all but about 1e-6 of every draw's mass. Accurate once the grid resolves the
          narrowest component (a UserWarning says when it does not).
        * ``"monte_carlo"`` (the default for D > 1; needs `key`): with ``num_samples`` pairs
          (s, y), s uniform over draws and y ~ p(y | x, theta_s), the total entropy is
          estimated by ``mean(-log p(y | x))``, the expected entropy by
          ``mean(-log p(y | x, theta_s))`` and the mutual information by their difference
          ``mean(log p(y | x, theta_s) - log p(y | x))`` on the same samples. Each is
          unbiased; the mutual information estimate is *not* clamped, so it can be slightly
          negative when the true value is near 0 (its standard error shrinks as
          ``1 / sqrt(num_samples)``), and it never exceeds log S.

        For a discrete family the entropies are Shannon entropies of the probability masses
        (in nats, >= 0) and ``"quadrature"`` sums ``-p log p`` exactly over every integer of
        the support range (`grid_size` unused).

        Parameters
        ----------
        key : PRNG key, optional
            Required by ``"monte_carlo"``; checked but unused by ``"quadrature"``.
        method : {"auto", "quadrature", "monte_carlo"}
            ``"auto"`` is quadrature for D = 1 and Monte Carlo otherwise.
        grid_size : int
            Quadrature points per input (at least 16).
        num_samples : int
            Monte Carlo samples per input (at least 2).

        Returns
        -------
        total : numpy.ndarray, shape (M,), float64
            Predictive entropy ``H[p(y | x)]``.
        expected : numpy.ndarray, shape (M,), float64
            ``E_s H[p(y | x, theta_s)]``.
        mutual_information : numpy.ndarray, shape (M,), float64
            ``total - expected`` (independent of the units of y).
        """
        method = check_choice(method, "method", ("auto", "quadrature", "monte_carlo"))
        if key is not None:
            key = check_key(key)
        if method == "auto":
            method = "quadrature" if self.num_outputs == 1 else "monte_carlo"
        if method == "quadrature":
            self._require_one_output("method='quadrature'",
                                     "Use method='monte_carlo' with key=jax.random.key(0).")
            grid_size = check_positive_int(grid_size, "grid_size", minimum=16)
            if self.model.family.discrete:
                # Integers in original units, which are the kernels' units here (y is not
                # standardised for discrete families).
                lower, upper = self._integer_support()
                size = int(np.max(upper - lower)) + 1
                next(self._integer_blocks("entropy_decomposition()", lower, upper))  # size check
                size = 1 << (size - 1).bit_length()  # a power of two: fewer recompilations
                bounds = (lower.astype(self.X_std.dtype), upper.astype(self.X_std.dtype))
                total, expected = self._reduce(
                    _entropy_grid_kernel, _reductions.entropy_grid_kernel, bounds, extra=size,
                    static=(size,))
            else:
                # The trapezoid rule is spectrally accurate here: one point per interquartile
                # range already gets a Normal's entropy to ~1e-5. Standardised units.
                lower, upper, needed = self._support_grid(grid_size, 1.0)
                self._warn_coarse("entropy_decomposition()", grid_size, needed)
                bounds = (lower.astype(self.X_std.dtype), upper.astype(self.X_std.dtype))
                total, expected = self._reduce(
                    _entropy_grid_kernel, _reductions.entropy_grid_kernel, bounds,
                    extra=grid_size, static=(grid_size,))
        else:
            if key is None:
                raise TypeError(
                    f"entropy_decomposition() estimates by Monte Carlo here (D = "
                    f"{self.num_outputs}) and needs `key`, e.g. key=jax.random.key(0)."
                )
            num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
            total, expected = self._run(_entropy_mc_kernel, static=(num_samples,), key=key,
                                        extra=num_samples,
                                        per_input=num_samples * self.num_components)
        # Standardised entropies to original units: H[y] = H[y_std] + sum(log y_scale).
        total, expected = total.astype(np.float64), expected.astype(np.float64)
        log_scale = self._log_scale()
        return total + log_scale, expected + log_scale, total - expected

    def log_prob_grid(self, grid: Any) -> np.ndarray:
        """Log-density on a grid of y values per input (D = 1), e.g. for plotting.

        For a discrete family this is the log probability mass: -inf at non-integers.

        Parameters
        ----------
        grid : array-like, shape (G,) or (M, G)
            y values; a 1-D grid is shared by all inputs.

        Returns
        -------
        numpy.ndarray, shape (M, G), float64
        """
        if self.num_outputs != 1:
            raise ValueError(f"log_prob_grid() needs one output (D = 1); this model has D = "
                             f"{self.num_outputs}. Use log_prob() with (M, D) points instead.")
        values = np.asarray(grid, dtype=np.float64)
        if values.ndim == 1:
            values = np.broadcast_to(values, (self.num_inputs, values.shape[0]))
        if values.ndim != 2 or values.shape[0] != self.num_inputs or values.shape[1] == 0:
            raise ValueError(f"`grid` must have shape (G,) or ({self.num_inputs}, G); got "
                             f"{np.shape(grid)}.")
        if not np.isfinite(values).all():
            raise ValueError("`grid` must hold finite values only.")
        log_density = self._reduce(_log_prob_grid_kernel, _reductions.log_prob_grid_kernel,
                                   (self._to_standardised(values),), extra=values.shape[1])
        return log_density.astype(np.float64) - self._log_scale()

    def reduce(self, num_components: int = 30, *, num_iterations: int = 20
               ) -> PredictiveMixture:
        """Compress each input's S x K mixture into `num_components` Normal components.

        The components are grouped (Goldberger & Roweis 2005: assignment by the KL
        divergence to the group, then each group merged into the Normal with its weight,
        mean and variance; `num_iterations` rounds) starting from groups of equal mass along
        the sorted locations. The mixture's mean and variance are preserved exactly (to
        float rounding) at every input; the loss in log score and CRPS is measured in
        benchmarks/predictive_speed.py (seed NUTS predictive, K' = 5, 10, 20).

        The result is a :class:`PredictiveMixture` with one draw (S = 1) and K' components
        whose inputs are the merged parameters themselves (3 K' numbers per input: log-weight,
        location, scale; 90 for the default K' = 30), so every query works on it and it can
        be stored as an (M, 3 K') array (``reduced.X_std``).

        Parameters
        ----------
        num_components : int
            K', the components per input after merging.
        num_iterations : int
            Rounds of assignment and merging.

        Returns
        -------
        PredictiveMixture
            Batch shape (M,), event shape (1,), S = 1, K = `num_components`.

        Raises
        ------
        ValueError
            For a family other than Normal (the moment-matched merge of, e.g., Student-t or
            count components is not a component of the same family) or D > 1 (a merge of
            diagonal Normals loses the cross-covariance).
        """
        from bayes_mdn.families import Normal

        num_components = check_positive_int(num_components, "num_components")
        num_iterations = check_positive_int(num_iterations, "num_iterations")
        if not isinstance(self.model.family, Normal):
            raise ValueError(
                f"reduce() merges Normal components; this model's family is "
                f"{type(self.model.family).__name__}. Query the full predictive instead, or "
                "fit a model with family='normal'."
            )
        self._require_one_output("reduce()", "Reduce each output's marginal separately by "
                                 "fitting one model per output.")
        input_chunk = self._reduce_chunk(num_components)
        log_weight, loc, scale = (np.asarray(value, np.float64) for value in self._run(
            _compress.compress_kernel, static=(num_components, num_iterations),
            plan=(input_chunk, None)))
        raw_scale = inverse_softplus(np.maximum(scale, 1e-30))
        return _merged_mixture(log_weight, loc, raw_scale, self.standardizer,
                               self.X_std.dtype, self.max_elements)

    def _reduce_chunk(self, num_components: int) -> int:
        """Inputs per call of :meth:`reduce`: each input holds its whole S x K mixture, and
        the merge's (S K, K') assignment arrays (one-hot groups, KL costs) are the largest,
        so S x max(K x K', widest layer) values per input count against ``max_elements``."""
        per_input = self.num_draws * max(self.num_components * num_components,
                                         self._per_draw())
        return whole_mixture_chunk(self.num_inputs, per_input, self.max_elements)

    def mixture_parameters(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The flattened S x K mixture at every input, in original units.

        Memory is M x S x K per parameter: select inputs first, e.g.
        ``pred[[0, 5]].mixture_parameters()``.

        Returns
        -------
        log_weights : numpy.ndarray, shape (M, S * K)
            Log mixing weights including the 1/S draw weight; ``logsumexp`` over the last
            axis is 0.
        params : dict of str to numpy.ndarray
            Component parameters, each (M, S * K, d) float64, e.g. ``loc`` and ``scale``.
        """
        per_input = self.num_draws * self.num_components * self.num_outputs
        input_chunk = _chunk_sizes(self.num_inputs, 1, per_input, self.max_elements)[0]
        log_weights, params = self._run(_mixture_kernel, plan=(input_chunk, None))
        # The kernel returns standardised parameters; map them on the host, in float64.
        shift, scale = self._affine()
        params = self.model.family.to_original_units(
            {name: np.asarray(value, np.float64) for name, value in params.items()}, shift, scale)
        return log_weights, {name: np.asarray(value, np.float64) for name, value in params.items()}


