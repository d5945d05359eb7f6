"""Validation rows for early stopping: the ``validation`` option of MAP, ensembles and SVI.

``validation=0.2`` holds out a fifth of the training rows (chosen with the fit's key) and
``validation=(X_val, y_val)`` takes separate rows; either way the model never trains on
them. :func:`split_validation` runs in ``fit`` before the data is standardised (the
standardisation is the training rows' alone) and :func:`attach_validation` adds the
standardised rows to the :class:`~bayes_mdn.inference._data.FitData` that the optimisation
loop (:func:`~bayes_mdn.inference._optim.run_blocks`) scores at every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import jax
import numpy as np

from bayes_mdn._validation import as_features, as_targets, check_positive_int, check_same_rows
from bayes_mdn.inference._data import FitData

__all__ = ["ValidationData", "attach_validation", "check_validation_options",
           "split_validation"]

#: Folded into the fit's key to choose the validation rows (the fit's own use of the key
#: is unchanged, so a fit without validation is what it was).
SPLIT_STREAM = 0x7A11D


def check_validation_options(validation: Any, patience: Any) -> Any:
    """Validate the ``validation`` and ``patience`` options (types and ranges only; the
    shapes of a ``(X_val, y_val)`` pair are checked against the data in
    :func:`split_validation`). Returns `validation`, a fraction as a float."""
    check_positive_int(patience, "patience")
    if validation is None:
        return None
    if isinstance(validation, (tuple, list)):
        if len(validation) != 2:
            raise ValueError(
                "`validation` must be a fraction of the training rows in (0, 1) or a pair "
                f"(X_val, y_val); got a sequence of {len(validation)} items.")
        return tuple(validation)
    if isinstance(validation, (bool, np.bool_)) or not isinstance(
            validation, (int, float, np.integer, np.floating)):
        raise TypeError(
            "`validation` must be a fraction of the training rows in (0, 1), e.g. 0.2, or a "
            f"pair (X_val, y_val); got {type(validation).__name__}.")
    if not 0 < float(validation) < 1:
        raise ValueError(
            "`validation` as a fraction of the training rows must be in (0, 1), e.g. 0.2; "
            f"got {validation}.")
    return float(validation)


def split_validation(X: Any, y: Any, validation: Any, key: jax.Array
                     ) -> tuple[Any, Any, tuple[np.ndarray, np.ndarray] | None]:
    """Split off the validation rows.

    Parameters
    ----------
    X : array-like, shape (N, P)
    y : array-like, shape (N,) or (N, D)
    validation : float, (X_val, y_val) or None
        A fraction of the rows, chosen at random with `key`, or separate rows.
    key : PRNG key
        The fit's key (a stream derived from it chooses the rows).

    Returns
    -------
    X_train, y_train, (X_val, y_val) or None
        The training rows (the inputs unchanged without a fraction) and the validation rows
        as host arrays.

    Raises
    ------
    ValueError, TypeError
        Validation rows of the wrong shape, non-finite, or a fraction that leaves fewer than
        two rows on either side.
    """
    if validation is None:
        return X, y, None
    X_host = as_features(X, "X", keep_float32=True)
    y_host = as_targets(y, "y", keep_float32=True)
    check_same_rows(X_host, y_host)
    if isinstance(validation, tuple):
        X_val = as_features(validation[0], "X_val", num_features=X_host.shape[1],
                            keep_float32=True)
        y_val = as_targets(validation[1], "y_val", num_outputs=y_host.shape[1],
                           keep_float32=True)
        check_same_rows(X_val, y_val, "X_val", "y_val")
        return X_host, y_host, (X_val, y_val)
    num_rows = X_host.shape[0]
    num_val = round(validation * num_rows)
    if num_val < 2 or num_rows - num_val < 2:
        raise ValueError(
            f"`validation={validation}` of {num_rows} rows leaves {num_val} validation and "
            f"{num_rows - num_val} training rows; both need at least 2. Use a fraction "
            "nearer 0.5, more data, or pass validation=(X_val, y_val).")
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, SPLIT_STREAM), num_rows))
    held, kept = np.sort(order[:num_val]), np.sort(order[num_val:])
    return X_host[kept], y_host[kept], (X_host[held], y_host[held])


@dataclass(frozen=True, eq=False)
class ValidationData(FitData):
    """:class:`FitData` plus standardised validation rows (M', P) and (M', D)."""

    X_val: jax.Array | None = None
    y_val: jax.Array | None = None


def attach_validation(model: Any, data: FitData,
                      validation: tuple[np.ndarray, np.ndarray] | None) -> FitData:
    """`data` with the validation rows standardised by its standardizer (unchanged when
    `validation` is None)."""
    if validation is None:
        return data
    X_val, y_val = validation
    model.family.check_support(y_val, "y_val")
    standardizer = data.standardizer
    values = {field.name: getattr(data, field.name) for field in fields(data)}
    return ValidationData(**values, X_val=standardizer.transform_X(X_val),
                          y_val=standardizer.transform_y(y_val))
