"""The ``bayes-mdn`` command line.

``bayes-mdn demo`` runs the 2016 seed post's experiment end to end; ``bayes-mdn fit`` and
``bayes-mdn predict`` work on a user's CSV file. Errors in user input print one line and
exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

DEMO_METHODS = ("map",)


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


# --------------------------------------------------------------------------- CSV fit/predict
def _read_csv(path: str) -> tuple[list[str], np.ndarray]:
    """Header + float matrix; any malformation is a UsageError naming the line."""
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream, strict=True))
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text CSV file") from None
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
    values = np.empty((len(rows) - 1, len(header)))
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"{path} line {line}: {len(row)} fields, expected {len(header)}")
        for column, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise UsageError(
                    f"{path} line {line}, column {header[column]!r}: not a number: {cell!r}"
                ) from None
            if not np.isfinite(value):
                raise UsageError(f"{path} line {line}, column {header[column]!r}: not a finite "
                                 f"number: {cell!r} (drop or impute missing values first)")
            values[line - 2, column] = value
    return header, values


def _columns(header: list[str], names: str, path: str) -> list[int]:
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise UsageError(f"{path} has no column(s) {missing}; columns are {header}")
    return [header.index(name) for name in wanted]


def _fit(args: argparse.Namespace) -> None:
    import jax

    import bayes_mdn as bm

    if Path(args.out).is_dir():  # before the fit, not after it
        raise UsageError(f"--out {args.out} is a directory; pass a file path such as "
                         "fit.bmdn")
    header, values = _read_csv(args.csv)
    y_columns = _columns(header, args.y, args.csv)
    x_columns = (_columns(header, args.x, args.csv) if args.x
                 else [i for i in range(len(header)) if i not in y_columns])
    if not x_columns:
        raise UsageError("no input columns left; name them with --x")
    try:
        hidden = tuple(int(width) for width in args.hidden.split(",") if width.strip())
    except ValueError:
        raise UsageError(f"--hidden must be comma-separated layer widths such as 32,32; got "
                         f"{args.hidden!r}") from None
    model = bm.MDN(num_components=args.components, hidden_sizes=hidden)
    posterior = model.fit(values[:, x_columns], values[:, y_columns],
                          key=jax.random.key(args.seed), method=args.method,
                          num_steps=args.num_steps, progress=True)
    # The column names travel inside the saved file (Posterior.info), as for pandas input.
    posterior = dataclasses.replace(posterior, info={
        **posterior.info, "feature_names": [header[i] for i in x_columns],
        "target_names": [header[i] for i in y_columns]})
    posterior.save(args.out)
    print(f"saved {args.out}")


def _predict(args: argparse.Namespace) -> None:
    import bayes_mdn as bm

    posterior = bm.load(args.model)
    header, values = _read_csv(args.csv)
    x_names = posterior.info.get("feature_names")
    columns_file = str(args.model) + ".columns.json"  # written by bayes_mdn 0.1.0 fits
    if x_names is None and os.path.isfile(columns_file):
        with open(columns_file) as stream:
            x_names = json.load(stream)["x"]
    if x_names is not None:
        x_columns = _columns(header, ",".join(x_names), args.csv)
    elif len(header) >= posterior.num_features:
        x_columns = list(range(posterior.num_features))
    else:
        raise UsageError(f"{args.csv} has {len(header)} columns; the model needs "
                         f"{posterior.num_features} inputs")
    predictive = posterior.predictive(values[:, x_columns])
    levels = np.array([0.05, 0.5, 0.95])
    quantiles = predictive.quantiles(levels)
    mean = predictive.mean()
    y_names = posterior.info.get("target_names") or [str(d) for d in
                                                     range(posterior.num_outputs)]
    out_header = []
    out_columns = []
    for d, y_name in enumerate(y_names):
        out_header += [f"mean_{y_name}", f"q05_{y_name}", f"median_{y_name}", f"q95_{y_name}"]
        out_columns += [mean[:, d], quantiles[0, :, d], quantiles[1, :, d], quantiles[2, :, d]]
    table = np.column_stack(out_columns)
    np.savetxt(args.out, table, delimiter=",", header=",".join(out_header), comments="")
    print(f"wrote {len(table)} predictions to {args.out}")


# --------------------------------------------------------------------------- entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-mdn", description="Bayesian Mixture Density Networks on NumPyro and JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the 2016 seed experiment end to end")
    demo.add_argument("--out", default="bayes_mdn_demo", help="output folder")
    demo.add_argument("--method", default="map", choices=DEMO_METHODS)
    demo.add_argument("--num-steps", type=int, default=2000)
    demo.add_argument("--num-samples", type=int, default=40_000)
    demo.add_argument("--train-fraction", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=0)

    fit = commands.add_parser("fit", help="fit an MDN to a CSV file")
    fit.add_argument("csv")
    fit.add_argument("--y", required=True, help="comma-separated target column names")
    fit.add_argument("--x", default="", help="input columns (default: all others)")
    fit.add_argument("--out", default="fit.bmdn")
    fit.add_argument("--components", type=int, default=5)
    fit.add_argument("--hidden", default="32,32")
    fit.add_argument("--method", default="map", choices=DEMO_METHODS)
    fit.add_argument("--num-steps", type=int, default=2000)
    fit.add_argument("--seed", type=int, default=0)

    predict = commands.add_parser("predict", help="predict from a saved fit on a CSV file")
    predict.add_argument("model")
    predict.add_argument("csv")
    predict.add_argument("--out", default="predictions.csv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    handlers = {"demo": _demo, "fit": _fit, "predict": _predict}
    try:
        handlers[args.command](args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        print(f"bayes-mdn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # a fit that diverged: not the input's form
        print(f"bayes-mdn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
