"""A scikit-learn estimator around :class:`~bayes_mdn.MDN`: ``MDNRegressor``.

Needs the ``sklearn`` extra (``pip install "bayes-mdn[sklearn]"``). The estimator follows
scikit-learn's conventions: the MDN specification and the fit options are constructor
parameters, stored unchanged (no work in ``__init__``) and validated in :meth:`fit`, so it
works with ``clone``, ``Pipeline``, ``ColumnTransformer``, ``GridSearchCV`` and
``cross_val_score``. :meth:`MDNRegressor.score` is the mean log predictive density (higher is
better), so a grid search picks by log score without a ``scoring`` argument;
:func:`log_score_scorer` is the same as an explicit scorer.

Shapes: a 1-D ``y`` (N,) gives 1-D predictions (N,), as scikit-learn expects; a 2-D ``y``
(N, D), D >= 1, fits a D-output MDN and gives (N, D) predictions (``predict_quantiles``
(N, Q, D), ``predict_interval`` (N, 2, D)).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError:  # pragma: no cover - exercised by a test that hides sklearn
    raise ImportError(
        "bayes_mdn.sklearn needs scikit-learn: pip install \"bayes-mdn[sklearn]\""
    ) from None

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, X, y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

import jax

from bayes_mdn import priors as _priors
from bayes_mdn._validation import check_choice
from bayes_mdn.inference import METHODS
from bayes_mdn.io import load
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import PredictiveMixture

__all__ = ["MDNRegressor", "log_score_scorer"]

POINTS = ("mean", "median", "mode")


def _check_numeric_columns(X: Any) -> None:
    """Refuse string / categorical columns with a hint, before any conversion or compile."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(X, "columns"):  # pandas DataFrame
        bad = [str(column) for column, dtype in zip(X.columns, dtypes, strict=True)
               if not (np.issubdtype(np.dtype(dtype), np.number)
                       if isinstance(dtype, np.dtype) else False)
               and str(dtype) not in ("bool", "boolean")
               and not str(dtype).startswith(("Int", "UInt", "Float"))]
        if bad:
            raise ValueError(
                f"`X` has non-numeric columns {bad}; MDNRegressor needs numbers. Encode them "
                "first, e.g. make_column_transformer((OneHotEncoder(), "
                f"{bad!r}), remainder='passthrough') in a Pipeline.")
        return
    kind = getattr(getattr(X, "dtype", None), "kind", None)
    if kind in ("U", "S"):
        raise ValueError("`X` holds strings; MDNRegressor needs numbers. Encode text columns "
                         "first, e.g. with OneHotEncoder in a ColumnTransformer.")


class MDNRegressor(RegressorMixin, BaseEstimator):
    """Bayesian Mixture Density Network regressor with the scikit-learn API.

    Parameters
    ----------
    num_components : int
        K, mixture components.
    hidden_sizes : tuple of int
        Hidden layer widths.
    activation : str
        Hidden activation, e.g. ``"tanh"`` or ``"relu"``.
    family : str or bayes_mdn.families.Family
        Component family, e.g. ``"normal"``.
    prior : None, str, Prior or dict
        Weight prior: None (``FanInNormal``), a prior name (``"fan_in_normal"``,
        ``"normal"``, ``"laplace"``, ``"student_t"``, ``"hierarchical"``), a
        :mod:`bayes_mdn.priors` object or a dict of site names to priors.
    prior_scale : float, optional
        Scale of the prior when `prior` is None or a name (e.g. ``FanInNormal(prior_scale)``);
        must be None when `prior` is an object or dict. Convenient to grid-search.
    method : str
        ``"map"``, ``"ensemble"``, ``"svi"``, ``"laplace"`` or ``"nuts"``.
    num_steps : int
        Optimisation steps (optimisation-based methods).
    num_members : int
        Ensemble members (``method="ensemble"`` only).
    learning_rate : float
        Adam step size (optimisation-based methods).
    fit_options : dict, optional
        Any other option of :meth:`bayes_mdn.MDN.fit` for `method`, e.g.
        ``{"num_chains": 4, "num_samples": 300}`` for NUTS.
    point : {"mean", "median", "mode"}
        What :meth:`predict` returns. ``"mode"`` (the highest mode) needs D = 1.
    max_elements : int, optional
        Memory budget of predictions (see :meth:`bayes_mdn.Posterior.predictive`).
    random_state : int, optional
        Seed of the JAX key ``jax.random.key(random_state)``; None means 0, so repeated fits
        are identical (JAX randomness is explicit; pass different seeds for different fits).

    Attributes
    ----------
    posterior_ : bayes_mdn.Posterior
        The fit.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
        Column names of a DataFrame `X` (only then).
    n_outputs_ : int
        D.

    Examples
    --------
    >>> from bayes_mdn.sklearn import MDNRegressor
    >>> from sklearn.model_selection import GridSearchCV
    >>> search = GridSearchCV(MDNRegressor(), {"num_components": [1, 3, 5]})  # doctest: +SKIP
    """

    def __init__(self, num_components: int = 5, hidden_sizes: tuple[int, ...] = (32, 32),
                 activation: str = "tanh", family: Any = "normal", prior: Any = None,
                 prior_scale: float | None = None, method: str = "ensemble",
                 num_steps: int = 2000, num_members: int = 5, learning_rate: float = 0.01,
                 fit_options: dict[str, Any] | None = None, point: str = "mean",
                 max_elements: int | None = None, random_state: int | None = None) -> None:
        self.num_components = num_components
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.family = family
        self.prior = prior
        self.prior_scale = prior_scale
        self.method = method
        self.num_steps = num_steps
        self.num_members = num_members
        self.learning_rate = learning_rate
        self.fit_options = fit_options
        self.point = point
        self.max_elements = max_elements
        self.random_state = random_state

    # ----------------------------------------------------------------------- tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # score() is a log density, not R^2: the "score > 0.5" check does not apply.
        tags.regressor_tags.poor_score = True
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"multioutput": True, "poor_score": True}

    # ----------------------------------------------------------------------- building
    def _build_model(self) -> MDN:
        prior = self.prior
        if self.prior_scale is not None:
            if prior is not None and not isinstance(prior, str):
                raise ValueError("`prior_scale` applies to prior=None or a prior name such as "
                                 f"'fan_in_normal'; got prior={prior!r}. Set the scale on the "
                                 "prior object instead.")
            name = "fan_in_normal" if prior is None else prior
            if name not in _priors._PRIORS or name in ("flat", "horseshoe"):
                raise ValueError(f"Unknown prior name {name!r} for `prior_scale`; choose one "
                                 "of 'fan_in_normal', 'normal', 'laplace', 'student_t', "
                                 "'hierarchical'.")
            prior = _priors._PRIORS[name](scale=float(self.prior_scale))
        elif isinstance(prior, str):
            if prior not in _priors._PRIORS:
                raise ValueError(f"Unknown prior name {prior!r}; choose one of "
                                 f"{sorted(_priors._PRIORS)}.")
            prior = _priors._PRIORS[prior]()
        return MDN(num_components=self.num_components, hidden_sizes=self.hidden_sizes,
                   activation=self.activation, family=self.family, prior=prior)

    def _fit_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.method in ("map", "ensemble", "svi", "laplace"):
            options.update(num_steps=self.num_steps, learning_rate=self.learning_rate)
        if self.method == "ensemble":
            options["num_members"] = self.num_members
        extra = self.fit_options or {}
        if not isinstance(extra, dict):
            raise TypeError(f"`fit_options` must be a dict of MDN.fit options; got "
                            f"{type(extra).__name__}.")
        options = {**options, **extra}
        # Checked here too (MDN.fit repeats it), so that a bad option fails before the key.
        options_type = METHODS[check_choice(self.method, "method", METHODS)][0]
        unknown = sorted(set(options) - set(options_type.__dataclass_fields__))
        if unknown:
            raise TypeError(f"fit(method={self.method!r}) got unknown options {unknown} (from "
                            f"`fit_options`); valid options are "
                            f"{sorted(options_type.__dataclass_fields__)}.")
        options_type(**options)
        return options

    def _key(self) -> jax.Array:
        seed = 0 if self.random_state is None else self.random_state
        if isinstance(seed, np.random.RandomState):  # e.g. from sklearn utilities
            seed = int(seed.randint(0, 2**31 - 1))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"`random_state` must be an int or None; got {seed!r}.")
        return jax.random.key(int(seed))

    # ----------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any) -> MDNRegressor:
        """Fit the MDN; the result is kept as ``posterior_``.

        Parameters
        ----------
        X : array-like or DataFrame, shape (N, P)
            Numeric features (encode strings first, e.g. with a ColumnTransformer).
        y : array-like, shape (N,) or (N, D)

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            Before anything is compiled: 1-D X, non-numeric columns, NaN or inf, fewer than
            2 rows, invalid parameters.
        """
        _check_numeric_columns(X)
        if self.point not in POINTS:
            raise ValueError(f"`point` must be one of {POINTS}; got {self.point!r}.")
        X_checked, y_checked = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                                              ensure_min_samples=2, dtype=[np.float64,
                                                                           np.float32])
        model = self._build_model()
        options = self._fit_options()
        key = self._key()
        y_checked = np.asarray(y_checked)
        self._y_1d = y_checked.ndim == 1
        self.n_outputs_ = 1 if self._y_1d else int(y_checked.shape[1])
        self.posterior_ = model.fit(X_checked, y_checked, key=key, method=self.method,
                                    **options)
        return self

    # ----------------------------------------------------------------------- prediction
    def _predictive(self, X: Any) -> PredictiveMixture:
        check_is_fitted(self, "posterior_")
        _check_numeric_columns(X)
        X_checked = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        options = {} if self.max_elements is None else {"max_elements": self.max_elements}
        return self.posterior_.predictive(X_checked, **options)

    def _shape(self, values: np.ndarray) -> np.ndarray:
        """(N, ..., D) -> (N, ...) for a 1-D y."""
        return values[..., 0] if self._y_1d else values

    def predict_dist(self, X: Any) -> PredictiveMixture:
        """The posterior predictive at `X`: a :class:`~bayes_mdn.PredictiveMixture`
        (log_prob, cdf, quantiles, modes, hdr, sample, ...), batch shape (N,)."""
        return self._predictive(X)

    def predict(self, X: Any) -> np.ndarray:
        """Point prediction per row (`point`: mean, median or highest mode).

        Returns
        -------
        numpy.ndarray, shape (N,) for a 1-D y, else (N, D)
        """
        pred = self._predictive(X)
        if self.point == "mean":
            values = pred.mean()
        elif self.point == "median":
            values = pred.quantiles(0.5)[0]
        else:
            if pred.num_outputs != 1:
                raise ValueError(f"point='mode' needs one output (D = 1); this fit has D = "
                                 f"{pred.num_outputs}. Use point='mean' or 'median'.")
            values = np.array([modes[0] for modes in pred.modes()])
        return self._shape(np.asarray(values, np.float64))

    def predict_quantiles(self, X: Any, q: Any = (0.05, 0.5, 0.95)) -> np.ndarray:
        """Predictive quantiles per row.

        Returns
        -------
        numpy.ndarray, shape (N, Q) for a 1-D y, else (N, Q, D)
        """
        values = self._predictive(X).quantiles(q)  # (Q, N, D)
        return self._shape(np.moveaxis(values, 0, 1))

    def predict_interval(self, X: Any, coverage: float = 0.9) -> np.ndarray:
        """Central predictive interval of probability `coverage` per row.

        Returns
        -------
        numpy.ndarray, shape (N, 2) (lower, upper) for a 1-D y, else (N, 2, D)
        """
        if (isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating))
                or not 0 < coverage < 1):
            raise ValueError(f"`coverage` must be a number strictly between 0 and 1, e.g. "
                             f"0.9; got {coverage!r}.")
        return self.predict_quantiles(X, [(1 - coverage) / 2, (1 + coverage) / 2])

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean log predictive density of (X, y) in nats per row (higher is better).

        Parameters
        ----------
        X : array-like, shape (N, P)
        y : array-like, shape (N,) or (N, D)
        sample_weight : array-like, shape (N,), optional
            Weights of the rows in the mean.
        """
        pred = self._predictive(X)
        values = pred.log_prob(np.asarray(y, np.float64))
        return float(np.average(values, weights=sample_weight))

    # ----------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # A Posterior holds read-only mappings that pickle refuses; carry its saved file
        # (arrays + JSON) instead, the project's one serialisation.
        state = dict(self.__dict__)
        posterior = state.pop("posterior_", None)
        if isinstance(posterior, Posterior):
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "posterior.bmdn"
                posterior.save(path)
                state["_posterior_file"] = path.read_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        data = state.pop("_posterior_file", None)
        self.__dict__.update(state)
        if data is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "posterior.bmdn"
                path.write_bytes(data)
                self.posterior_ = load(os.fspath(path))


def log_score_scorer(estimator: MDNRegressor, X: Any, y: Any) -> float:
    """Scorer for ``GridSearchCV(scoring=log_score_scorer)`` / ``cross_val_score``: the mean
    log predictive density (higher is better), i.e. ``estimator.score(X, y)``.

    Works for a Pipeline ending in an :class:`MDNRegressor` too.
    """
    return float(estimator.score(X, y))
