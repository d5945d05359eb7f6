"""Export a posterior predictive as a `qp <https://github.com/LSSTDESC/qp>`_ Ensemble.

qp is the LSST DESC format for one-dimensional PDFs (photometric redshifts); it stores
Gaussian mixtures natively (its ``mixmod`` parameterisation: ``means``, ``stds``, ``weights``,
each (npdf, ncomp)). The predictive, a mixture of S x K components per input, is first
compressed to `num_components` Normal components (heaviest first; see
:mod:`bayes_mdn.tables`), which for photo-z at K' = 10-20 keeps the PDF's modes and tails.

:func:`predict_qp` does the same for a CSV or Parquet catalogue of any size: it streams the
rows through :func:`bayes_mdn.tables.predict_table` (output ``"mixture"``, bounded memory,
resumable) and writes the qp file chunk by chunk (qp's own chunked HDF5 writer), to a
temporary name renamed at the end. ``bayes-mdn predict FIT DATA --out pz.hdf5`` calls it.

Needs the optional extra: ``pip install 'bayes-mdn[qp]'`` (the ``qp-prob`` package).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bayes_mdn._progress import check_progress
from bayes_mdn._validation import check_positive_int
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture
from bayes_mdn.tables import _compressed_mixture, predict_table

try:
    import qp as _qp
except ImportError:  # pragma: no cover - qp-prob is installed with the test extra
    raise ImportError("bayes_mdn.qp needs qp: pip install 'bayes-mdn[qp]' (qp-prob).") from None

__all__ = ["predict_qp", "to_qp", "write_qp"]

#: File suffixes qp reads as HDF5.
HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


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
    destination = _check_destination(path)
    ensemble = to_qp(pred, num_components=num_components, ancil=ancil)
    temporary = _temporary_name(destination)
    try:
        ensemble.write_to(temporary)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _check_destination(path: str | os.PathLike) -> Path:
    destination = Path(path)
    if destination.is_dir():
        raise ValueError(f"{str(destination)!r} is a directory; pass a file path such as "
                         "'pz.hdf5'.")
    if destination.suffix.lower() not in HDF5_SUFFIXES:
        raise ValueError(f"qp picks the file format from the suffix; name the file *.hdf5; "
                         f"got {destination.name!r}.")
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"The output folder {str(destination.parent)!r} does not "
                                "exist.")
    return destination


def _temporary_name(destination: Path) -> str:
    """A free name beside `destination` with its suffix (qp reads the format from it)."""
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.stem}.",
                                         suffix=destination.suffix)
    os.close(handle)
    os.unlink(temporary)
    return temporary


def predict_qp(posterior: Posterior, source: str | os.PathLike, dest: str | os.PathLike, *,
               inputs: Sequence[str] | None = None, keep: Sequence[str] = ("id",),
               num_components: int = 10, batch_rows: int = 2**17,
               progress: bool | None = None, resume: bool = False,
               max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, Any]:
    """Predict every row of a CSV or Parquet file to a qp file of Gaussian mixtures.

    The rows are streamed through :func:`~bayes_mdn.tables.predict_table` (output
    ``"mixture"``: each predictive compressed to `num_components` Normal components) into a
    hidden Parquet file beside `dest`, which is then copied batch by batch into qp's HDF5
    format (``qp.mixmod``; the `keep` columns as qp's ancillary data) under a temporary name
    renamed to `dest` at the end; memory depends on `batch_rows`, not on the file's size.
    An interrupted run continues with ``resume=True`` (see :mod:`bayes_mdn.tables`).

    Parameters
    ----------
    posterior : Posterior
        A fit of one output (D = 1) with the Normal family.
    source : str or path-like
        A CSV file with a header line, or a Parquet file.
    dest : str or path-like
        The qp file, ``*.hdf5`` (``qp.read(dest)`` reads it).
    inputs, keep, batch_rows, progress, resume, max_elements
        As for :func:`~bayes_mdn.tables.predict_table`; `keep` columns must be numeric
        (qp stores them as HDF5 arrays).
    num_components : int
        Components per PDF (K').

    Returns
    -------
    dict
        ``path``, ``num_rows``, ``columns`` (the ancillary columns, then ``means``,
        ``stds``, ``weights``), ``seconds``, ``resumed_rows``.

    Raises
    ------
    ValueError
        As :func:`~bayes_mdn.tables.predict_table`, and for a `dest` not named ``*.hdf5``,
        a fit that is not a one-output Normal MDN, or a non-numeric `keep` column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(posterior, Posterior):
        raise TypeError(f"`posterior` must be a bayes_mdn.Posterior; got "
                        f"{type(posterior).__name__}.")
    destination = _check_destination(dest)
    num_components = check_positive_int(num_components, "num_components")
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    progress = check_progress(progress)
    keep = [keep] if isinstance(keep, str) else list(keep)
    mixtures = destination.parent / f".{destination.name}.mixture.parquet"
    report = predict_table(posterior, source, mixtures, inputs=inputs, keep=keep,
                           outputs=("mixture",), num_components=num_components,
                           batch_rows=batch_rows, format="parquet", progress=progress,
                           resume=resume, max_elements=max_elements)
    temporary, handles = _temporary_name(destination), None
    try:
        table = pq.ParquetFile(mixtures)
        schema = table.schema_arrow
        bad = [name for name in keep if not (pa.types.is_integer(schema.field(name).type)
                                             or pa.types.is_floating(schema.field(name).type))]
        if bad:
            raise ValueError(f"qp stores pass-through columns as numbers; {bad} are not "
                             "numeric. Leave them out of `keep` (--keep).")
        target = json.loads(schema.metadata[b"bayes_mdn"])["spec"]["target_names"][0]
        columns = {part: [f"{part}{k}_{target}" for k in range(1, num_components + 1)]
                   for part in ("weight", "loc", "scale")}
        num_rows, start = table.metadata.num_rows, 0
        for batch in table.iter_batches(batch_size=batch_rows):
            def block(part: str, batch: Any = batch) -> np.ndarray:
                return np.column_stack([batch.column(name).to_numpy(zero_copy_only=False)
                                        for name in columns[part]]).astype(np.float64)

            weights = block("weight")
            weights /= weights.sum(axis=1, keepdims=True)
            ancil = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in keep}
            ensemble = _qp.Ensemble(_qp.mixmod, data={
                "means": block("loc"), "stds": block("scale"), "weights": weights},
                ancil=ancil or None)
            if handles is None:
                handles = ensemble.initializeHdf5Write(temporary, num_rows)
            ensemble.writeHdf5Chunk(handles[0], start, start + batch.num_rows)
            start += batch.num_rows
        ensemble.finalizeHdf5Write(handles[1])
        os.replace(temporary, destination)
    except BaseException:
        if handles is not None:
            handles[1].close()
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    finally:
        mixtures.unlink(missing_ok=True)
    return {**report, "path": str(destination),
            "columns": [*keep, "means", "stds", "weights"]}
