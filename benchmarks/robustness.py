"""Numerical robustness over many keys: no NaN or inf in any loss, estimate or prediction.

For each of 50 keys (``--num-keys``), each data set and each method (short MAP and SVI
fits), the script fits an MDN and checks that

* every recorded loss is finite (a non-finite step would be skipped by the optimiser and
  counted here as a *fault survived*; the fit itself must still be finite);
* the fitted parameters and the train/test log-likelihood history are finite;
* every prediction on the test rows is finite: ``log_prob``, ``cdf``, ``mean``,
  ``variance``, ``quantiles`` (5/50/95 %) and ``sample`` (SVI: from 20 of its 100 draws).

Data sets: the seed problem (``bm.datasets.inverse_sine``, a fresh draw per key, 4000 train
/ 4000 test points; the seed's K = 20, hidden (15, 15) tanh MDN with the demo's priors) and
the four UCI sets in the standard split format (split ``key % 20``; K = 3, one hidden layer
of 50 ReLU units, ``FanInNormal(1.0)``).

    python benchmarks/robustness.py [--num-keys 50] [--map-steps 500] [--svi-steps 500]
                                    [--datasets seed bostonHousing ...] [--quick]

Writes ``results/robustness.json`` and ``results/robustness.md`` (``robustness_quick.*``
with ``--quick``): one row per data set and method with the number of fits, of fits with a
non-finite loss step, estimate or prediction, of errors, and the spread of the test
log-likelihood over keys.
"""

from __future__ import annotations

import argparse
import time
import traceback
import warnings
from pathlib import Path

import jax
import numpy as np
from _common import write_results

import bayes_mdn as bm
from bayes_mdn.cli import _demo_prior
from bayes_mdn.priors import FanInNormal

UCI = ("bostonHousing", "concrete", "energy", "yacht")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
QUANTILES = np.array([0.05, 0.5, 0.95])
#: Draws of the SVI posterior kept by the fit, and used for the predictions (bounded cost).
NUM_DRAWS = 100
PREDICT_DRAWS = 20


def load(name: str, key: jax.Array, index: int, data: Path):
    """(X, y, X_test, y_test) of data set `name` for the `index`-th key."""
    if name == "seed":
        return bm.datasets.inverse_sine(key, num_samples=8000, train_fraction=0.5)
    return bm.datasets.load_uci(data / name, split=index % 20)


def model_for(name: str) -> bm.MDN:
    if name == "seed":
        return bm.MDN(num_components=20, hidden_sizes=(15, 15), activation="tanh",
                      prior=_demo_prior())
    return bm.MDN(num_components=3, hidden_sizes=(50,), activation="relu",
                  prior=FanInNormal(1.0))


def check(posterior: bm.Posterior, X_test: np.ndarray, y_test: np.ndarray,
          key: jax.Array) -> dict:
    """Finiteness of everything the fit and its predictive produce."""
    loss = np.asarray(posterior.history["loss"])
    estimate_finite = all(np.isfinite(np.asarray(value)).all()
                          for value in posterior.draws.values())
    history_finite = all(np.isfinite(posterior.history[name]).all()
                         for name in ("train_log_likelihood", "test_log_likelihood"))
    total = posterior.num_chains * posterior.num_draws
    predictive = posterior.predictive(X_test, num_draws=min(total, PREDICT_DRAWS))
    outputs = {
        "log_prob": predictive.log_prob(y_test),
        "cdf": predictive.cdf(y_test),
        "mean": predictive.mean(),
        "variance": predictive.variance(),
        "quantiles": predictive.quantiles(QUANTILES),
        "sample": predictive.sample(key, num_samples=2),
    }
    bad_outputs = sorted(name for name, value in outputs.items()
                         if not np.isfinite(value).all())
    return {"nonfinite_loss_steps": int(np.sum(~np.isfinite(loss))),
            "estimate_finite": bool(estimate_finite), "history_finite": bool(history_finite),
            "bad_outputs": bad_outputs,
            "test_ll": float(np.mean(outputs["log_prob"]))}


def run(name: str, method: str, num_keys: int, steps: int, data: Path) -> tuple[dict, list]:
    model = model_for(name)
    records = []
    for index in range(num_keys):
        data_key, fit_key, check_key = jax.random.split(jax.random.key(index), 3)
        X, y, X_test, y_test = load(name, data_key, index, data)
        options = {"num_steps": steps, "num_evaluations": 10, "X_test": X_test,
                   "y_test": y_test}
        if method == "svi":
            options.update(num_draws=NUM_DRAWS)
        started = time.perf_counter()
        record = {"key": index}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                posterior = model.fit(X, y, key=fit_key, method=method, **options)
                record.update(check(posterior, X_test, y_test, check_key))
            record["warnings"] = [str(w.message) for w in caught
                                  if issubclass(w.category, RuntimeWarning)]
        except Exception as error:  # recorded, never hidden: a fit must not fail
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc(limit=3)
        record["seconds"] = time.perf_counter() - started
        records.append(record)
        status = record.get("error") or (
            f"test ll {record['test_ll']:.3f}, skipped steps {record['nonfinite_loss_steps']}"
            + (f", BAD {record['bad_outputs']}" if record["bad_outputs"] else ""))
        print(f"[{name} {method} key {index}] {status} ({record['seconds']:.1f} s)",
              flush=True)
    ok = [r for r in records if "error" not in r]
    test_ll = np.array([r["test_ll"] for r in ok])
    finite_ll = test_ll[np.isfinite(test_ll)]
    row = {
        "dataset": name, "method": method, "steps": steps, "fits": len(records),
        "errors": len(records) - len(ok),
        "fits_with_skipped_steps": sum(r["nonfinite_loss_steps"] > 0 for r in ok),
        "skipped_steps": sum(r["nonfinite_loss_steps"] for r in ok),
        "nonfinite_estimates": sum(not r["estimate_finite"] for r in ok),
        "nonfinite_history": sum(not r["history_finite"] for r in ok),
        "nonfinite_predictions": sum(bool(r["bad_outputs"]) for r in ok),
        "test_ll_mean": float(np.mean(finite_ll)) if finite_ll.size else float("nan"),
        "test_ll_min": float(np.min(finite_ll)) if finite_ll.size else float("nan"),
        "test_ll_max": float(np.max(finite_ll)) if finite_ll.size else float("nan"),
        "seconds_per_fit": float(np.mean([r["seconds"] for r in records])),
    }
    return row, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-keys", type=int, default=50)
    parser.add_argument("--map-steps", type=int, default=500)
    parser.add_argument("--svi-steps", type=int, default=500)
    parser.add_argument("--datasets", nargs="+", default=["seed", *UCI])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="3 keys, 100 steps: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.num_keys, args.map_steps, args.svi_steps = 3, 100, 100

    started = time.perf_counter()
    rows, details = [], {}
    for name in args.datasets:
        for method, steps in (("map", args.map_steps), ("svi", args.svi_steps)):
            row, records = run(name, method, args.num_keys, steps, args.data)
            rows.append(row)
            details[f"{name}/{method}"] = records
            print(row, flush=True)
    total = {
        "fits": sum(r["fits"] for r in rows),
        "keys": args.num_keys,
        "errors": sum(r["errors"] for r in rows),
        "fits_with_nonfinite_anything": sum(
            r["nonfinite_estimates"] + r["nonfinite_history"] + r["nonfinite_predictions"]
            for r in rows),
        "skipped_steps_survived": sum(r["skipped_steps"] for r in rows),
        "seconds": time.perf_counter() - started,
    }
    name = "robustness_quick" if args.quick else "robustness"
    write_results(name, {"settings": {"num_keys": args.num_keys, "map_steps": args.map_steps,
                                      "svi_steps": args.svi_steps, "num_draws": NUM_DRAWS,
                                      "predict_draws": PREDICT_DRAWS,
                                      "datasets": args.datasets},
                         "total": total, "fits": details}, rows)
    print(total)


if __name__ == "__main__":
    main()
