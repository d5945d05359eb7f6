"""The ``bayes-mdn`` command line.

* ``bayes-mdn demo``: the 2016 seed post's experiment end to end;
* ``bayes-mdn fit DATA --y COL``: fit an MDN (any method) to a CSV or Parquet file;
* ``bayes-mdn predict FIT DATA``: stream a CSV or Parquet file of any size through a fit
  (:func:`bayes_mdn.tables.predict_table`), keeping id columns, to Parquet or CSV;
* ``bayes-mdn evaluate FIT DATA``: scores (log score, CRPS, coverage, PIT tests, RMSE) as JSON,
  calibration and conditional-density figures;
* ``bayes-mdn info FIT``: what a saved fit is (spec, method, data shapes, diagnostics).

Errors in user input (bad files, unknown columns, bad option values) print one line and exit
with status 2 (no traceback). Python warnings (e.g. about suspicious data) are printed on
standard error, one line each. Progress bars are on in a terminal; ``--no-progress`` or
``BAYES_MDN_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

__all__ = ["main"]

DEMO_METHODS = ("map",)
METHODS = ("map", "ensemble", "svi", "laplace", "nuts", "sgmcmc")
FAMILIES = ("normal", "studentt", "laplace", "lognormal", "gamma", "beta", "poisson",
            "negative_binomial", "multivariate_normal")
ACTIVATIONS = ("tanh", "relu", "elu", "gelu", "silu", "softplus", "sigmoid")
PRIORS = ("fan_in_normal", "normal", "laplace", "student_t", "horseshoe", "flat")
GUIDES = ("normal", "lowrank", "mvn", "flow")
OUTPUT_CHOICES = ("mean", "median", "quantiles", "interval", "std", "modes", "log_density",
                  "mixture", "samples")


def _demo_prior():
    from bayes_mdn import priors

    # Wide fan-in priors let the network bend to the sine; a tighter prior on the scale head
    # stops components from shrinking onto a handful of training points (MAP's overfitting).
    return {"default": priors.FanInNormal(2.0), "scale": priors.FanInNormal(0.5)}


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


# --------------------------------------------------------------------------- demo
def _demo(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bayes_mdn as bm
    from bayes_mdn import plotting

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    data_key, fit_key, sample_key = jax.random.split(key, 3)
    X, y, X_test, y_test = bm.datasets.inverse_sine(
        data_key, num_samples=args.num_samples, train_fraction=args.train_fraction
    )
    print(f"bayes-mdn demo: inverse-sine data, {len(X)} train / {len(X_test)} test points; "
          "MDN with K = 20 Normal components, hidden layers (15, 15), tanh, "
          f"fan-in Normal priors; method = {args.method}", flush=True)
    optimal_test = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    optimal_train = float(np.mean(bm.datasets.inverse_sine_log_prob(X, y)))

    model = bm.MDN(num_components=20, hidden_sizes=(15, 15), activation="tanh", prior=_demo_prior())
    started = time.perf_counter()
    posterior = model.fit(X, y, key=fit_key, method=args.method, num_steps=args.num_steps,
                          ema_decay=0.995, X_test=X_test, y_test=y_test, progress=True)
    fit_seconds = time.perf_counter() - started

    train_ll = float(np.mean(posterior.predictive(X).log_prob(y)))
    predictive = posterior.predictive(X_test)
    test_ll = float(np.mean(predictive.log_prob(y_test)))
    lower, upper = predictive.quantiles(np.array([0.05, 0.95]))[:, :, 0]
    coverage = float(np.mean((y_test[:, 0] >= lower) & (y_test[:, 0] <= upper)))
    metrics = {
        "method": args.method,
        "num_train": len(X),
        "num_test": len(X_test),
        "train_log_likelihood": train_ll,
        "test_log_likelihood": test_ll,
        "optimal_log_likelihood": optimal_test,
        "optimal_train_log_likelihood": optimal_train,
        "test_gap_to_optimal": optimal_test - test_ll,
        "coverage_90": coverage,
        "fit_seconds": fit_seconds,
        "num_steps": args.num_steps,
        "seed": args.seed,
    }
    print(f"\n{'':24s}{'train':>10s}{'test':>10s}")
    print(f"{'log-likelihood / point':24s}{train_ll:10.4f}{test_ll:10.4f}")
    print(f"{'Bayes-optimal':24s}{optimal_train:10.4f}{optimal_test:10.4f}")
    print(f"90 % interval coverage on test: {coverage:.3f}; fit took {fit_seconds:.1f} s")

    figures = {
        "training_curves.png": lambda ax: plotting.plot_training_curves(
            posterior, optimal=optimal_test, ax=ax),
        "conditional_density.png": lambda ax: plotting.plot_conditional_density(
            posterior, x_range=(-15, 15), y_range=(-11.5, 11.5), data=(X, y), ax=ax),
        "predictive_samples.png": lambda ax: plotting.plot_predictive_samples(
            posterior, X_test[:4000], key=sample_key, ax=ax),
    }
    for name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw(ax)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, index in zip(axes, (0, 1, 2), strict=True):
        plotting.plot_mixture(predictive, index, true_value=float(y_test[index, 0]), ax=ax)
        ax.set_title(f"x = {float(X_test[index, 0]):.2f}")
    fig.tight_layout()
    fig.savefig(out / "mixtures.png", dpi=110)
    plt.close(fig)
    posterior.save(out / "demo.bmdn")
    with open(out / "metrics.json", "w") as stream:
        json.dump(metrics, stream, indent=2)
    print(f"wrote figures, metrics.json and demo.bmdn to {out}/")
    return metrics


# --------------------------------------------------------------------------- reading tables
def _is_parquet(path: str) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) == b"PAR1"


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    """Header + rows of strings; any malformation is a UsageError naming the line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream, strict=True))
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text CSV file (nor Parquet)") from None
    except csv.Error as error:
        raise UsageError(f"{path} is not a readable CSV file: {error}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise UsageError(f"{path} is empty; expected a header line and data rows")
    header = [name.strip() for name in rows[0]]
    if len(rows) < 2:
        raise UsageError(f"{path} has a header but no data rows")
    blank = [index + 1 for index, name in enumerate(header) if not name]
    if blank:
        raise UsageError(f"{path} line 1: column(s) {blank} have no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UsageError(f"{path} line 1: repeated column name(s) {repeated}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"{path} line {line}: {len(row)} fields, expected {len(header)}")
    return header, rows[1:]


class _Table:
    """A CSV or Parquet file held in memory (for fit and evaluate); columns parsed on
    request, so that non-numeric columns that are not used (e.g. a string id) are fine."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}")
        self.path = path
        self.parquet = os.path.getsize(path) > 0 and _is_parquet(path)
        if self.parquet:
            import pyarrow.parquet as pq

            try:
                self.table = pq.read_table(path)
            except Exception as error:  # pyarrow raises several types for broken files
                raise UsageError(f"{path} is not a readable Parquet file (truncated or "
                                 f"corrupted?): {_one_line(error)}") from None
            self.header = list(self.table.column_names)
            if self.table.num_rows == 0:
                raise UsageError(f"{path} has no data rows")
        else:
            self.header, self.rows = _read_csv(path)

    def names(self, wanted: Sequence[str], option: str) -> list[str]:
        missing = [name for name in wanted if name not in self.header]
        if missing:
            raise UsageError(f"{self.path} has no column(s) {missing}; columns are "
                             f"{self.header} ({option})")
        return list(wanted)

    def numeric(self, names: Sequence[str]) -> np.ndarray:
        """(N, len(names)) float64; a non-numeric, missing or non-finite cell is an error."""
        if self.parquet:
            import pyarrow as pa

            columns = []
            for name in names:
                column = self.table.column(name)
                if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                    raise UsageError(f"{self.path}: column {name!r} is not numeric (type "
                                     f"{column.type})")
                if column.null_count:
                    raise UsageError(f"{self.path}: column {name!r} has {column.null_count} "
                                     "missing values (drop or impute missing values first)")
                values = np.asarray(column.to_numpy(zero_copy_only=False), np.float64)
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    raise UsageError(f"{self.path}: column {name!r} row {bad[0] + 1}: not a "
                                     f"finite number: {values[bad[0]]}")
                columns.append(values)
            return np.column_stack(columns)
        indices = [self.header.index(name) for name in names]
        values = np.empty((len(self.rows), len(indices)))
        for line, row in enumerate(self.rows, start=2):
            for j, column in enumerate(indices):
                cell = row[column]
                try:
                    value = float(cell)
                except ValueError:
                    raise UsageError(f"{self.path} line {line}, column {self.header[column]!r}: "
                                     f"not a number: {cell!r}") from None
                if not np.isfinite(value):
                    raise UsageError(
                        f"{self.path} line {line}, column {self.header[column]!r}: not a finite "
                        f"number: {cell!r} (drop or impute missing values first)")
                values[line - 2, j] = value
        return values


def _names(values: Sequence[str] | None) -> list[str]:
    """Column names from ``--opt a b`` and/or ``--opt a,b``."""
    names: list[str] = []
    for value in values or ():
        names += [name.strip() for name in value.split(",") if name.strip()]
    return names


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated numbers such as 0.05,0.5,0.95; "
                         f"got {text!r}") from None


def _grid(text: str) -> np.ndarray:
    """``start:stop:num`` (numpy.linspace) or comma-separated values."""
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            if len(parts) != 3 or num < 2:
                raise ValueError
        except (ValueError, IndexError):
            raise UsageError(f"--grid must be start:stop:num (num >= 2), e.g. 0:3:61, or "
                             f"comma-separated values; got {text!r}") from None
        return np.linspace(start, stop, num)
    return np.asarray(_floats(text, "--grid"))


def _hidden_sizes(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        return tuple(int(width) for width in text.split(",") if width.strip())
    except ValueError:
        raise UsageError(f"--hidden must be comma-separated layer widths such as 32,32; got "
                         f"{text!r}") from None


def _progress(args: argparse.Namespace) -> bool:
    from bayes_mdn._progress import show_progress

    return show_progress(args.progress)


# --------------------------------------------------------------------------- fit
def _prior(name: str, scale: float | None) -> Any:
    from bayes_mdn import priors

    if scale is not None and not scale > 0:
        raise UsageError(f"--prior-scale must be positive; got {scale}")
    if name == "flat":
        if scale is not None:
            raise UsageError("--prior-scale does not apply to --prior flat")
        return priors.Flat()
    if name == "horseshoe":
        return priors.Horseshoe() if scale is None else priors.Horseshoe(global_scale=scale)
    kind = {"fan_in_normal": priors.FanInNormal, "normal": priors.Normal,
            "laplace": priors.Laplace, "student_t": priors.StudentT}[name]
    return kind() if scale is None else kind(scale=scale)


#: Method options of the command line: (option name, dest, fit keyword).
_METHOD_OPTIONS = (("--num-steps", "num_steps", "num_steps"),
                   ("--learning-rate", "learning_rate", "learning_rate"),
                   ("--num-members", "num_members", "num_members"),
                   ("--guide", "guide", "guide"),
                   ("--num-chains", "num_chains", "num_chains"),
                   ("--num-warmup", "num_warmup", "num_warmup"),
                   ("--num-samples", "num_samples", "num_samples"),
                   ("--num-draws", "num_draws", "num_draws"),
                   ("--hessian", "hessian", "hessian"),
                   ("--num-cycles", "num_cycles", "num_cycles"),
                   ("--batch-size", "batch_size", "batch_size"),
                   ("--step-size", "step_size", "step_size"),
                   ("--validation", "validation", "validation"),
                   ("--patience", "patience", "patience"),
                   ("--no-refit", "refit", "refit"))


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    from bayes_mdn.inference import METHODS as REGISTRY

    options_type = REGISTRY[args.method][0]
    fields = set(options_type.__dataclass_fields__)
    options: dict[str, Any] = {}
    for flag, dest, keyword in _METHOD_OPTIONS:
        value = getattr(args, dest)
        if value is None:
            continue
        if keyword not in fields:
            if keyword == "validation":
                raise UsageError(f"--validation is not supported by this version of bayes_mdn "
                                 f"for --method {args.method} (the fit has no `validation` "
                                 "option); hold out rows yourself and use bayes-mdn evaluate")
            raise UsageError(f"{flag} does not apply to --method {args.method}")
        options[keyword] = value
    if "validation" in options and not 0 < options["validation"] < 1:
        raise UsageError(f"--validation must be a fraction strictly between 0 and 1, e.g. 0.1; "
                         f"got {options['validation']}")
    if "progress" in fields:
        options["progress"] = _progress(args)
    options_type(**options)  # option values checked now, before the data are read
    return options


def _fit(args: argparse.Namespace) -> None:
    import jax

    import bayes_mdn as bm

    if Path(args.out).is_dir():  # before the fit, not after it
        raise UsageError(f"--out {args.out} is a directory; pass a file path such as "
                         "fit.bmdn")
    options = _fit_options(args)  # option errors before reading the data
    hidden = _hidden_sizes(args.hidden_sizes)
    prior = _prior(args.prior, args.prior_scale)
    table = _Table(args.data)
    y_names = table.names(_names(args.y), "--y")
    if not y_names:
        raise UsageError("--y names no column")
    drop = _names(args.drop) if args.drop is not None else (
        ["id"] if "id" in table.header else [])
    if args.x:
        x_names = table.names(_names(args.x), "--x")
    else:
        table.names(drop, "--drop")
        x_names = [name for name in table.header if name not in y_names and name not in drop]
    if not x_names:
        raise UsageError("no input columns left; name them with --x")
    overlap = sorted(set(x_names) & set(y_names))
    if overlap:
        raise UsageError(f"column(s) {overlap} are both inputs (--x) and targets (--y)")
    X, y = table.numeric(x_names), table.numeric(y_names)
    model = bm.MDN(num_components=args.num_components, hidden_sizes=hidden,
                   activation=args.activation, family=args.family, prior=prior)
    print(f"bayes-mdn fit: {X.shape[0]} rows, inputs {x_names}, targets {y_names}; "
          f"method {args.method}", flush=True)
    posterior = model.fit(X, y, key=jax.random.key(args.seed), method=args.method, **options)
    # The column names travel inside the saved file (Posterior.info), as for pandas input.
    posterior = dataclasses.replace(posterior, info={
        **posterior.info, "feature_names": x_names, "target_names": y_names,
        "source": {"path": os.path.abspath(args.data), "num_rows": int(X.shape[0])}})
    posterior.save(args.out)
    print(f"saved {args.out}")


# --------------------------------------------------------------------------- predict
def _default_keep(args: argparse.Namespace) -> list[str]:
    """--keep as given; by default ``id`` when the file has such a column."""
    if args.keep is not None:
        return _names(args.keep)
    if not os.path.isfile(args.data) or os.path.getsize(args.data) == 0:
        return []  # the reader reports the problem
    if _is_parquet(args.data):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(args.data).names
        except Exception:  # the reader reports the problem
            return []
    else:
        try:
            with open(args.data, newline="", encoding="utf-8-sig") as stream:
                names = [name.strip() for name in next(csv.reader(stream), [])]
        except (UnicodeDecodeError, csv.Error):
            return []
    return ["id"] if "id" in names else []


def _predict(args: argparse.Namespace) -> None:
    import jax

    import bayes_mdn as bm
    from bayes_mdn.tables import predict_table

    posterior = bm.load(args.model)
    if _qp_output(args):
        _predict_qp(args, posterior)
        return
    outputs = _names([args.outputs or "mean,quantiles"])
    unknown = [name for name in outputs if name not in OUTPUT_CHOICES]
    if unknown:
        raise UsageError(f"--outputs: unknown summary {unknown}; choose from "
                         f"{list(OUTPUT_CHOICES)}")
    if args.reduce is not None and "mixture" not in outputs:
        outputs.append("mixture")
    if args.grid is not None and "log_density" not in outputs:
        outputs.append("log_density")
    options: dict[str, Any] = {
        "outputs": outputs, "quantiles": _floats(args.quantiles, "--quantiles"),
        "interval": args.interval, "num_modes": args.num_modes,
        "num_samples": args.num_samples, "batch_rows": args.batch_rows,
        "format": args.format, "resume": args.resume, "progress": args.progress,
        "keep": _default_keep(args),
    }
    if args.reduce is not None:
        options["num_components"] = args.reduce
    if args.grid is not None:
        options["grid"] = _grid(args.grid)
    if "samples" in outputs:
        options["key"] = jax.random.key(args.seed)
    if args.x:
        options["inputs"] = _names(args.x)
    else:
        x_names = posterior.info.get("feature_names")
        columns_file = str(args.model) + ".columns.json"  # written by bayes_mdn 0.1.0 fits
        if x_names is None and os.path.isfile(columns_file):
            with open(columns_file) as stream:
                options["inputs"] = json.load(stream)["x"]
    report = predict_table(posterior, args.data, args.out, **options)
    print(f"wrote {report['num_rows']} predictions ({len(report['columns'])} columns) to "
          f"{args.out} in {report['seconds']:.1f} s")


def _qp_output(args: argparse.Namespace) -> bool:
    """--format qp, or no --format and --out named *.hdf5 (or *.h5, *.hdf)."""
    if args.format is not None:
        return args.format == "qp"
    return Path(args.out).suffix.lower() in (".hdf5", ".h5", ".hdf")


def _predict_qp(args: argparse.Namespace, posterior: Any) -> None:
    """The qp file of the compressed predictives (:func:`bayes_mdn.qp.predict_qp`)."""
    for option, value in (("--outputs", args.outputs), ("--grid", args.grid)):
        if value is not None:
            raise UsageError(f"{option} does not apply to a qp file (it holds the PDFs as "
                             "Gaussian mixtures; set their size with --reduce); write "
                             "*.parquet or *.csv for other summaries")
    try:
        from bayes_mdn.qp import predict_qp
    except ImportError as error:
        raise UsageError(f"--format qp: {_one_line(error)}") from None
    options: dict[str, Any] = {
        "keep": _default_keep(args),
        "num_components": 10 if args.reduce is None else args.reduce,
        "batch_rows": args.batch_rows, "progress": args.progress, "resume": args.resume}
    if args.x:
        options["inputs"] = _names(args.x)
    report = predict_qp(posterior, args.data, args.out, **options)
    print(f"wrote {report['num_rows']} PDFs ({options['num_components']}-component Gaussian "
          f"mixtures, qp) to {args.out} in {report['seconds']:.1f} s")


# --------------------------------------------------------------------------- evaluate
def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    import bayes_mdn as bm
    from bayes_mdn import metrics
    from bayes_mdn._progress import progress_bar

    posterior = bm.load(args.model)
    table = _Table(args.data)
    x_names = _names(args.x) or posterior.info.get("feature_names")
    y_names = _names(args.y) or posterior.info.get("target_names")
    if not x_names:
        raise UsageError("the fit records no input column names; name them with --x")
    if not y_names:
        raise UsageError("the fit records no target column names; name them with --y")
    table.names(x_names, "--x")
    table.names(y_names, "--y")
    if len(x_names) != posterior.num_features:
        raise UsageError(f"--x names {len(x_names)} columns; the fit has "
                         f"{posterior.num_features} inputs")
    if len(y_names) != posterior.num_outputs:
        raise UsageError(f"--y names {len(y_names)} columns; the fit has "
                         f"{posterior.num_outputs} outputs")
    levels = np.asarray(_floats(args.levels, "--levels"))
    if levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise UsageError(f"--levels must lie strictly between 0 and 1; got {args.levels!r}")
    X, y = table.numeric(x_names), table.numeric(y_names)
    num_rows, num_outputs = y.shape
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file; pass a folder for the metrics and "
                         "figures")
    key = jax.random.key(args.seed)
    bounds = np.concatenate([(1 - levels) / 2, (1 + levels) / 2])
    log_density = np.empty(num_rows)
    crps = np.empty((num_rows, num_outputs))
    pit = np.empty((num_rows, num_outputs))
    means = np.empty((num_rows, num_outputs))
    medians = np.empty((num_rows, num_outputs))
    inside = np.empty((levels.size, num_rows, num_outputs), bool)
    block = args.batch_rows
    # Row blocks: a progress bar and memory bounded by the block, not by the test set.
    with progress_bar(num_rows, desc="evaluate", unit="row", progress=args.progress) as bar:
        for index, start in enumerate(range(0, num_rows, block)):
            rows = slice(start, min(start + block, num_rows))
            pred = posterior.predictive(X[rows])
            block_key = jax.random.fold_in(key, index)
            crps_key, pit_key = jax.random.split(block_key)
            log_density[rows] = metrics.log_score(pred, y[rows], pointwise=True)
            crps[rows] = np.reshape(metrics.crps(pred, y[rows], pointwise=True, key=crps_key),
                                    (-1, num_outputs))
            pit[rows] = np.reshape(metrics.pit(pred, y[rows], key=pit_key), (-1, num_outputs))
            quantiles = pred.quantiles(np.concatenate([bounds, [0.5]]))
            medians[rows] = quantiles[-1]
            lower, upper = quantiles[: levels.size], quantiles[levels.size: 2 * levels.size]
            inside[:, rows] = (y[rows] >= lower) & (y[rows] <= upper)
            try:
                means[rows] = pred.mean()
            except ValueError:  # a family without a finite mean: RMSE of the median
                means[rows] = medians[rows]
            bar.update(rows.stop - rows.start)
    statistic, pvalue = metrics.ks_uniform(pit)
    result: dict[str, Any] = {
        "fit": str(args.model), "data": str(args.data), "num_points": num_rows,
        "targets": list(y_names),
        "log_score": float(np.mean(log_density)),
        "crps": crps.mean(axis=0).tolist(),
        "rmse": np.sqrt(np.mean((means - y) ** 2, axis=0)).tolist(),
        "mae_median": np.mean(np.abs(medians - y), axis=0).tolist(),
        "coverage": {f"{level:g}": float(inside[i].mean()) for i, level in enumerate(levels)},
        "coverage_standard_error": {f"{level:g}": float(np.sqrt(level * (1 - level) / num_rows))
                                    for level in levels},
        "pit_ks_statistic": statistic.tolist(), "pit_ks_pvalue": pvalue.tolist(),
    }
    try:
        from scipy import stats

        tests = [stats.cramervonmises(pit[:, d], "uniform") for d in range(num_outputs)]
        result["pit_cvm_statistic"] = [float(test.statistic) for test in tests]
        result["pit_cvm_pvalue"] = [float(test.pvalue) for test in tests]
    except ImportError:  # SciPy is optional: the KS test needs none
        pass
    if args.figures:
        out.mkdir(parents=True, exist_ok=True)
        result["figures"] = _evaluation_figures(posterior, X, y, pit, out, x_names, y_names)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _evaluation_figures(posterior, X: np.ndarray, y: np.ndarray, pit: np.ndarray, out: Path,
                        x_names: list[str], y_names: list[str]) -> list[str]:
    """calibration.png (PIT histogram + reliability curve) and conditional_density.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayes_mdn import plotting

    written = []
    subset = np.random.default_rng(0).permutation(len(X))[:5000]
    pred = posterior.predictive(X[subset])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plotting.plot_pit(pit[:, 0], ax=axes[0])
    plotting.plot_coverage(pred, y[subset], ax=axes[1])
    axes[0].set_title(f"PIT of {y_names[0]} ({len(X)} points)")
    axes[1].set_title(f"Central-interval coverage ({len(subset)} points)")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)
    written.append(str(out / "calibration.png"))
    if posterior.num_outputs != 1:
        return written
    if posterior.num_features == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        pad_x, pad_y = 0.05 * np.ptp(X[:, 0]), 0.05 * np.ptp(y[:, 0])
        plotting.plot_conditional_density(
            posterior, x_range=(X[:, 0].min() - pad_x, X[:, 0].max() + pad_x),
            y_range=(y[:, 0].min() - pad_y, y[:, 0].max() + pad_y), data=(X, y), ax=ax)
    else:
        # Several inputs: the conditional density of six test objects, spread over y.
        order = np.argsort(y[:, 0])
        picks = order[np.linspace(0, len(order) - 1, 6).round().astype(int)]
        fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
        chosen = posterior.predictive(X[picks])
        for panel, (ax, row) in enumerate(zip(axes.ravel(), picks, strict=True)):
            plotting.plot_mixture(chosen, panel, true_value=float(y[row, 0]), ax=ax)
            ax.set_title(f"row {row + 1}: {y_names[0]} = {y[row, 0]:.3g}")
            ax.set_xlabel(y_names[0])
    fig.tight_layout()
    fig.savefig(out / "conditional_density.png", dpi=110)
    plt.close(fig)
    written.append(str(out / "conditional_density.png"))
    return written


# --------------------------------------------------------------------------- info
#: ``Posterior.info`` entries reported on their own (or too long to print) by ``info``.
_NOT_OPTIONS = ("fit_seconds", "num_rows", "reference_X", "reference_y", "feature_names",
                "target_names", "source")


def _info(args: argparse.Namespace) -> dict[str, Any]:
    import bayes_mdn as bm

    posterior = bm.load(args.model)
    info = dict(posterior.info)
    model = posterior.model
    report: dict[str, Any] = {
        "file": str(args.model),
        "method": posterior.method,
        "model": {"num_components": model.num_components,
                  "hidden_sizes": list(model.hidden_sizes), "activation": model.activation,
                  "family": model.family.name,
                  "num_parameters": model.num_parameters(posterior.num_features,
                                                         posterior.num_outputs)},
        "num_features": posterior.num_features, "num_outputs": posterior.num_outputs,
        "feature_names": info.get("feature_names"), "target_names": info.get("target_names"),
        "num_chains": posterior.num_chains, "num_draws": posterior.num_draws,
        "fit_seconds": info.get("fit_seconds"),
        "training_rows": (info.get("source") or {}).get("num_rows", info.get("num_rows")),
        "options": {name: value for name, value in info.items() if name not in _NOT_OPTIONS},
        "source": info.get("source"),
    }
    if args.diagnostics:
        summary = posterior.summary()
        report["diagnostics"] = {name: value for name, value in summary.to_dict().items()
                                 if name not in report}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for name, value in report.items():
            if isinstance(value, dict):
                print(f"{name}:")
                for inner, item in value.items():
                    print(f"  {inner}: {item}")
            else:
                print(f"{name}: {value}")
    return report


# --------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show progress bars (default: only in a terminal, and not when "
                             "BAYES_MDN_PROGRESS=0)")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="bayes-mdn", description="Bayesian Mixture Density Networks on NumPyro and JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="run the 2016 seed experiment end to end",
                               formatter_class=formatter)
    demo.add_argument("--out", default="bayes_mdn_demo", help="output folder")
    demo.add_argument("--method", default="map", choices=DEMO_METHODS, help="fitting method")
    demo.add_argument("--num-steps", type=int, default=2000, help="optimisation steps")
    demo.add_argument("--num-samples", type=int, default=40_000,
                      help="points generated (train + test)")
    demo.add_argument("--train-fraction", type=float, default=0.1,
                      help="fraction of the points used for training")
    demo.add_argument("--seed", type=int, default=0, help="random seed")

    fit = commands.add_parser(
        "fit", formatter_class=formatter, help="fit an MDN to a CSV or Parquet file",
        description="Fit an MDN to the rows of a CSV (header line) or Parquet file and save "
                    "it (arrays + JSON, never pickle). Options that do not apply to the "
                    "chosen --method are errors.")
    fit.add_argument("data", help="training data: a CSV file with a header line, or Parquet")
    fit.add_argument("--y", nargs="+", required=True, metavar="COL",
                     help="target column(s), space- or comma-separated")
    fit.add_argument("--x", nargs="+", metavar="COL",
                     help="input column(s) (default: every column except --y and --drop)")
    fit.add_argument("--drop", nargs="*", metavar="COL",
                     help="columns that are not inputs when --x is not given (default: 'id' "
                          "when the file has it)")
    fit.add_argument("--out", default="fit.bmdn", help="where to save the fit")
    fit.add_argument("--method", default="map", choices=METHODS,
                     help="map: point estimate; ensemble: several MAP fits; svi: variational; "
                          "laplace: Gaussian at the MAP; nuts: MCMC")
    fit.add_argument("--num-components", "--components", type=int, default=5,
                     help="K, mixture components")
    fit.add_argument("--hidden-sizes", "--hidden", default="32,32",
                     help="hidden layer widths, comma-separated ('none' for no hidden layer)")
    fit.add_argument("--activation", default="tanh", choices=ACTIVATIONS,
                     help="hidden-layer activation")
    fit.add_argument("--family", default="normal", choices=FAMILIES,
                     help="component distribution")
    fit.add_argument("--prior", default="fan_in_normal", choices=PRIORS,
                     help="prior on every weight (flat = maximum likelihood; map/ensemble only)")
    fit.add_argument("--prior-scale", type=float, default=None,
                     help="the prior's scale (default: the prior's own, 1.0)")
    fit.add_argument("--validation", type=float, default=None, metavar="FRACTION",
                     help="hold out this fraction of the rows: num-steps becomes a maximum, "
                          "the fit stops when their log-likelihood stops improving, then "
                          "refits on every row for the best step count (default: none)")
    fit.add_argument("--patience", type=int, default=None,
                     help="with --validation: evaluations without improvement before "
                          "stopping (default 20)")
    fit.add_argument("--no-refit", dest="refit", action="store_const", const=False,
                     default=None,
                     help="with --validation: keep the best iterate of the fit on the other "
                          "rows instead of refitting on every row")
    fit.add_argument("--num-steps", type=int, default=None,
                     help="optimisation steps (map, ensemble, svi, laplace; default 2000)")
    fit.add_argument("--learning-rate", type=float, default=None,
                     help="Adam step size (default: the method's)")
    fit.add_argument("--num-members", type=int, default=None,
                     help="ensemble members (ensemble; default 8)")
    fit.add_argument("--guide", default=None, choices=GUIDES,
                     help="variational family (svi; default normal)")
    fit.add_argument("--num-chains", type=int, default=None,
                     help="chains (nuts, sgmcmc; default 4)")
    fit.add_argument("--num-warmup", type=int, default=None,
                     help="warm-up steps per chain (nuts; default 300)")
    fit.add_argument("--num-samples", type=int, default=None,
                     help="draws per chain (nuts; default 200)")
    fit.add_argument("--num-cycles", type=int, default=None,
                     help="step-size cycles per chain (sgmcmc; default 4)")
    fit.add_argument("--batch-size", type=int, default=None,
                     help="minibatch rows per gradient (sgmcmc; default: every row)")
    fit.add_argument("--step-size", type=float, default=None,
                     help="peak step size of each cycle (sgmcmc; default 0.01)")
    fit.add_argument("--num-draws", type=int, default=None,
                     help="posterior draws kept (svi, laplace; default 1000)")
    fit.add_argument("--hessian", default=None, choices=("exact", "fisher"),
                     help="curvature of the Laplace approximation (laplace; default exact; "
                          "fisher is positive definite even before MAP has converged)")
    fit.add_argument("--seed", type=int, default=0, help="random seed")
    _add_progress(fit)

    predict = commands.add_parser(
        "predict", formatter_class=formatter,
        help="predict a CSV or Parquet file of any size from a saved fit",
        description="Stream the rows of DATA through a saved fit in batches (memory does not "
                    "grow with the file) and write the chosen summaries, after the --keep "
                    "columns, to Parquet or CSV. The output appears only when complete; an "
                    "interrupted run continues with --resume.")
    predict.add_argument("model", help="a fit saved by bayes-mdn fit (.bmdn)")
    predict.add_argument("data", help="inputs: a CSV file with a header line, or Parquet")
    predict.add_argument("--out", default="predictions.parquet",
                         help="output file (*.parquet, *.csv, or *.hdf5 for a qp file)")
    predict.add_argument("--format", choices=("parquet", "csv", "qp"), default=None,
                         help="output format (default: from --out's suffix); qp: the LSST "
                              "DESC qp format (needs qp-prob), each PDF a Gaussian mixture "
                              "of --reduce components (default 10), the --keep columns as "
                              "its ancillary data")
    predict.add_argument("--x", nargs="+", metavar="COL",
                         help="input columns in the fit's order (default: the names recorded "
                              "at fit time)")
    predict.add_argument("--keep", nargs="*", metavar="COL",
                         help="columns copied to the output, e.g. an object id (default: 'id' "
                              "when the file has it)")
    predict.add_argument("--outputs", default=None,
                         help=f"comma-separated summaries from {', '.join(OUTPUT_CHOICES)} "
                              "(default: mean,quantiles; not with --format qp)")
    predict.add_argument("--quantiles", default="0.05,0.5,0.95",
                         help="levels of the quantiles output")
    predict.add_argument("--interval", type=float, default=0.9,
                         help="probability of the interval output's central interval")
    predict.add_argument("--grid", default=None,
                         help="y values for the log_density output: start:stop:num or a "
                              "comma-separated list (adds log_density; write --grid=-1:1:21 "
                              "when it starts with a minus sign)")
    predict.add_argument("--reduce", type=int, default=None, metavar="K",
                         help="compress each predictive to K components and write their "
                              "weights, locations and scales (adds mixture; default 5 when "
                              "mixture is asked for)")
    predict.add_argument("--num-modes", type=int, default=3, help="columns of the modes output")
    predict.add_argument("--num-samples", type=int, default=10,
                         help="samples per row of the samples output")
    predict.add_argument("--seed", type=int, default=0, help="random seed of the samples output")
    predict.add_argument("--batch-rows", type=int, default=2**17,
                         help="rows per batch: memory grows with it, not with the file")
    predict.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                         help="continue an interrupted run with the same settings")
    _add_progress(predict)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=formatter,
        help="score a saved fit on labelled data: metrics JSON and figures",
        description="Log score, CRPS, central-interval coverage, PIT uniformity tests (KS, "
                    "Cramer-von Mises), RMSE of the mean and MAE of the median on labelled "
                    "rows; writes metrics.json, calibration.png and conditional_density.png "
                    "to --out and prints the metrics.")
    evaluate.add_argument("model", help="a fit saved by bayes-mdn fit (.bmdn)")
    evaluate.add_argument("data", help="labelled data: CSV with a header line, or Parquet")
    evaluate.add_argument("--y", nargs="+", metavar="COL",
                          help="target column(s) (default: the names recorded at fit time)")
    evaluate.add_argument("--x", nargs="+", metavar="COL",
                          help="input columns (default: the names recorded at fit time)")
    evaluate.add_argument("--out", default="evaluation", help="folder for metrics and figures")
    evaluate.add_argument("--levels", default="0.5,0.68,0.9,0.95",
                          help="central-interval levels for coverage")
    evaluate.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                          help="write the calibration and conditional-density figures")
    evaluate.add_argument("--batch-rows", type=int, default=8192,
                          help="rows evaluated at once")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="random seed (sampled CRPS, randomised PIT of count families)")
    _add_progress(evaluate)

    info = commands.add_parser("info", formatter_class=formatter,
                               help="describe a saved fit: spec, method, shapes, diagnostics")
    info.add_argument("model", help="a fit saved by bayes-mdn fit (.bmdn)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=True,
                      help="include the diagnostics summary (R-hat, ESS, collapse, ...)")
    return parser


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("batch_rows", "num_modes"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    if getattr(args, "command", None) == "predict" and args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1; got {args.num_samples}")


def _show_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        text = _one_line(message) if isinstance(message, BaseException) else " ".join(
            str(message).split())
        print(f"bayes-mdn {command}: warning: {category.__name__}: {text}", file=sys.stderr,
              flush=True)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    handlers = {"demo": _demo, "fit": _fit, "predict": _predict, "evaluate": _evaluate,
                "info": _info}
    with warnings.catch_warnings():
        # Every user-facing warning (data problems, convergence) reaches stderr, one line.
        warnings.filterwarnings("default", category=UserWarning)
        warnings.showwarning = _show_warning(args.command)
        try:
            _check_counts(args)
            handlers[args.command](args)
        except (UsageError, ValueError, TypeError, OSError, ImportError) as error:
            print(f"bayes-mdn {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        except FloatingPointError as error:  # a fit that diverged: not the input's form
            print(f"bayes-mdn {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"bayes-mdn {args.command}: interrupted"
                  + ("; continue with --resume" if args.command == "predict" else ""),
                  file=sys.stderr)
            return 130
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
