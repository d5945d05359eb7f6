"""Prediction over a Dask DataFrame or a Parquet dataset, partition by partition.

The fit travels as the bytes of its saved file (:meth:`bayes_mdn.Posterior.save`: arrays +
JSON, never a pickle of library objects). They enter the task graph once, as one piece of
data every partition's task depends on, so the scheduler sends them to each worker once;
each worker process loads them with :func:`bayes_mdn.load` on first use and keeps the loaded
fit (keyed by the bytes' SHA-256) for its other partitions.

Needs the optional extra: ``pip install 'bayes-mdn[dask]'``.

Examples
--------
>>> import bayes_mdn.dask as bmd                                        # doctest: +SKIP
>>> from dask.distributed import Client, LocalCluster                   # doctest: +SKIP
>>> with LocalCluster(n_workers=2) as cluster, Client(cluster):        # doctest: +SKIP
...     bmd.predict_parquet(post, "catalogue/", "predictions/", keep=["id"],
...                         outputs=["mean", "quantiles"])
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._validation import check_key
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS
from bayes_mdn.tables import OutputSpec, predict_columns

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

try:
    import dask
    import dask.dataframe
    import pandas
except ImportError:  # pragma: no cover - dask is installed with the test extra
    raise ImportError("bayes_mdn.dask needs Dask: pip install 'bayes-mdn[dask]'.") from None

__all__ = ["fit_bytes", "predict_dask", "predict_parquet"]

#: Fits loaded in this process, by the SHA-256 of their saved bytes.
_LOADED: dict[str, Posterior] = {}


def fit_bytes(posterior: Posterior) -> bytes:
    """The saved file of `posterior` as bytes (what is sent to the workers)."""
    if not isinstance(posterior, Posterior):
        raise TypeError(f"`posterior` must be a bayes_mdn.Posterior; got "
                        f"{type(posterior).__name__}.")
    with tempfile.TemporaryDirectory(prefix="bayes_mdn-") as folder:
        path = Path(folder) / "fit.bmdn"
        posterior.save(path)
        return path.read_bytes()


def _load_bytes(content: bytes) -> Posterior:
    """Load (once per process) a fit from the bytes of its saved file."""
    digest = hashlib.sha256(content).hexdigest()
    if digest not in _LOADED:
        from bayes_mdn.io import load

        with tempfile.TemporaryDirectory(prefix="bayes_mdn-") as folder:
            path = Path(folder) / "fit.bmdn"
            path.write_bytes(content)
            _LOADED[digest] = load(path)
    return _LOADED[digest]


def _predict_partition(frame: pd.DataFrame, content: bytes, inputs: list[str], keep: list[str],
                       spec: dict[str, Any], key_data: list[int] | None, max_elements: int,
                       partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """One partition's predictions (runs on a worker)."""
    posterior = _load_bytes(content)
    output = OutputSpec.from_dict(spec)
    result = pandas.DataFrame({name: frame[name].to_numpy() for name in keep},
                              index=frame.index)
    if len(frame) == 0:
        for name in output.columns():
            result[name] = np.zeros(0, np.int64 if name.startswith("num_modes_") else
                                    np.float64)
        return result
    X = np.column_stack([np.asarray(frame[name], dtype=np.float64) for name in inputs])
    if not np.isfinite(X).all():
        bad = inputs[int(np.flatnonzero(~np.isfinite(X).all(axis=0))[0])]
        raise ValueError(f"input column {bad!r} has missing or non-finite values in a "
                         "partition; drop or impute them first.")
    key = None
    if key_data is not None:
        number = 0 if partition_info is None else int(partition_info["number"])
        key = jax.random.fold_in(jax.random.wrap_key_data(np.asarray(key_data, np.uint32)),
                                 number)
    columns = predict_columns(posterior, X, output, key=key, max_elements=max_elements)
    for name, values in columns.items():
        result[name] = values
    return result


def predict_dask(
    posterior: Posterior,
    frame: dd.DataFrame,
    *,
    inputs: Sequence[str] | None = None,
    keep: Sequence[str] = ("id",),
    outputs: Sequence[str] = ("mean", "quantiles"),
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    interval: float = 0.9,
    grid: Sequence[float] | None = None,
    num_components: int = 5,
    num_modes: int = 3,
    num_samples: int = 10,
    key: jax.Array | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dd.DataFrame:
    """Predictions for every row of a Dask DataFrame, lazily, one task per partition.

    Parameters
    ----------
    posterior : Posterior
    frame : dask.dataframe.DataFrame
        Holds the input columns (and the `keep` columns).
    inputs : sequence of str, optional
        Input columns in the fit's order; default the fit's recorded feature names, else
        every column not in `keep` when there are exactly P of them.
    keep, outputs, quantiles, interval, grid, num_components, num_modes, num_samples
        As for :func:`bayes_mdn.tables.predict_table`; the columns are the same.
    key : PRNG key, optional
        Needed by ``"samples"``; partition i uses ``jax.random.fold_in(key, i)``.
    max_elements : int
        Memory budget of each partition's predictive queries.

    Returns
    -------
    dask.dataframe.DataFrame
        The `keep` columns, then the output columns; same partitions and index as `frame`.
        Missing modes are NaN (pandas' missing value).
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"`posterior` must be a bayes_mdn.Posterior; got "
                        f"{type(posterior).__name__}.")
    if not isinstance(frame, dask.dataframe.DataFrame):
        raise TypeError(f"`frame` must be a dask.dataframe.DataFrame; got "
                        f"{type(frame).__name__}. Use dask.dataframe.read_parquet(...) or "
                        "predict_parquet() for files.")
    keep = [keep] if isinstance(keep, str) else list(keep)
    columns = list(frame.columns)
    if inputs is None:
        recorded = posterior.info.get("feature_names")
        inputs = list(recorded) if recorded else [name for name in columns if name not in keep]
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    if len(inputs) != posterior.num_features:
        raise ValueError(f"`inputs` names {len(inputs)} columns ({inputs}); the model was "
                         f"fitted on {posterior.num_features} features. Name them with "
                         "inputs=[...].")
    missing = [name for name in [*inputs, *keep] if name not in columns]
    if missing:
        raise ValueError(f"The frame has no column(s) {missing}; columns are {columns}.")
    if key is not None:
        key = check_key(key)
    spec = OutputSpec.build(posterior, outputs, quantiles=quantiles, interval=interval,
                            grid=grid, num_components=num_components, num_modes=num_modes,
                            num_samples=num_samples, key=key)
    meta = pandas.DataFrame({name: frame._meta[name] for name in keep})
    for name in spec.columns():
        meta[name] = np.zeros(0, np.int64 if name.startswith("num_modes_") else np.float64)
    content = dask.delayed(fit_bytes(posterior), pure=True)  # one graph key: sent once
    key_data = None if key is None else np.asarray(jax.random.key_data(key)).tolist()
    return frame.map_partitions(_predict_partition, content, inputs, keep, spec.to_dict(), key_data,
                                int(max_elements), meta=meta, align_dataframes=False)


def predict_parquet(
    posterior: Posterior,
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    split_row_groups: bool | str = True,
    **options: Any,
) -> None:
    """Predict a Parquet dataset (a file, a folder of files or a glob) into a Parquet folder.

    Runs on the current Dask scheduler (a ``dask.distributed.Client`` if one is active).
    The result is written to a temporary folder beside `dest` and renamed when complete.

    Parameters
    ----------
    posterior : Posterior
    source : str or path-like
        Anything ``dask.dataframe.read_parquet`` reads.
    dest : str or path-like
        Output folder (one Parquet file per partition); an existing one is replaced.
    split_row_groups : bool or str
        Passed to ``dask.dataframe.read_parquet``: True (default) makes one partition per
        row group, so that one large file is spread over the workers too.
    **options
        As for :func:`predict_dask`.
    """
    frame = dask.dataframe.read_parquet(str(source), split_row_groups=split_row_groups)
    result = predict_dask(posterior, frame, **options)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{str(dest)!r} is a file; predict_parquet writes a folder.")
    temporary = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        result.to_parquet(str(temporary), write_index=False, overwrite=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(temporary, dest)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
