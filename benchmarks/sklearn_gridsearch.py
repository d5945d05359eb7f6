"""GridSearchCV over MDNRegressor on a UCI table, by log score (issue 21's "must show").

On split 0 of a UCI data set (``uci.py``'s files; default yacht): ``GridSearchCV`` over
``num_components`` in {1, 3, 5} and ``prior_scale`` in {0.3, 1, 3} with 3-fold
cross-validation on the training rows (``scoring=log_score_scorer``: mean log predictive
density), then the refitted best estimator scored on the split's test rows, beside every
candidate refitted on all training rows, ``cross_val_score`` of the best, and a ``clone``
round trip. Ensembles of 3 MAP fits of one hidden layer of 50 ReLU units.

    python benchmarks/sklearn_gridsearch.py [--dataset yacht] [--quick]

Writes ``results/sklearn_gridsearch.json`` / ``.md`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import write_results
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

import bayes_mdn as bm
from bayes_mdn.sklearn import MDNRegressor, log_score_scorer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="yacht")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    X, y, X_test, y_test = bm.datasets.load_uci(args.data / args.dataset, 0)
    y, y_test = y[:, 0], y_test[:, 0]
    steps = 200 if args.quick else 1000
    base = MDNRegressor(hidden_sizes=(50,), activation="relu", num_members=3,
                        num_steps=steps, random_state=0)
    grid = {"num_components": [1, 3, 5], "prior_scale": [0.3, 1.0, 3.0]}
    cv = KFold(3, shuffle=True, random_state=0)
    started = time.perf_counter()
    search = GridSearchCV(base, grid, cv=cv, scoring=log_score_scorer).fit(X, y)
    search_s = time.perf_counter() - started
    rows = []
    for index, params in enumerate(search.cv_results_["params"]):
        rows.append({"num_components": params["num_components"],
                     "prior_scale": params["prior_scale"],
                     "cv_log_score": float(search.cv_results_["mean_test_score"][index]),
                     "cv_se": float(search.cv_results_["std_test_score"][index] / np.sqrt(3)),
                     "rank": int(search.cv_results_["rank_test_score"][index]),
                     "test_log_score": float(clone(base).set_params(**params).fit(X, y)
                                             .score(X_test, y_test))})
    best = search.best_estimator_
    copy = clone(best)
    cross = cross_val_score(copy, X, y, cv=cv)
    payload = {"dataset": args.dataset, "split": 0, "num_steps": steps, "num_members": 3,
               "best_params": search.best_params_, "best_cv_log_score": search.best_score_,
               "best_test_log_score": best.score(X_test, y_test),
               "best_is_argmax_of_cv": bool(search.best_index_ == int(np.argmax(
                   search.cv_results_["mean_test_score"]))),
               "cross_val_score_of_best": cross.tolist(),
               "clone_params_equal": copy.get_params() == best.get_params(),
               "search_s": search_s}
    print(payload)
    write_results("sklearn_gridsearch_quick" if args.quick else "sklearn_gridsearch", payload,
                  rows)


if __name__ == "__main__":
    main()
