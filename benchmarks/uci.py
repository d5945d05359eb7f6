"""UCI regression benchmark: bayes_mdn against the published PBP / MC dropout / Deep Ensembles.

The four data sets in the standard split format (``load_uci``; by default from
``../shared/data/uci`` beside the checkout, or ``--data``), the standard protocol:

* for each split, train on ``index_train_i`` (90 %), score on ``index_test_i`` (10 %);
* standardisation with the training split's mean and std happens inside ``fit``; densities
  are reported in original units (bayes_mdn adds the log-Jacobian);
* one hidden layer of 50 ReLU units; mean test log-likelihood per point and RMSE of the
  predictive mean per split, then mean ± standard error over splits (std / sqrt(n), ddof 0).

Models: a deep ensemble of 5 MAP fits (``method="ensemble"``, like Deep Ensembles' 5 nets)
of an MDN with K = 1 (a heteroscedastic Gaussian net) and K = 3 Normal components, with a
``FanInNormal(1.0)`` prior (weight decay). The only tuned quantity is the number of Adam
steps, chosen per data set and K on split 0 alone: fit on the first 80 % of split 0's
training rows, score the held-out last 20 % (the protocol's validation rows) every 100
steps, keep the best step count, then refit every split on all its training rows. The test
rows are never looked at before the final scoring.

    python benchmarks/uci.py [--splits 20] [--datasets ...] [--quick]

Writes ``results/uci.json`` and ``results/uci.md`` (``uci_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
from _common import RESULTS, machine

import bayes_mdn as bm

DATASETS = ("bostonHousing", "concrete", "energy", "yacht")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
COMPONENTS = (1, 3)
NUM_MEMBERS = 5
MAX_STEPS = 5000
EVAL_EVERY = 100
PRIOR_SCALE = 1.0

#: Published test log-likelihood (mean ± error over the 20 splits) and RMSE, from the data
#: folder's README: PBP (Hernández-Lobato & Adams 2015), MC dropout (Gal & Ghahramani 2016,
#: 4000 epochs), MC dropout grid-searched (Mukhoti et al. 2018), Deep Ensembles
#: (Lakshminarayanan et al. 2017, 5 nets; its ± looks like a std over splits).
PUBLISHED = {
    "bostonHousing": {"PBP": (-2.57, 0.09, 3.01), "MC dropout": (-2.39, 0.05, 2.80),
                      "MC dropout (tuned)": (-2.40, 0.04, 2.90),
                      "Deep Ensembles": (-2.41, 0.25, 3.28)},
    "concrete": {"PBP": (-3.16, 0.02, 5.67), "MC dropout": (-2.94, 0.02, 4.81),
                 "MC dropout (tuned)": (-2.93, 0.02, 4.82),
                 "Deep Ensembles": (-3.06, 0.18, 6.03)},
    "energy": {"PBP": (-2.04, 0.02, 1.80), "MC dropout": (-1.72, 0.02, 1.09),
               "MC dropout (tuned)": (-1.21, 0.01, 0.54),
               "Deep Ensembles": (-1.38, 0.22, 2.09)},
    "yacht": {"PBP": (-1.63, 0.02, 1.02), "MC dropout": (-1.38, 0.01, 0.72),
              "MC dropout (tuned)": (-1.25, 0.01, 0.67),
              "Deep Ensembles": (-1.18, 0.21, 1.58)},
}


def make_model(num_components: int) -> bm.MDN:
    return bm.MDN(num_components=num_components, hidden_sizes=(50,), activation="relu",
                  prior=bm.priors.FanInNormal(PRIOR_SCALE))


def fit(model, X, y, key, num_steps, **extra):
    return model.fit(X, y, key=key, method="ensemble", num_members=NUM_MEMBERS,
                     num_steps=num_steps, **extra)


def tune_steps(folder: Path, num_components: int, max_steps: int) -> tuple[int, list]:
    """Best Adam step count on split 0's validation rows (last 20 % of its training rows)."""
    X, y, _, _ = bm.datasets.load_uci(folder, 0)
    num_valid = round(0.2 * len(X))
    posterior = fit(make_model(num_components), X[:-num_valid], y[:-num_valid],
                    jax.random.key(100), max_steps, X_test=X[-num_valid:],
                    y_test=y[-num_valid:], num_evaluations=max_steps // EVAL_EVERY)
    steps = np.asarray(posterior.history["eval_step"])
    curve = np.asarray(posterior.history["test_log_likelihood"])
    return int(steps[int(np.nanargmax(curve))]), [[int(s), float(v)] for s, v in
                                                   zip(steps, curve, strict=True)]


def run_split(folder: Path, split: int, num_components: int, num_steps: int) -> dict:
    X, y, X_test, y_test = bm.datasets.load_uci(folder, split)
    started = time.perf_counter()
    posterior = fit(make_model(num_components), X, y, jax.random.key(split), num_steps)
    fit_s = time.perf_counter() - started
    pred = posterior.predictive(X_test)
    return {"split": split, "test_ll": float(np.mean(pred.log_prob(y_test))),
            "rmse": float(np.sqrt(np.mean((np.asarray(pred.mean()) - y_test) ** 2))),
            "fit_s": fit_s}


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std() / np.sqrt(len(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "BAYES_MDN_UCI_DIR", DEFAULT_DATA)), help="folder holding the four data-set folders")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--splits", type=int, default=20, help="first N splits (max 20)")
    parser.add_argument("--quick", action="store_true", help="2 splits, 500 steps: smoke run")
    args = parser.parse_args()
    num_splits, max_steps = (2, 500) if args.quick else (args.splits, MAX_STEPS)

    rows, details = [], {}
    for name in args.datasets:
        folder = args.data / name
        for num_components in COMPONENTS:
            started = time.perf_counter()
            num_steps, curve = tune_steps(folder, num_components, max_steps)
            per_split = [run_split(folder, split, num_components, num_steps)
                         for split in range(num_splits)]
            ll, ll_se = mean_se([r["test_ll"] for r in per_split])
            rmse, rmse_se = mean_se([r["rmse"] for r in per_split])
            row = {"dataset": name, "model": f"ensemble ({NUM_MEMBERS}), K={num_components}",
                   "num_splits": num_splits, "num_steps": num_steps, "test_ll": ll,
                   "test_ll_se": ll_se, "rmse": rmse, "rmse_se": rmse_se,
                   "fit_s_per_split": float(np.mean([r["fit_s"] for r in per_split])),
                   "total_s": time.perf_counter() - started}
            rows.append(row)
            details[f"{name}/K={num_components}"] = {"validation_curve": curve,
                                                     "splits": per_split}
            print(row, flush=True)

    name = "uci_quick" if args.quick else "uci"
    settings = {"components": COMPONENTS, "num_members": NUM_MEMBERS, "max_steps": max_steps,
                "eval_every": EVAL_EVERY, "hidden_sizes": [50], "activation": "relu",
                "prior": f"FanInNormal({PRIOR_SCALE})", "num_splits": num_splits}
    RESULTS.mkdir(exist_ok=True)
    payload = {"settings": settings, "published": PUBLISHED, "machine": machine(),
               "rows": rows, "details": details}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown_table(rows))
    print(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """One line per data set: bayes_mdn's rows and the published numbers, log-likelihood."""
    ours = sorted({row["model"] for row in rows})
    methods = list(next(iter(PUBLISHED.values())))
    header = ["dataset", *[f"bayes_mdn {m}" for m in ours], *methods]
    lines = ["Test log-likelihood per point (nats, higher is better), mean ± s.e. over "
             "splits; bayes_mdn's RMSE in brackets.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        cells = [dataset]
        for model in ours:
            row = next((r for r in rows if r["dataset"] == dataset and r["model"] == model),
                       None)
            cells.append("" if row is None else f"{row['test_ll']:.2f} ± {row['test_ll_se']:.2f}"
                         f" ({row['rmse']:.2f})")
        cells += [f"{PUBLISHED[dataset][m][0]:.2f} ± {PUBLISHED[dataset][m][1]:.2f}"
                  for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
