"""Stacked fits (``bm.stack``) against the best single fit, on the seed problem and UCI.

Seed (``inverse_sine``, the protocol of ``inference_seed.py``: key 0, 200 training points,
20 000 test points, exact density as the ceiling): fits of K in {1, 5, 20} components (one
hidden layer of 20 tanh units) under a FanInNormal(2) and a Hierarchical(2) prior, each a
deep ensemble of 8 MAP fits (3000 Adam steps; ``--nuts`` adds NUTS, 8 chains x 300 draws
started from each ensemble). Stacking weights come from PSIS-LOO on the 200 training
points (``bm.stack(fits, X=X, y=y)``; no test row is looked at), for stacking and
pseudo-BMA; every single fit and the stacks are scored on the 20 000 test points beside the
issue's goal of -1.50.

UCI (the four data sets of ``uci.py``, 20 splits): per split the last 20 % of the training
rows are held out as validation (the protocol's validation rows), ensembles of 5 MAP fits
(one hidden layer of 50 ReLU units, FanInNormal(1)) with K in {1, 3, 5} are fitted on the
other 80 %, stacking / pseudo-BMA weights come from the validation rows, and everything is
scored on the split's test rows. Peers: each single K, the K picked per split by validation
log score, and the best single K in hindsight (the K with the best mean test score: an oracle
that stacking must match). Mean ± standard error over splits (std / sqrt(n), ddof 0), and
the paired difference stacking - best single K.

    python benchmarks/stacking.py [--quick] [--nuts] [--parts seed uci] [--splits 20]

Writes ``results/stacking.json`` / ``.md`` (``stacking_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import numpy as np
from _common import write_results

import bayes_mdn as bm
from bayes_mdn.priors import FanInNormal, Hierarchical

GOAL = -1.50
NUM_TRAIN, NUM_TEST = 200, 20_000
SEED_COMPONENTS = (1, 5, 20)
UCI_COMPONENTS = (1, 3, 5)
DATASETS = ("bostonHousing", "concrete", "energy", "yacht")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
#: Predictive draws used to score a NUTS fit on the 20 000 test points (bounded cost).
SCORE_DRAWS = 400


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std() / np.sqrt(values.size))


# --------------------------------------------------------------------------- seed
def run_seed(quick: bool, nuts: bool) -> list[dict]:
    total = NUM_TRAIN + NUM_TEST
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=NUM_TRAIN / total)
    exact = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    steps, members = (300, 4) if quick else (3000, 8)
    nuts_options = (dict(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4)
                    if quick else dict(num_chains=8, num_warmup=500, num_samples=300,
                                       max_tree_depth=6))
    fits, rows = {}, []
    for prior_name, prior in (("fan-in", FanInNormal(2.0)), ("hierarchical", Hierarchical(2.0))):
        for K in SEED_COMPONENTS:
            model = bm.MDN(num_components=K, hidden_sizes=(20,), prior=prior)
            started = time.perf_counter()
            ensemble = model.fit(X, y, key=jax.random.key(3), method="ensemble",
                                 num_members=members, num_steps=steps)
            fits[f"ensemble K={K} {prior_name}"] = (ensemble, time.perf_counter() - started)
            if nuts:
                started = time.perf_counter()
                sampled = model.fit(X, y, key=jax.random.key(8), method="nuts", init=ensemble,
                                    **nuts_options)
                fits[f"nuts K={K} {prior_name}"] = (sampled, time.perf_counter() - started)
            print(f"seed: fitted K={K} {prior_name}", flush=True)
    for name, (posterior, seconds) in fits.items():
        total_draws = posterior.num_chains * posterior.num_draws
        pred = posterior.predictive(X_test, num_draws=min(SCORE_DRAWS, total_draws))
        rows.append({"part": "seed", "model": name, "test_ll": float(np.mean(
            pred.log_prob(y_test))), "fit_s": seconds})
    groups = {"ensembles": [n for n in fits if n.startswith("ensemble")]}
    if nuts:
        groups["nuts"] = [n for n in fits if n.startswith("nuts")]
        groups["all"] = list(fits)
    for group, names in groups.items():
        best_single = max((r for r in rows if r["model"] in names), key=lambda r: r["test_ll"])
        for method in ("stacking", "pseudo-bma"):
            started = time.perf_counter()
            stacked = bm.stack({n: fits[n][0] for n in names}, X=X, y=y, method=method)
            weigh_s = time.perf_counter() - started
            total_draws = min(SCORE_DRAWS, min(m.num_chains * m.num_draws
                                               for m in stacked.members))
            pred = stacked.predictive(X_test, num_draws=total_draws)
            test_ll = float(np.mean(pred.log_prob(y_test)))
            rows.append({"part": "seed", "model": f"{method} of {group} (LOO)",
                         "test_ll": test_ll, "weigh_s": weigh_s,
                         "best_single": best_single["model"],
                         "minus_best_single": test_ll - best_single["test_ll"],
                         "weights": {n: round(w, 4) for n, w in stacked.weight_of.items()
                                     if round(w, 4) > 0},
                         "max_pareto_k": max(stacked.info.get("max_pareto_k", {0: 0}).values())})
    for row in rows:
        row.update(goal=GOAL, exact_ll=exact)
    return rows


# --------------------------------------------------------------------------- UCI
def uci_split(folder: Path, split: int, steps: int, members: int) -> dict:
    X, y, X_test, y_test = bm.datasets.load_uci(folder, split)
    num_valid = round(0.2 * len(X))
    X_fit, y_fit, X_val, y_val = X[:-num_valid], y[:-num_valid], X[-num_valid:], y[-num_valid:]
    fits, scores, valid = {}, {}, {}
    for K in UCI_COMPONENTS:
        model = bm.MDN(num_components=K, hidden_sizes=(50,), activation="relu",
                       prior=FanInNormal(1.0))
        fits[K] = model.fit(X_fit, y_fit, key=jax.random.key(split), method="ensemble",
                            num_members=members, num_steps=steps)
        scores[f"K={K}"] = float(np.mean(fits[K].predictive(X_test).log_prob(y_test)))
        valid[K] = float(np.mean(fits[K].predictive(X_val).log_prob(y_val)))
    chosen = max(valid, key=valid.get)
    scores["K picked on validation"] = scores[f"K={chosen}"]
    weights = {}
    for method in ("stacking", "pseudo-bma"):
        stacked = bm.stack({f"K={K}": fit for K, fit in fits.items()}, X_val, y_val,
                           method=method)
        scores[method] = float(np.mean(stacked.predictive(X_test).log_prob(y_test)))
        weights[method] = stacked.weights.tolist()
    return {"scores": scores, "weights": weights}


def run_uci(quick: bool, data: Path, datasets, splits: int = 20) -> tuple[list[dict], dict]:
    num_splits, steps, members = (2, 300, 3) if quick else (splits, 1000, 5)
    rows, details = [], {}
    for dataset in datasets:
        started = time.perf_counter()
        per_split = [uci_split(data / dataset, split, steps, members)
                     for split in range(num_splits)]
        details[dataset] = per_split
        names = list(per_split[0]["scores"])
        table = {name: np.array([s["scores"][name] for s in per_split]) for name in names}
        singles = [f"K={K}" for K in UCI_COMPONENTS]
        best = max(singles, key=lambda name: table[name].mean())
        for name in names:
            mean, se = mean_se(table[name])
            row = {"part": "uci", "dataset": dataset, "model": name, "test_ll": mean,
                   "test_ll_se": se, "num_splits": num_splits}
            if name in ("stacking", "pseudo-bma"):
                diff, diff_se = mean_se(table[name] - table[best])
                row.update(best_single=best, minus_best_single=diff, minus_best_single_se=diff_se,
                           mean_weights=np.mean([s["weights"][name] for s in per_split],
                                                axis=0).round(3).tolist())
            rows.append(row)
        print(f"uci: {dataset} done in {time.perf_counter() - started:.0f} s", flush=True)
    return rows, {"details": details, "num_steps": steps, "num_members": members}


def table_rows(rows: list[dict]) -> list[dict]:
    """Rows for the Markdown table: weights as a string."""
    return [{k: v for k, v in row.items() if k != "weights"}
            | ({"weights": str(row["weights"])} if "weights" in row else {}) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    parser.add_argument("--nuts", action="store_true", help="also NUTS fits on the seed data")
    parser.add_argument("--parts", nargs="+", default=["seed", "uci"], choices=("seed", "uci"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--splits", type=int, default=20, help="first N UCI splits (max 20)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    started = time.perf_counter()
    name = "stacking_quick" if args.quick else "stacking"
    rows: list[dict] = []
    extra: dict = {"details": {}}

    def save() -> None:
        """Rewrite the results after every part, so a stopped run keeps what it made."""
        settings = {"seed_components": SEED_COMPONENTS, "uci_components": UCI_COMPONENTS,
                    "nuts": args.nuts, "quick": args.quick, "goal": GOAL,
                    "uci_splits": 2 if args.quick else args.splits,
                    "elapsed_s": time.perf_counter() - started,
                    "load_average": list(os.getloadavg())}
        write_results(name, {"settings": settings, **extra}, table_rows(rows))

    if "seed" in args.parts:
        rows += run_seed(args.quick, args.nuts)
        save()
    if "uci" in args.parts:
        for dataset in (args.datasets[:2] if args.quick else args.datasets):
            uci_rows, part = run_uci(args.quick, args.data, [dataset], args.splits)
            rows += uci_rows
            extra["details"].update(part.pop("details"))
            extra.update(part)
            save()


if __name__ == "__main__":
    main()
