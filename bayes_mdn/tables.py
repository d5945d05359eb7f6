"""Catalogue-scale prediction: stream a CSV or Parquet table through a fitted posterior.

:func:`predict_table` reads the source in batches of ``batch_rows`` rows (pyarrow's streaming
CSV reader, or a Parquet file batch by batch), evaluates the posterior predictive of each
batch, and writes the requested summaries next to the pass-through columns (``keep``, e.g. an
object id) to Parquet or CSV. Memory depends on ``batch_rows``, not on the file's size.

Crash safety and resuming
-------------------------
Nothing is ever written under the destination's name until the run is complete. Each batch is
written as a numbered part file into a folder ``.<dest name>.partial`` beside the destination,
and a small JSON manifest there records how many parts are done (both written to temporary
names and renamed). At the end the parts are assembled into a temporary file that is renamed
over `dest`, and the folder is removed. A run that stopped (killed, interrupted, out of disk)
continues with ``resume=True`` from the first missing part, without duplicating rows; the
manifest's record of the source file, the fit and the options must match, so a resumed run
equals an uninterrupted one. A run that fails on bad input (a non-numeric cell, a missing
value) removes its partial folder, since the input must change before it can succeed.

The summaries (``outputs``)
---------------------------
Column names end with the target's name ``t`` (``Posterior.info["target_names"]``, else
``y`` for D = 1 and ``y0``, ``y1``, ... otherwise):

=================  ==========================================================================
``"mean"``         ``mean_t``
``"median"``       ``median_t``
``"quantiles"``    ``q<level>_t`` for each level of `quantiles`, e.g. ``q0.05_t``
``"interval"``     ``lower<level>_t``, ``upper<level>_t``: the central interval of probability
                   `interval` (its ends are the (1 -+ level) / 2 quantiles)
``"std"``          ``std_t``: the predictive standard deviation
``"modes"``        ``mode<j>_t`` for j = 1 .. `num_modes` (highest density first) and
                   ``num_modes_t``; missing modes are null (D = 1)
``"log_density"``  ``log_density_<value>``: the log predictive density at each `grid` point
                   (D = 1; the grid is also stored in the Parquet metadata)
``"mixture"``      ``weight<k>_t``, ``loc<k>_t``, ``scale<k>_t`` (or the family's parameter
                   names) for k = 1 .. `num_components`: the predictive compressed to a
                   mixture of that many components, heaviest first (D = 1)
``"samples"``      ``sample<j>_t`` for j = 1 .. `num_samples` (needs `key`)
=================  ==========================================================================
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bayes_mdn._progress import check_progress, progress_bar
from bayes_mdn._validation import check_key, check_positive_int
from bayes_mdn.families import Normal
from bayes_mdn.posterior import Posterior
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS, PredictiveMixture

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["OUTPUTS", "OutputSpec", "predict_columns", "predict_table"]

#: Every summary :func:`predict_table` can write.
OUTPUTS = ("mean", "median", "quantiles", "interval", "std", "modes", "log_density", "mixture",
           "samples")
#: Outputs that are defined for one output dimension only.
_ONE_OUTPUT = ("modes", "log_density", "mixture")
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "bayes_mdn.predict_table"


def _require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - pyarrow is installed with the test extra
        raise ImportError("predict_table needs pyarrow: pip install 'bayes-mdn[parquet]'."
                          ) from None
    return pyarrow


# --------------------------------------------------------------------------- what to compute
@dataclass(frozen=True)
class OutputSpec:
    """The validated choice of summaries for :func:`predict_table` (see the module docs).

    Attributes
    ----------
    outputs : tuple of str
        Names from :data:`OUTPUTS`, in the order their columns are written.
    target_names : tuple of str
        D names used as column suffixes.
    quantiles : tuple of float
        Levels of ``"quantiles"``.
    interval : float
        Probability of the ``"interval"`` central interval.
    grid : tuple of float
        y values of ``"log_density"``.
    num_components : int
        Components of ``"mixture"``.
    num_modes : int
        Columns of ``"modes"``.
    num_samples : int
        Columns of ``"samples"`` per output.
    mixture_params : tuple of str
        The family's parameter names (``"mixture"`` columns after the weight).
    """

    outputs: tuple[str, ...]
    target_names: tuple[str, ...]
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    interval: float = 0.9
    grid: tuple[float, ...] = ()
    num_components: int = 5
    num_modes: int = 3
    num_samples: int = 10
    mixture_params: tuple[str, ...] = ("loc", "scale")

    @classmethod
    def build(cls, posterior: Posterior, outputs: Sequence[str], *,
              quantiles: Sequence[float] = (0.05, 0.5, 0.95), interval: float = 0.9,
              grid: Sequence[float] | None = None, num_components: int = 5,
              num_modes: int = 3, num_samples: int = 10, key: Any = None) -> OutputSpec:
        """Validate the options against `posterior` (raises ValueError/TypeError)."""
        if isinstance(outputs, str):
            outputs = [part.strip() for part in outputs.split(",") if part.strip()]
        outputs = tuple(outputs)
        if not outputs:
            raise ValueError(f"`outputs` must name at least one of {list(OUTPUTS)}.")
        unknown = [name for name in outputs if name not in OUTPUTS]
        if unknown:
            raise ValueError(f"Unknown output(s) {unknown}; choose from {list(OUTPUTS)}.")
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"`outputs` lists a summary twice: {list(outputs)}.")
        num_outputs = posterior.num_outputs
        one = [name for name in outputs if name in _ONE_OUTPUT]
        if one and num_outputs != 1:
            raise ValueError(f"Outputs {one} need one target (D = 1); this fit has D = "
                             f"{num_outputs}. Use 'quantiles' or 'samples' instead.")
        levels = tuple(float(level) for level in np.atleast_1d(np.asarray(quantiles, float)))
        if "quantiles" in outputs and (not levels or not all(0 < q < 1 for q in levels)):
            raise ValueError(f"`quantiles` must be levels strictly between 0 and 1, e.g. "
                             f"0.05,0.5,0.95; got {list(levels)}.")
        interval = float(interval)
        if not 0 < interval < 1:
            raise ValueError(f"`interval` must lie strictly between 0 and 1, e.g. 0.9; got "
                             f"{interval}.")
        grid_values: tuple[float, ...] = ()
        if "log_density" in outputs:
            if grid is None:
                raise ValueError("output 'log_density' needs `grid`: the y values at which to "
                                 "evaluate it, e.g. numpy.linspace(0, 3, 31).")
            values = np.asarray(grid, dtype=np.float64).ravel()
            if values.size == 0 or not np.isfinite(values).all():
                raise ValueError("`grid` must be a non-empty list of finite y values.")
            names = [_grid_name(value) for value in values]
            if len(set(names)) != len(names):
                raise ValueError("`grid` has points that agree to 6 significant digits; space "
                                 "them further apart.")
            grid_values = tuple(float(value) for value in values)
        num_components = check_positive_int(num_components, "num_components")
        num_modes = check_positive_int(num_modes, "num_modes")
        num_samples = check_positive_int(num_samples, "num_samples")
        if "samples" in outputs:
            check_key(key)
        params: tuple[str, ...] = ("loc", "scale")
        if "mixture" in outputs:
            params = tuple(posterior.model.family.head_dims(1))
            # PredictiveMixture.reduce merges Normal components only (moment matching
            # keeps a merged Normal a Normal); said here, before any row is read.
            if not isinstance(posterior.model.family, Normal) or num_outputs != 1:
                raise ValueError(f"output 'mixture' (the compressed mixture) needs the Normal "
                                 f"family and one output; this fit uses "
                                 f"{posterior.model.family.name!r} with {num_outputs} "
                                 "output(s). Choose other outputs, e.g. quantiles.")
        names = posterior.info.get("target_names")
        if not names or len(names) != num_outputs:
            names = ["y"] if num_outputs == 1 else [f"y{d}" for d in range(num_outputs)]
        return cls(outputs=outputs, target_names=tuple(str(name) for name in names),
                   quantiles=levels, interval=interval, grid=grid_values,
                   num_components=num_components, num_modes=num_modes,
                   num_samples=num_samples, mixture_params=params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in the manifest and the Parquet metadata, and sent
        to Dask workers); :meth:`from_dict` rebuilds the spec from it."""
        return {"outputs": list(self.outputs), "target_names": list(self.target_names),
                "quantiles": list(self.quantiles), "interval": self.interval,
                "grid": list(self.grid), "num_components": self.num_components,
                "num_modes": self.num_modes, "num_samples": self.num_samples,
                "mixture_params": list(self.mixture_params)}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> OutputSpec:
        """The spec described by :meth:`to_dict` (already validated when it was built)."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value
                      for name, value in spec.items()})

    def levels(self) -> np.ndarray:
        """Every quantile level needed (quantiles, median, interval ends), sorted, float64."""
        levels: set[float] = set()
        if "quantiles" in self.outputs:
            levels.update(self.quantiles)
        if "median" in self.outputs:
            levels.add(0.5)
        if "interval" in self.outputs:
            levels.update({(1 - self.interval) / 2, (1 + self.interval) / 2})
        return np.array(sorted(levels), dtype=np.float64)

    def columns(self) -> list[str]:
        """Output column names, in order (pass-through columns come first, separately)."""
        columns: list[str] = []
        for output in self.outputs:
            for t in self.target_names:
                if output == "mean":
                    columns.append(f"mean_{t}")
                elif output == "median":
                    columns.append(f"median_{t}")
                elif output == "std":
                    columns.append(f"std_{t}")
                elif output == "quantiles":
                    columns += [f"q{_level_name(q)}_{t}" for q in self.quantiles]
                elif output == "interval":
                    level = _level_name(self.interval)
                    columns += [f"lower{level}_{t}", f"upper{level}_{t}"]
                elif output == "modes":
                    columns += [f"mode{j}_{t}" for j in range(1, self.num_modes + 1)]
                    columns.append(f"num_modes_{t}")
                elif output == "log_density":
                    columns += [f"log_density_{_grid_name(v)}" for v in self.grid]
                elif output == "mixture":
                    for k in range(1, self.num_components + 1):
                        columns.append(f"weight{k}_{t}")
                        columns += [f"{name}{k}_{t}" for name in self.mixture_params]
                elif output == "samples":
                    columns += [f"sample{j}_{t}" for j in range(1, self.num_samples + 1)]
        return columns


def _level_name(level: float) -> str:
    return f"{level:.6g}"


def _grid_name(value: float) -> str:
    return f"{value:.6g}"


# --------------------------------------------------------------------------- the computation
def predict_columns(posterior: Posterior, X: np.ndarray, spec: OutputSpec, *,
                    key: jax.Array | None = None,
                    max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, np.ndarray]:
    """The summaries of `spec` at inputs `X`, one array per output column.

    Parameters
    ----------
    posterior : Posterior
    X : numpy.ndarray, shape (M, P)
        Inputs in original units.
    spec : OutputSpec
    key : PRNG key, optional
        Needed for ``"samples"``.
    max_elements : int
        Memory budget of the predictive queries (see :meth:`Posterior.predictive`).

    Returns
    -------
    dict of str to numpy.ndarray
        Columns named by :meth:`OutputSpec.columns`, each (M,); float64 (NaN only where a
        mode column has no mode, written as null), ``num_modes_t`` int64.
    """
    pred = posterior.predictive(X, max_elements=max_elements)
    num_rows = X.shape[0]
    levels = spec.levels()
    quantiles = pred.quantiles(levels) if levels.size else None  # (Q, M, D)

    def at(level: float) -> np.ndarray:
        return quantiles[int(np.argmin(np.abs(levels - level)))]

    columns: dict[str, np.ndarray] = {}
    names = spec.columns()
    for output in spec.outputs:
        values: list[np.ndarray] = []
        if output == "mean":
            values = list(pred.mean().T)
        elif output == "std":
            values = list(np.sqrt(pred.variance()).T)
        elif output == "median":
            values = list(at(0.5).T)
        elif output == "quantiles":
            for d in range(pred.num_outputs):
                values += [at(q)[:, d] for q in spec.quantiles]
        elif output == "interval":
            lower, upper = at((1 - spec.interval) / 2), at((1 + spec.interval) / 2)
            for d in range(pred.num_outputs):
                values += [lower[:, d], upper[:, d]]
        elif output == "modes":
            table = np.full((num_rows, spec.num_modes), np.nan)
            counts = np.zeros(num_rows, np.int64)
            for row, modes in enumerate(pred.modes()):
                found = modes[: spec.num_modes, 0]
                table[row, : found.size] = found
                counts[row] = modes.shape[0]
            values = [*table.T, counts]
        elif output == "log_density":
            values = list(pred.log_prob_grid(np.asarray(spec.grid)).T)
        elif output == "mixture":
            log_weights, params = _compressed_mixture(pred, spec.num_components)
            weights = np.exp(log_weights)
            for k in range(spec.num_components):
                values.append(weights[:, k])
                values += [params[name][:, k, 0] for name in spec.mixture_params]
        elif output == "samples":
            draws = pred.sample(check_key(key), spec.num_samples)  # (J, M, D)
            for d in range(pred.num_outputs):
                values += list(draws[:, :, d])
        for value in values:
            columns[names[len(columns)]] = np.asarray(value)
    return columns


def _compressed_mixture(pred: PredictiveMixture, num_components: int
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(log_weights (M, K'), params each (M, K', 1)), components sorted heaviest first.

    From :meth:`PredictiveMixture.reduce` (a moment-preserving merge). Fewer than K'
    components (a small S x K) are padded with zero-weight copies of the last one.
    """
    log_weights, params = pred.reduce(num_components=num_components).mixture_parameters()
    order = np.argsort(-log_weights, axis=1, kind="stable")
    log_weights = np.take_along_axis(log_weights, order, axis=1)
    params = {name: np.take_along_axis(value, order[:, :, None], axis=1)
              for name, value in params.items()}
    missing = num_components - log_weights.shape[1]
    if missing > 0:
        log_weights = np.concatenate(
            [log_weights, np.full((log_weights.shape[0], missing), -np.inf)], axis=1)
        params = {name: np.concatenate([value, np.repeat(value[:, -1:], missing, axis=1)],
                                       axis=1) for name, value in params.items()}
    return log_weights, params



# --------------------------------------------------------------------------- reading
def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _sniff_format(path: Path) -> str:
    with open(path, "rb") as stream:
        head = stream.read(4)
    return "parquet" if head == b"PAR1" else "csv"


def _output_format(dest: Path, format: str | None) -> str:
    if format is not None:
        if format not in ("parquet", "csv"):
            raise ValueError(f"`format` must be 'parquet' or 'csv'; got {format!r}.")
        return format
    suffix = dest.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt"):
        return "csv"
    raise ValueError(f"Cannot tell the output format from {dest.name!r}; name it *.parquet or "
                     "*.csv, or pass format='parquet' or 'csv'.")


class _Source:
    """A CSV or Parquet file read in batches of selected columns."""

    def __init__(self, path: Path, inputs: Sequence[str] | None, keep: Sequence[str],
                 num_features: int) -> None:
        pa = _require_pyarrow()
        self.pa = pa
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"No input file at {str(path)!r}.")
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty; expected a header line and data rows.")
        self.format = _sniff_format(path)
        if self.format == "parquet":
            try:
                self.file = pa.parquet.ParquetFile(path)
            except (pa.ArrowException, OSError) as error:
                raise ValueError(f"{path} is not a readable Parquet file (truncated or "
                                 f"corrupted?): {_one_line(error)}") from None
            schema = self.file.schema_arrow
            self.columns = list(schema.names)
            self.num_rows: int | None = self.file.metadata.num_rows
        else:
            self.columns = self._csv_header()
            self.num_rows = None
        keep = list(keep)
        if inputs is None:
            candidates = [name for name in self.columns if name not in keep]
            if len(candidates) != num_features:
                raise ValueError(
                    f"The fit records no feature names and {path} has {len(candidates)} "
                    f"columns besides {keep}; the model needs {num_features}. Name them with "
                    "inputs=[...] (--x on the command line).")
            inputs = candidates
        self.inputs = list(inputs)
        self.keep = keep
        if len(self.inputs) != num_features:
            raise ValueError(f"`inputs` names {len(self.inputs)} columns; the model was fitted "
                             f"on {num_features} features.")
        missing = [name for name in [*self.inputs, *keep] if name not in self.columns]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; columns are {self.columns}.")
        if self.format == "parquet":
            for name in self.inputs:
                kind = schema.field(name).type
                if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                    raise ValueError(f"{path}: input column {name!r} is not numeric (type "
                                     f"{kind}).")
        self.selected = list(dict.fromkeys([*keep, *self.inputs]))

    def _csv_header(self) -> list[str]:
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as stream:
                for row in csv.reader(stream):
                    if any(cell.strip() for cell in row):
                        header = [name.strip() for name in row]
                        break
                else:
                    raise ValueError(f"{self.path} is empty; expected a header line and data "
                                     "rows.")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path} is not a UTF-8 text CSV file (nor Parquet).") from None
        except csv.Error as error:
            raise ValueError(f"{self.path} is not a readable CSV file: {error}") from None
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ValueError(f"{self.path} line 1: repeated column name(s) {repeated}.")
        return header

    def _raw_batches(self, batch_rows: int, skip_rows: int) -> Iterator[pa.RecordBatch]:
        pa = self.pa
        if self.format == "parquet":
            groups, start, offset = [], 0, 0
            for index in range(self.file.num_row_groups):
                size = self.file.metadata.row_group(index).num_rows
                if start + size > skip_rows:
                    if not groups:
                        offset = skip_rows - start  # rows of this group already done
                    groups.append(index)
                start += size
            if not groups:
                return
            iterator = self.file.iter_batches(batch_size=batch_rows, row_groups=groups,
                                              columns=self.selected, use_threads=True)
        else:
            offset = skip_rows
            iterator = pa.csv.open_csv(
                self.path,
                read_options=pa.csv.ReadOptions(block_size=1 << 22),
                convert_options=pa.csv.ConvertOptions(
                    column_types={name: pa.float64() for name in self.inputs},
                    include_columns=self.selected))
        for batch in iterator:
            if offset:
                if batch.num_rows <= offset:
                    offset -= batch.num_rows
                    continue
                batch, offset = batch.slice(offset), 0
            yield batch

    def batches(self, batch_rows: int, skip_rows: int = 0) -> Iterator[pa.Table]:
        """Tables of exactly `batch_rows` rows (the last may be shorter), after `skip_rows`."""
        pa = self.pa
        pending: list[pa.RecordBatch] = []
        count = 0
        raw = self._raw_batches(batch_rows, skip_rows)
        while True:
            try:
                batch = next(raw)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as error:
                kind = "Parquet" if self.format == "parquet" else "CSV"
                raise ValueError(f"{self.path} is not a readable {kind} file: "
                                 f"{_one_line(error)}") from None
            pending.append(batch)
            count += batch.num_rows
            while count >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending)

    def features(self, table: pa.Table, first_row: int) -> np.ndarray:
        """(M, P) float64 inputs of a batch; missing or non-finite values are errors."""
        columns = []
        for name in self.inputs:
            column = table.column(name)
            if column.null_count:
                row = first_row + int(np.flatnonzero(
                    np.asarray(column.is_null().to_numpy(zero_copy_only=False)))[0]) + 1
                raise ValueError(f"{self.path}: input column {name!r} has a missing value in "
                                 f"data row {row}; drop or impute missing values first.")
            values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                row = first_row + int(np.flatnonzero(bad)[0]) + 1
                raise ValueError(f"{self.path}: input column {name!r} has a non-finite value "
                                 f"({values[bad][0]}) in data row {row}.")
            columns.append(values)
        return np.column_stack(columns)

    def fingerprint(self) -> dict[str, Any]:
        stat = self.path.stat()
        return {"path": str(self.path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns}


# --------------------------------------------------------------------------- writing
def _fit_digest(posterior: Posterior) -> str:
    """A hash of the fit's arrays and description (detects a different fit on resume)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(posterior.model.to_config(), sort_keys=True, default=repr).encode())
    digest.update(posterior.method.encode())
    for name in sorted(posterior.draws):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(posterior.draws[name])).tobytes())
    for name, value in sorted(posterior.standardizer.to_arrays().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return digest.hexdigest()


def _write_json(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as stream:
        json.dump(content, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _arrow_table(pa: Any, kept: pa.Table, columns: dict[str, np.ndarray]) -> pa.Table:
    arrays = list(kept.columns)
    names = list(kept.column_names)
    for name, values in columns.items():
        if values.dtype.kind == "f":
            missing = np.isnan(values)
            arrays.append(pa.array(values, mask=missing if missing.any() else None))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _assemble(pa: Any, parts: list[Path], dest: Path, format: str,
              metadata: dict[bytes, bytes]) -> None:
    """Concatenate the part files into a temporary file beside `dest`, then rename it."""
    handle, temporary = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                         suffix=".tmp")
    os.close(handle)
    try:
        schema = pa.parquet.read_schema(parts[0]).with_metadata(metadata)
        if format == "parquet":
            with pa.parquet.ParquetWriter(temporary, schema) as writer:
                for part in parts:
                    writer.write_table(pa.parquet.read_table(part).replace_schema_metadata(
                        metadata))
        else:
            with pa.csv.CSVWriter(temporary, schema.remove_metadata()) as writer:
                for part in parts:
                    writer.write_table(pa.parquet.read_table(part).replace_schema_metadata())
        mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, dest)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class _Failure:
    """An exception raised in the prefetching thread, to be raised again by the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _prefetched(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """Yield `items` while a background thread already produces the next `depth` of them.

    The producer's exceptions are raised in the consumer, at the item where they happened.
    A consumer that stops early (an exception, ``break``) stops the thread at its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    finished, stop = object(), threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            offer(_Failure(error))
            return
        offer(finished)

    thread = threading.Thread(target=produce, name="bayes_mdn-read", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is finished:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


# --------------------------------------------------------------------------- public
def predict_table(
    posterior: Posterior,
    source: str | os.PathLike,
    dest: str | os.PathLike,
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
    batch_rows: int = 2**17,
    format: str | None = None,
    progress: bool | None = None,
    resume: bool = False,
    key: jax.Array | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, Any]:
    """Predict every row of a CSV or Parquet file, in bounded memory, to Parquet or CSV.

    See the module documentation for the columns written, crash safety and resuming.

    Parameters
    ----------
    posterior : Posterior
    source : str or path-like
        A CSV file with a header line, or a Parquet file (recognised by its content).
    dest : str or path-like
        Output file; replaced only when the run completes.
    inputs : sequence of str, optional
        The source's columns holding the P features, in the fit's order. Default: the
        feature names recorded at fit time (``posterior.info["feature_names"]``), else every
        column not in `keep` when there are exactly P of them.
    keep : sequence of str
        Pass-through columns copied unchanged to the output, first (e.g. an object id).
        Use ``()`` for none. A named column that is missing is an error.
    outputs : sequence of str
        Summaries from :data:`OUTPUTS` (a comma-separated string is accepted).
    quantiles : sequence of float
        Levels of the ``"quantiles"`` output.
    interval : float
        Probability of the ``"interval"`` output's central interval.
    grid : sequence of float, optional
        y values of the ``"log_density"`` output.
    num_components : int
        Components of the ``"mixture"`` output.
    num_modes : int
        Mode columns of the ``"modes"`` output.
    num_samples : int
        Samples per row of the ``"samples"`` output.
    batch_rows : int
        Rows per batch (and per part file): memory grows with it, not with the file. The
        predictive evaluates inputs in power-of-two chunks, so a power of two (the default
        2**17 = 131 072) wastes no padded rows.
    format : {"parquet", "csv"}, optional
        Output format; default from `dest`'s suffix.
    progress : bool or None
        Progress bar (rows); None: on in a terminal (see :mod:`bayes_mdn._progress`).
    resume : bool
        Continue a run that stopped, from its partial folder (see the module docs); without
        it, any earlier partial run for `dest` is discarded.
    key : PRNG key, optional
        Needed by ``"samples"``; batch b uses ``jax.random.fold_in(key, b)``, so samples
        depend on `key` and `batch_rows`.
    max_elements : int
        Memory budget of each batch's predictive queries.

    Returns
    -------
    dict
        ``path`` (str), ``num_rows`` (int), ``columns`` (list of str), ``seconds`` (float),
        ``resumed_rows`` (rows found done by a resumed run).

    Raises
    ------
    FileNotFoundError
        If `source` does not exist.
    ValueError
        For an unreadable, empty or truncated file, missing columns, non-numeric or
        missing input values, a width that does not match the fit, bad option values, or a
        partial run made with other settings.
    """
    pa = _require_pyarrow()
    if not isinstance(posterior, Posterior):
        raise TypeError(f"`posterior` must be a bayes_mdn.Posterior; got "
                        f"{type(posterior).__name__}.")
    progress = check_progress(progress)
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    max_elements = check_positive_int(max_elements, "max_elements")
    if key is not None:
        key = check_key(key)
    if isinstance(keep, str):
        keep = [keep]
    keep = list(keep)
    if isinstance(inputs, str):
        inputs = [inputs]
    if inputs is None:
        recorded = posterior.info.get("feature_names")
        inputs = list(recorded) if recorded else None
    spec = OutputSpec.build(posterior, outputs, quantiles=quantiles, interval=interval,
                            grid=grid, num_components=num_components, num_modes=num_modes,
                            num_samples=num_samples, key=key)
    dest = Path(dest)
    fmt = _output_format(dest, format)
    if dest.is_dir():
        raise ValueError(f"{str(dest)!r} is a directory; pass a file path such as "
                         "'predictions.parquet'.")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"The output folder {str(dest.parent)!r} does not exist.")
    source = Path(source)
    if source.resolve() == dest.resolve():
        raise ValueError("`dest` must differ from `source`.")
    reader = _Source(source, inputs, keep, posterior.num_features)
    clash = sorted(set(keep) & set(spec.columns()))
    if clash:
        raise ValueError(f"Pass-through column(s) {clash} clash with output columns; rename "
                         "them or leave them out of `keep`.")

    partial = dest.parent / f".{dest.name}.partial"
    manifest = {
        "format": _MANIFEST_FORMAT, "format_version": 1, "source": reader.fingerprint(),
        "fit": _fit_digest(posterior), "inputs": reader.inputs, "keep": keep,
        "spec": spec.to_dict(), "batch_rows": batch_rows,
        "key": None if key is None else np.asarray(jax.random.key_data(key)).tolist(),
        "parts": 0, "rows": 0,
    }
    done_parts, done_rows = 0, 0
    if resume and (partial / _MANIFEST).is_file():
        try:
            found = json.loads((partial / _MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            found = {}
        differs = [name for name in manifest if name not in ("parts", "rows")
                   and found.get(name) != manifest[name]]
        if differs:
            raise ValueError(
                f"The partial run in {partial} was made with other {differs}; it cannot be "
                "resumed with these settings. Pass resume=False (--no-resume) to start over.")
        done_parts, done_rows = int(found["parts"]), int(found["rows"])
    else:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        _write_json(partial / _MANIFEST, manifest)

    started = time.perf_counter()
    rows = done_rows
    part_paths = [partial / f"part-{index:06d}.parquet" for index in range(done_parts)]
    missing_parts = [path for path in part_paths if not path.is_file()]
    if missing_parts:
        raise ValueError(f"The partial run in {partial} lacks {missing_parts[0].name}; pass "
                         "resume=False to start over.")
    def numbered_batches() -> Iterator[tuple[pa.Table, np.ndarray]]:
        first_row = done_rows
        for table in reader.batches(batch_rows, skip_rows=done_rows):
            yield table, reader.features(table, first_row)
            first_row += table.num_rows

    def write_part(out: pa.Table, path: Path, parts: int, rows_done: int) -> None:
        temporary = path.with_name(path.name + ".tmp")
        pa.parquet.write_table(out, temporary)
        os.replace(temporary, path)
        _write_json(partial / _MANIFEST, {**manifest, "parts": parts, "rows": rows_done})

    # Reading (and checking) the next batch and writing the last one overlap with the
    # predictive of this one: pyarrow and XLA release the GIL, so the file work hides behind
    # the arithmetic. One part is written at a time, in order, so the manifest never counts a
    # part that is not on disk.
    try:
        with progress_bar(reader.num_rows, desc="predict", unit="row", progress=progress,
                          initial=done_rows) as bar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="bayes_mdn-write") as writer:
            pending: Future | None = None
            for table, X in _prefetched(numbered_batches()):
                index = len(part_paths)
                batch_key = None if key is None else jax.random.fold_in(key, index)
                columns = predict_columns(posterior, X, spec, key=batch_key,
                                          max_elements=max_elements)
                out = _arrow_table(pa, table.select(keep), columns)
                if pending is not None:
                    pending.result()  # surfaces a failed write before queueing the next
                path = partial / f"part-{index:06d}.parquet"
                part_paths.append(path)
                rows += table.num_rows
                pending = writer.submit(write_part, out, path, len(part_paths), rows)
                bar.update(table.num_rows)
            if pending is not None:
                pending.result()
        if rows == 0:
            raise ValueError(f"{source} has no data rows.")
        metadata = {b"bayes_mdn": json.dumps({"spec": spec.to_dict(), "inputs": reader.inputs,
                                              "keep": keep}).encode()}
        _assemble(pa, part_paths, dest, fmt, metadata)
    except (ValueError, TypeError):
        shutil.rmtree(partial, ignore_errors=True)  # bad input: resuming cannot help
        raise
    shutil.rmtree(partial, ignore_errors=True)
    return {"path": str(dest), "num_rows": rows, "columns": [*keep, *spec.columns()],
            "seconds": time.perf_counter() - started, "resumed_rows": done_rows}
