"""Input checks that run on the host, before anything is traced or compiled.

Every public entry point funnels user input through these helpers so that a bad
argument fails with a message that says what was wrong and how to fix it,
instead of a shape error from deep inside XLA.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DataWarning",
    "as_features",
    "as_targets",
    "check_choice",
    "check_column_names",
    "check_key",
    "check_min_rows",
    "check_not_constant",
    "check_positive_float",
    "check_positive_int",
    "check_same_rows",
    "column_names",
    "float_dtype",
    "warn_about_data",
]


def float_dtype() -> np.dtype:
    """The floating dtype JAX computes in: float64 when x64 is on, else float32."""
    return np.dtype(jnp.zeros((), dtype=float).dtype)


def _describe_rows(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (", ..." if rows.size > limit else "")


def _as_numeric_array(value: Any, name: str) -> np.ndarray:
    """Convert array-likes (NumPy, JAX, pandas, lists) to a real floating NumPy array."""
    if hasattr(value, "to_numpy") and callable(value.to_numpy):  # pandas DataFrame / Series
        value = value.to_numpy()
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise TypeError(
            f"`{name}` could not be converted to a numeric array ({error}). "
            "Pass a NumPy or JAX array of floats."
        ) from None
    if array.dtype == object or array.dtype.kind in "USV":
        raise TypeError(
            f"`{name}` must hold numbers; got an array of dtype {array.dtype}. "
            "Convert it with np.asarray(..., dtype=float) after cleaning non-numeric entries."
        )
    if array.dtype.kind == "c":
        raise TypeError(
            f"`{name}` must be real-valued; got complex dtype {array.dtype}. "
            "Pass the real part (x.real) or split real and imaginary parts into columns."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be a numeric array; got dtype {array.dtype}.")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.reshape(array.shape[0], -1).all(axis=1))
        num_nan = int(np.isnan(array).sum())
        num_inf = int(np.isinf(array).sum())
        raise ValueError(
            f"`{name}` contains {num_nan} NaN and {num_inf} infinite values in "
            f"{bad_rows.size} rows (rows {_describe_rows(bad_rows)}). "
            "Drop or impute those rows before fitting."
        )


def _finish_2d(array: np.ndarray, name: str, columns: tuple[str, str], expected: int | None,
               context: str, keep_float32: bool = False) -> np.ndarray:
    """Shared tail of as_features/as_targets: non-empty, right width, float64 (or float32
    with `keep_float32`), finite.

    `columns` names the columns when there are none and when their count is wrong.
    """
    if array.shape[0] == 0:
        raise ValueError(f"`{name}` has no rows (shape {array.shape}); pass at least one row.")
    if array.shape[1] == 0:
        raise ValueError(f"`{name}` has no {columns[0]} (shape {array.shape}); pass at least "
                         "one.")
    if expected is not None and array.shape[1] != expected:
        raise ValueError(
            f"`{name}` has {array.shape[1]} {columns[1]} but {context} {expected}; pass an array "
            f"of shape (M, {expected})."
        )
    if not (keep_float32 and array.dtype == np.float32):
        array = array.astype(np.float64, copy=False)
    _check_finite(array, name)
    return array


def as_features(X: Any, name: str = "X", *, num_features: int | None = None,
                keep_float32: bool = False) -> np.ndarray:
    """Validate inputs `X` and return them as a 2-D float64 NumPy array.

    Parameters
    ----------
    X : array-like, shape (N, P)
        Inputs. Must be 2-D, numeric, real and finite, with at least one row.
    name : str
        The argument name used in error messages.
    num_features : int, optional
        Required number of columns P (e.g. the number seen at fit time).
    keep_float32 : bool
        Return float32 input as it is (no float64 copy: 8 bytes a value for 10^7 rows is
        the largest allocation of a fit); for callers that only standardise it
        (:class:`~bayes_mdn.scaling.Standardizer` computes in float64 block by block).

    Returns
    -------
    numpy.ndarray, shape (N, P), float64 (or float32, see `keep_float32`)
        Kept in float64 so that standardisation loses no precision; the cast to the
        compute dtype happens after standardisation.
    """
    array = _as_numeric_array(X, name)
    if array.ndim != 2:
        hint = f" Use {name}.reshape(-1, 1) for a single feature." if array.ndim == 1 else ""
        raise ValueError(
            f"`{name}` must be a 2-D array of shape (N, P); got shape {array.shape}.{hint}"
        )
    return _finish_2d(array, name, ("columns", "features"), num_features,
                      "the model was fitted with", keep_float32)


def as_targets(y: Any, name: str = "y", *, num_outputs: int | None = None,
               keep_float32: bool = False) -> np.ndarray:
    """Validate targets `y` and return them as a 2-D float64 NumPy array.

    Parameters
    ----------
    y : array-like, shape (N,) or (N, D)
        Targets. A 1-D array is read as a single output (D = 1).
    name : str
        The argument name used in error messages.
    num_outputs : int, optional
        Required number of outputs D.
    keep_float32 : bool
        Return float32 input as it is; see :func:`as_features`.

    Returns
    -------
    numpy.ndarray, shape (N, D), float64 (or float32, see `keep_float32`)
    """
    array = _as_numeric_array(y, name)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (N,) or (N, D); got shape {array.shape}. "
            f"Reshape it with {name}.reshape(len({name}), -1)."
        )
    return _finish_2d(array, name, ("output columns", "output columns"), num_outputs,
                      "the model has", keep_float32)


def column_names(value: Any) -> list[str] | None:
    """Column names of a pandas DataFrame (or the name of a Series), else None.

    Used to remember feature and target names at fit time (``Posterior.info``) for labels,
    the command line, and the check that prediction-time columns match.
    """
    columns = getattr(value, "columns", None)
    if columns is not None and not isinstance(value, np.ndarray):
        return [str(column) for column in columns]
    if hasattr(value, "to_numpy") and getattr(value, "ndim", None) == 1:  # pandas Series
        name = getattr(value, "name", None)
        return None if name is None else [str(name)]
    return None


def check_column_names(value: Any, expected: Sequence[str] | None, name: str = "X") -> None:
    """Raise if a DataFrame's columns differ from the `expected` names seen at fit time.

    Plain arrays carry no names and are not checked (only their width is).
    """
    names = column_names(value)
    if names is None or expected is None or list(names) == list(expected):
        return
    expected = list(expected)
    hint = (f" Reorder them with {name}[{expected!r}]." if sorted(names) == sorted(expected)
            else "")
    raise ValueError(
        f"`{name}` has columns {names} but the model was fitted on columns {expected}.{hint}"
    )


def check_min_rows(X: np.ndarray, minimum: int = 2, name: str = "X") -> None:
    """Raise if there are fewer than `minimum` rows to fit on."""
    if X.shape[0] < minimum:
        raise ValueError(
            f"`{name}` has {X.shape[0]} row{'s' if X.shape[0] != 1 else ''}; fitting needs at "
            f"least {minimum} rows (the data are standardised with their mean and spread)."
        )


def check_not_constant(y: np.ndarray, name: str = "y") -> None:
    """Raise if an output column of `y` (N, D) takes a single value.

    A constant target has a point-mass conditional distribution: a mixture of densities can
    only approach it by shrinking every component to the scale floor, so the fitted
    "density" (and its log-likelihood) would reflect that floor, not the data.
    """
    constant = np.flatnonzero(y.max(axis=0) == y.min(axis=0))
    if constant.size:
        column = int(constant[0])
        where = "" if y.shape[1] == 1 else f" column {column}"
        raise ValueError(
            f"`{name}`{where} is constant (every row is {float(y[0, column])!r}): its "
            "conditional "
            "distribution is a point mass, which a mixture density cannot represent. Drop "
            "that output, or check that the right column was passed."
        )


def check_same_rows(X: np.ndarray, y: np.ndarray, x_name: str = "X", y_name: str = "y") -> None:
    """Raise if `X` and `y` disagree on the number of rows."""
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same number of rows; got "
            f"{X.shape[0]} and {y.shape[0]}."
        )


def check_key(key: Any, name: str = "key") -> jax.Array:
    """Validate a JAX PRNG key (new-style typed or legacy uint32 (2,))."""
    if key is None:
        raise TypeError(f"`{name}` is required: pass a JAX PRNG key such as jax.random.key(0).")
    if isinstance(key, (bool, int, np.integer)):
        raise TypeError(
            f"`{name}` must be a JAX PRNG key, not the integer {key!r}; "
            f"pass jax.random.key({int(key)})."
        )
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"`{name}` must be a single PRNG key; got a batch of shape {key.shape}. "
                "Pass one key, e.g. keys[0]."
            )
        return key
    array = np.asarray(key) if isinstance(key, (np.ndarray, jax.Array)) else None
    if array is not None and array.dtype == np.uint32 and array.shape == (2,):
        return jnp.asarray(key)  # legacy jax.random.PRNGKey
    raise TypeError(
        f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got {type(key).__name__}."
    )


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Validate a string option against its allowed values (case-insensitive)."""
    options: Sequence[str] = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string, one of {list(options)}; got {value!r}.")
    lowered = value.lower()
    if lowered not in options:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {list(options)}.")
    return lowered


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Validate a count (a Python or NumPy integer, at least `minimum`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer; got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}; got {value}.")
    return int(value)


def check_levels(q: Any) -> np.ndarray:
    """Probability levels (Q,) float64 from a scalar or 1-D array, each strictly in (0, 1)."""
    levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"`q` must be a scalar or a 1-D array of probabilities; got {q!r}.")
    if not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"`q` must lie strictly between 0 and 1; got {levels.tolist()}.")
    return levels


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Validate a finite positive (or non-negative) real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number; got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a finite {bound} number; got {value}.")
    return value


# --------------------------------------------------------------------------- data warnings
class DataWarning(UserWarning):
    """The training data has a property that makes a fit misleading (integer-valued targets
    under a continuous family, sentinel values, constant inputs); the message says what was
    found and what to do. The data is never changed."""


#: Rows examined by :func:`warn_about_data` (evenly spaced beyond this; the checks cost a
#: sort per column).
DATA_CHECK_ROWS = 200_000
#: A target column with at most this many distinct values is "few-valued".
FEW_VALUES = 20
#: A repeated value counts as a sentinel on at least this many rows ...
SENTINEL_MIN_ROWS = 5
#: ... when it lies outside the range of the column's other values and this many robust
#: standard deviations (IQR / 1.349) from their median.
SENTINEL_DISTANCE = 10.0
#: Candidate sentinels per column: its most frequent values.
SENTINEL_CANDIDATES = 3
#: Columns whose other values take fewer distinct values than this are categorical-like
#: (their spread says little): only the conventional codes below count as sentinels there.
SENTINEL_MIN_DISTINCT = 10
SENTINEL_CODES = frozenset({9.0, 99.0, 999.0, 9999.0, 99999.0})


def _labels(names: Sequence[str] | None, columns: Iterable[int], what: str) -> str:
    return ", ".join(f"{what} {int(j)}" + ("" if names is None else f" ({names[j]!r})")
                     for j in columns)


def _sentinels(column: np.ndarray) -> list[tuple[float, int]]:
    """(value, rows) of the sentinel values of one finite column: a value repeated on at
    least SENTINEL_MIN_ROWS (and at most half the) rows, outside the range of the other
    values and SENTINEL_DISTANCE robust standard deviations from their median."""
    values, counts = np.unique(column, return_counts=True)
    if values.size < 2:
        return []
    found = []
    for index in np.argsort(counts)[::-1][:SENTINEL_CANDIDATES]:
        value, count = values[index], int(counts[index])
        if count < SENTINEL_MIN_ROWS or count > column.size // 2:
            continue
        rest = column[column != value]
        low, median, high = np.percentile(rest, [25, 50, 75])
        scale = (high - low) / 1.349
        if scale <= 0:
            scale = float(np.std(rest))
        outside = value < rest.min() or value > rest.max()
        if np.unique(rest).size < SENTINEL_MIN_DISTINCT and abs(value) not in SENTINEL_CODES:
            continue
        if outside and scale > 0 and abs(value - median) > SENTINEL_DISTANCE * scale:
            found.append((float(value), count))
    return found


def warn_about_data(X: Any, y: Any, *, discrete_family: bool,
                    feature_names: Sequence[str] | None = None,
                    target_names: Sequence[str] | None = None, stacklevel: int = 3) -> None:
    """Emit one :class:`DataWarning` per kind of problem found in the training data.

    Checks (on at most ``DATA_CHECK_ROWS`` evenly spaced rows; the data is never altered):

    * targets with few distinct values (at most ``FEW_VALUES``) or integer values with
      ties, under a continuous family: the components collapse onto the values and the
      density grows without bound, so log-likelihoods are not comparable with a continuous
      model's;
    * sentinel values (e.g. 99, -99, -999 standing for "missing") in an input or target
      column: a value repeated on at least ``SENTINEL_MIN_ROWS`` rows, outside the range of
      the other values and ``SENTINEL_DISTANCE`` robust standard deviations away from them;
    * constant input columns, which carry no information.

    Inputs that are not finite 2-D numeric arrays are skipped: the validation that follows
    rejects them with a clear error.

    Parameters
    ----------
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    discrete_family : bool
        Whether the model's family is discrete (a count family): then integer targets are
        expected and not warned about.
    feature_names, target_names : sequence of str, optional
        Column names for the messages.
    stacklevel : int
        Passed to :func:`warnings.warn`.
    """
    try:
        X_host = _as_numeric_array(X, "X")
        y_host = _as_numeric_array(y, "y")
    except TypeError:
        return
    if y_host.ndim == 1:
        y_host = y_host[:, None]
    if X_host.ndim != 2 or y_host.ndim != 2 or X_host.shape[0] != y_host.shape[0] \
            or X_host.shape[0] < 2:
        return
    num_rows = X_host.shape[0]
    if num_rows > DATA_CHECK_ROWS:
        rows = np.linspace(0, num_rows - 1, DATA_CHECK_ROWS).round().astype(np.int64)
        X_host, y_host = X_host[rows], y_host[rows]
    X_host = X_host.astype(np.float64, copy=False)
    y_host = y_host.astype(np.float64, copy=False)
    if not (np.isfinite(X_host).all() and np.isfinite(y_host).all()):
        return
    messages = []
    if not discrete_family:
        few = []
        for d in range(y_host.shape[1]):
            column = y_host[:, d]
            distinct = np.unique(column).size
            integer = bool(np.all(column == np.round(column)))
            if distinct <= column.size // 2 and (distinct <= FEW_VALUES or integer):
                kind = "integer" if integer else "distinct"
                few.append(f"{_labels(target_names, [d], 'output')}: {distinct} {kind} values")
        if few:
            messages.append(
                f"`y` takes few distinct values ({'; '.join(few)} in {y_host.shape[0]} rows) but "
                "the family is continuous: the components collapse onto the values and the "
                "density grows without bound there, so the log-likelihoods are not comparable "
                "with those of a continuous model. Use a count family (family='poisson' or "
                "'negative_binomial') for counts, or dequantise y (add uniform noise of one "
                "step's width) before fitting."
            )
    for name, array, names, what in (("X", X_host, feature_names, "column"),
                                     ("y", y_host, target_names, "output")):
        found = []
        for j in range(array.shape[1]):
            for value, count in _sentinels(array[:, j]):
                found.append(f"{_labels(names, [j], what)}: {value:g} on {count} rows")
        if found:
            messages.append(
                f"`{name}` has values that look like sentinels for missing data ("
                f"{'; '.join(found)}): a repeated value far outside the rest. The fit treats "
                "them as ordinary values. Drop or impute those rows, or encode the missingness "
                "in a separate indicator column, before fitting."
            )
    constant = np.flatnonzero(np.ptp(X_host, axis=0) == 0)
    if constant.size:
        messages.append(
            f"`X` has constant columns ({_labels(feature_names, constant, 'column')}): they "
            "carry no information. Drop them before fitting."
        )
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=stacklevel)
