"""Export a posterior predictive as a `qp <https://github.com/LSSTDESC/qp>`_ Ensemble.

qp is the LSST DESC format for one-dimensional PDFs (photometric redshifts); it stores
Gaussian mixtures natively (its ``mixmod`` parameterisation: ``means``, ``stds``, ``weights``,
each (npdf, ncomp)). The predictive, a mixture of S x K components per input, is first
compressed to `num_components` Normal components (heaviest first; see
:mod:`bayes_mdn.tables`), which for photo-z at K' = 10-20 keeps the PDF's modes and tails.

Needs the optional extra: ``pip install 'bayes-mdn[qp]'`` (the ``qp-prob`` package).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bayes_mdn._validation import check_positive_int
from bayes_mdn.predictive import PredictiveMixture
from bayes_mdn.tables import _compressed_mixture

try:
    import qp as _qp
except ImportError:  # pragma: no cover - qp-prob is installed with the test extra
    raise ImportError("bayes_mdn.qp needs qp: pip install 'bayes-mdn[qp]' (qp-prob).") from None

__all__ = ["to_qp", "write_qp"]


def to_qp(pred: PredictiveMixture, *, num_components: int = 10,
          ancil: dict[str, Any] | None = None) -> Any:
    """The predictive as a ``qp.Ensemble`` of Gaussian mixtures (``qp.mixmod``).

    Parameters
    ----------
    pred : PredictiveMixture
        A predictive of one output (D = 1) with a Normal family.
    num_components : int
        Components per PDF after compression (K').
    ancil : dict of str to array-like, optional
        Per-object columns stored beside the PDFs (e.g. ``{"id": ids}``), each (M,).

    Returns
    -------
    qp.Ensemble
        M PDFs with ``means``, ``stds`` and ``weights`` of shape (M, K'); components that
        compression left empty have weight 0.
    """
    if not isinstance(pred, PredictiveMixture):
        raise TypeError(f"`pred` must be a bayes_mdn.PredictiveMixture; got "
                        f"{type(pred).__name__}.")
    if pred.num_outputs != 1:
        raise ValueError(f"qp stores one-dimensional PDFs; this predictive has D = "
                         f"{pred.num_outputs}.")
    params = set(pred.model.family.head_dims(1))
    if params != {"loc", "scale"} or pred.model.family.name not in ("normal",):
        raise ValueError(f"qp's mixmod holds Gaussian mixtures; this fit's family is "
                         f"{pred.model.family.name!r}. Fit with family='normal'.")
    num_components = check_positive_int(num_components, "num_components")
    log_weights, values = _compressed_mixture(pred, num_components)
    weights = np.exp(log_weights)
    weights /= weights.sum(axis=1, keepdims=True)
    data = {"means": values["loc"][:, :, 0], "stds": values["scale"][:, :, 0],
            "weights": weights}
    if ancil is not None:
        ancil = {name: np.asarray(value) for name, value in ancil.items()}
        wrong = [name for name, value in ancil.items() if value.shape[:1] != (pred.num_inputs,)]
        if wrong:
            raise ValueError(f"`ancil` columns {wrong} must have one entry per input "
                             f"({pred.num_inputs}).")
    return _qp.Ensemble(_qp.mixmod, data=data, ancil=ancil)


def write_qp(pred: PredictiveMixture, path: str | os.PathLike, *, num_components: int = 10,
             ancil: dict[str, Any] | None = None) -> None:
    """Write the predictive as a qp file (``qp.read(path)`` reads it back).

    Parameters
    ----------
    pred : PredictiveMixture
    path : str or path-like
        Destination, ``*.hdf5`` (qp's HDF5 format, one file; needs h5py). Written to a
        temporary name with the same suffix and renamed.
    num_components : int
        Components per PDF (K').
    ancil : dict of str to array-like, optional
        Per-object columns, e.g. ``{"id": ids}``.
    """
    destination = Path(path)
    if destination.is_dir():
        raise ValueError(f"{str(destination)!r} is a directory; pass a file path such as "
                         "'pz.hdf5'.")
    if destination.suffix.lower() not in (".hdf5", ".h5", ".hdf"):
        raise ValueError(f"qp picks the file format from the suffix; name the file *.hdf5; "
                         f"got {destination.name!r}.")
    ensemble = to_qp(pred, num_components=num_components, ancil=ancil)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.stem}.",
                                         suffix=destination.suffix)
    os.close(handle)
    os.unlink(temporary)
    try:
        ensemble.write_to(temporary)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
