"""Stacked fits (``bm.stack``) against the best single fit, on the seed problem and UCI.

Seed (``inverse_sine``, the protocol of ``inference_seed.py``: key 0, 200 training points,
20 000 test points, exact density as the ceiling): fits of K in {1, 5, 20} components (one
hidden layer of 20 tanh units) under a FanInNormal(2) and a Hierarchical(2) prior, each a
deep ensemble of 8 MAP fits (3000 Adam steps); ``--nuts`` adds NUTS with the library's
defaults (4 chains x (300 warm-up + 200 draws), tree depth 6) started from each ensemble's
members. Stacking weights come from the 200 training points only (no test row is looked at),
for the 6 ensembles, the 6 NUTS fits and all 12 together, by stacking and pseudo-BMA:

* "auto" (``bm.stack(fits, X=X, y=y, key=...)``, the default): per fit PSIS-LOO where it is
  reliable (>= 50 draws, every Pareto k <= 0.7), 5-fold refits of the others (the
  ensembles: 8 draws; NUTS fits whose k exceeds 0.7); the row records which fit got which;
* "LOO" (``cv="loo"``): PSIS-LOO for every fit (8-draw ensembles: k = inf, unreliable);
* with ``--cv 5``, "cv=5": 5-fold refits of every fit.

Refits use each fit's recorded recipe; NUTS ones with ``--nuts-refit`` overrides (e.g.
``'{"num_chains": 2, "num_samples": 100}'``: fewer draws, 2.5x cheaper) and ``init="auto"``
(one MAP fit per chain) instead of the ensemble they started from. Each fit's out-of-fold
densities are computed once (key 11, hence the same folds) and shared by every stack that
refits it (``SharedRefits``), so ``weigh_s`` holds the refits only for the first stack that
needed them (the "auto" ones run first). Every single fit and every stack is scored on the
20 000 test points beside the issue's goal of -1.50; a stack's difference to the best
single fit comes with its paired standard error over the test points. ``--cache DIR``
saves the fits and reuses them on a rerun; ``--seed-sources auto`` runs only some
weightings, and ``--keep-seed-rows OLD.json`` keeps an earlier run's rows of the others.

UCI (the four data sets of ``uci.py``, 20 splits): per split the last 20 % of the training
rows are held out as validation (the protocol's validation rows), ensembles of 5 MAP fits
(one hidden layer of 50 ReLU units, FanInNormal(1)) with K in {1, 3, 5} are fitted on the
other 80 %, stacking / pseudo-BMA weights come from the validation rows, and everything is
scored on the split's test rows. A third weighting, "stacking, Dirichlet(2)", uses the same
validation densities with a Dirichlet(2) prior on the weights (one pseudo-point per fit: a
guard against weights that overfit a small validation slice, as on yacht). Each finished
split is appended to ``results/stacking_uci_splits.jsonl``; ``--first-split 5 --previous
OLD.json`` runs splits 5.. first and fills splits not rerun from an earlier results file of
the same protocol (marked "previous run" in the details). Peers: each single K, the K
picked per split by validation log score, and the best single K in hindsight (the K with the
best mean test score: an oracle that stacking must match). Mean ± standard error over
splits (std / sqrt(n), ddof 0), and the paired difference stacking - best single K.

    python benchmarks/stacking.py [--quick] [--nuts] [--cv 5] [--cache DIR] [--parts seed uci]
        [--seed-sources LOO cv auto] [--nuts-refit JSON] [--keep-seed-rows OLD.json]
        [--splits 20] [--first-split 5 --previous OLD.json] [--summarise-only]
        [--seed-rows SEED.json] [--name NAME]

Writes ``results/stacking.json`` / ``.md`` (``stacking_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from _common import RESULTS, write_results

import bayes_mdn as bm
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS
from bayes_mdn.priors import FanInNormal, Hierarchical
from bayes_mdn.stacking import (
    _check_refits,
    _cv_log_density,
    _refit_options,
    stacking_weights,
)

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
def seed_data():
    total = NUM_TRAIN + NUM_TEST
    return bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                    train_fraction=NUM_TRAIN / total)


def seed_fits(quick: bool, nuts: bool, cache: Path | None) -> dict[str, tuple]:
    """name -> (posterior, fit seconds); saved to / read back from `cache` when given."""
    X, y, _, _ = seed_data()
    steps, members = (300, 4) if quick else (3000, 8)
    # NUTS defaults of the library (4 chains x (300 warm-up + 200 draws), tree depth 6),
    # started from the ensemble's members.
    nuts_options = (dict(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4)
                    if quick else {})
    fits = {}

    def fitted(name: str, make) -> None:
        path = None if cache is None else cache / (name.replace(" ", "_") + ".bmdn")
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        if path is not None and path.exists():
            posterior = bm.load(path)
            fits[name] = (posterior, posterior.info.get("fit_seconds"))
            return
        started = time.perf_counter()
        posterior = make()
        fits[name] = (posterior, time.perf_counter() - started)
        if path is not None:
            posterior.save(path)

    for prior_name, prior in (("fan-in", FanInNormal(2.0)), ("hierarchical", Hierarchical(2.0))):
        for K in SEED_COMPONENTS:
            model = bm.MDN(num_components=K, hidden_sizes=(20,), prior=prior)
            fitted(f"ensemble K={K} {prior_name}", lambda model=model: model.fit(
                X, y, key=jax.random.key(3), method="ensemble", num_members=members,
                num_steps=steps))
            if nuts:
                init = fits[f"ensemble K={K} {prior_name}"][0]
                fitted(f"nuts K={K} {prior_name}", lambda model=model, init=init: model.fit(
                    X, y, key=jax.random.key(8), method="nuts", init=init, **nuts_options))
            print(f"seed: fitted K={K} {prior_name}", flush=True)
    return fits


def pointwise_score(posterior, X_test, y_test) -> np.ndarray:
    """Test log densities (N_test,), each fit (stacked ones: each member) with at most
    SCORE_DRAWS draws (a stack's predictive caps every member at its own draw count)."""
    draws = (SCORE_DRAWS if hasattr(posterior, "members")
             else min(SCORE_DRAWS, posterior.num_chains * posterior.num_draws))
    return np.asarray(posterior.predictive(X_test, num_draws=draws).log_prob(y_test),
                      np.float64)


def score(posterior, X_test, y_test) -> float:
    return float(np.mean(pointwise_score(posterior, X_test, y_test)))


class SharedRefits:
    """Out-of-fold densities of each fit, computed once and shared by every stack of the run.

    Wraps ``bayes_mdn.stacking._cv_log_density`` (what ``bm.stack`` calls for ``cv=5`` and
    ``cv="auto"``): a fit refitted once keeps its column for the next stack that refits it
    (same key, hence the same folds; the refit keys of a fit depend on its position in the
    first stack that refitted it)."""

    def __init__(self) -> None:
        self.columns: dict[tuple[str, int], np.ndarray] = {}
        self.original = bm.stacking._cv_log_density

    def __call__(self, names, members, X, y, cv, key, options, max_elements, indices=None):
        indices = list(range(len(members)) if indices is None else indices)
        missing = [i for i in indices if (names[i], cv) not in self.columns]
        if missing:
            found = self.original(names, members, X, y, cv, key, options, max_elements,
                                  indices=missing)
            for column, index in enumerate(missing):
                self.columns[(names[index], cv)] = found[:, column]
        return np.stack([self.columns[(names[i], cv)] for i in indices], axis=1)


def run_seed(quick: bool, nuts: bool, cv: int, cache: Path | None, save,
             sources=("LOO", "cv", "auto"), nuts_refit: dict | None = None) -> list[dict]:
    X, y, X_test, y_test = seed_data()
    exact = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    fits = seed_fits(quick, nuts, cache)
    pointwise = {name: pointwise_score(posterior, X_test, y_test)
                 for name, (posterior, _) in fits.items()}
    rows = [{"part": "seed", "model": name, "test_ll": float(np.mean(pointwise[name])),
             "fit_s": seconds, "draws": posterior.num_chains * posterior.num_draws}
            for name, (posterior, seconds) in fits.items()]
    groups = {"ensembles": [n for n in fits if n.startswith("ensemble")]}
    if nuts:
        groups["nuts"] = [n for n in fits if n.startswith("nuts")]
        groups["all"] = list(fits)
    # Refit options: each fit's recorded recipe (bm.stack's default), NUTS ones with the
    # `nuts_refit` overrides (e.g. fewer chains and draws).
    fit_options = {name: _refit_options(posterior, None) | (nuts_refit or {})
                   for name, (posterior, _) in fits.items() if posterior.method == "nuts"}
    # (group, source, method). "auto" first: its refits are shared with the cv stacks.
    plan = []
    if "auto" in sources:
        plan += [(group, "auto", method) for group in reversed(groups)
                 for method in ("stacking", "pseudo-bma")]
    if "LOO" in sources:
        plan += [(group, "LOO", method) for group in groups
                 for method in ("stacking", "pseudo-bma")]
    if cv and "cv" in sources:
        plan += [(group, f"cv={cv}", "stacking") for group in groups]
    refits = SharedRefits()
    bm.stacking._cv_log_density = refits
    for group, source, method in plan:
        names = groups[group]
        best_single = max((r for r in rows if r["model"] in names), key=lambda r: r["test_ll"])
        members = {n: fits[n][0] for n in names}
        options = {n: o for n, o in fit_options.items() if n in names} or None
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if source == "LOO":
                stacked = bm.stack(members, X=X, y=y, method=method, cv="loo")
            elif source == "auto":
                stacked = bm.stack(members, X=X, y=y, method=method, cv="auto",
                                   key=jax.random.key(11), fit_options=options)
            else:
                stacked = bm.stack(members, X=X, y=y, method=method, cv=cv,
                                   key=jax.random.key(11), fit_options=options)
        weigh_s = time.perf_counter() - started
        stacked_pointwise = pointwise_score(stacked, X_test, y_test)
        test_ll = float(np.mean(stacked_pointwise))
        # Standard error of the paired difference over the test points (std / sqrt(n)).
        _, difference_se = mean_se(stacked_pointwise - pointwise[best_single["model"]])
        pareto = stacked.info.get("max_pareto_k", {})
        rows.append({"part": "seed", "model": f"{method} of {group} ({source})",
                     "test_ll": test_ll, "weigh_s": weigh_s,
                     "best_single": best_single["model"],
                     "minus_best_single": test_ll - best_single["test_ll"],
                     "minus_best_single_se": difference_se,
                     "weights": {n: round(w, 4) for n, w in stacked.weight_of.items()
                                 if round(w, 4) > 0},
                     "max_pareto_k": max(pareto.values()) if pareto else None,
                     "warned": any("Pareto k" in str(w.message) for w in caught),
                     "elpd_per_point": stacked.info.get("elpd_per_point"),
                     **({"estimate": dict(stacked.info["estimate"]),
                         "estimate_reason": dict(stacked.info["estimate_reason"])}
                        if "estimate" in stacked.info else {})})
        print(f"seed: {rows[-1]['model']} {test_ll:.3f} ({weigh_s:.0f} s)", flush=True)
        for row in rows:
            row.update(goal=GOAL, exact_ll=exact)
        save(rows)
    bm.stacking._cv_log_density = refits.original
    for row in rows:
        row.update(goal=GOAL, exact_ll=exact)
    return rows


# --------------------------------------------------------------------------- UCI
#: Dirichlet prior concentration of the regularised stacking variant (one pseudo-point per fit).
CONCENTRATION = 2.0
SPLITS_LOG = RESULTS / os.environ.get("STACKING_SPLITS_LOG", "stacking_uci_splits.jsonl")


def uci_split(folder: Path, split: int, steps: int, members: int, cv: int = 0) -> dict:
    X, y, X_test, y_test = bm.datasets.load_uci(folder, split)
    num_valid = round(0.2 * len(X))
    X_fit, y_fit, X_val, y_val = X[:-num_valid], y[:-num_valid], X[-num_valid:], y[-num_valid:]
    fits, scores, valid, columns = {}, {}, {}, []
    for K in UCI_COMPONENTS:
        model = bm.MDN(num_components=K, hidden_sizes=(50,), activation="relu",
                       prior=FanInNormal(1.0))
        fits[K] = model.fit(X_fit, y_fit, key=jax.random.key(split), method="ensemble",
                            num_members=members, num_steps=steps)
        scores[f"K={K}"] = float(np.mean(fits[K].predictive(X_test).log_prob(y_test)))
        columns.append(np.asarray(fits[K].predictive(X_val).log_prob(y_val), np.float64))
        valid[K] = float(np.mean(columns[-1]))
    chosen = max(valid, key=valid.get)
    scores["K picked on validation"] = scores[f"K={chosen}"]
    weights = {}
    named = {f"K={K}": fit for K, fit in fits.items()}
    for method in ("stacking", "pseudo-bma"):
        stacked = bm.stack(named, X_val, y_val, method=method)
        scores[method] = float(np.mean(stacked.predictive(X_test).log_prob(y_test)))
        weights[method] = stacked.weights.tolist()
    # The same validation densities, weights under a Dirichlet(2) prior (shrunk to uniform).
    label = f"stacking, Dirichlet({CONCENTRATION:g})"
    found = stacking_weights(np.stack(columns, axis=1), concentration=CONCENTRATION)
    stacked = bm.stack(named, weights=found / found.sum())
    scores[label] = float(np.mean(stacked.predictive(X_test).log_prob(y_test)))
    weights[label] = stacked.weights.tolist()
    if cv:
        # Weights from cv-fold refits on the fitting rows (the validation rows unused), as
        # bm.stack(named, X=X_fit, y=y_fit, cv=cv, key=...) computes them; and from those
        # out-of-fold densities together with the validation rows' densities.
        names, fitted = tuple(named), tuple(named.values())
        options = _check_refits(cv, jax.random.key(1000 + split), len(X_fit), names, fitted,
                                None, f"stack(cv={cv})")
        out_of_fold = _cv_log_density(names, fitted, X_fit, y_fit, cv,
                                      jax.random.key(1000 + split), options,
                                      DEFAULT_MAX_ELEMENTS)
        for label, density in ((f"stacking, cv={cv} on fitting rows", out_of_fold),
                               (f"stacking, cv={cv} + validation rows",
                                np.concatenate([out_of_fold, np.stack(columns, axis=1)]))):
            stacked = bm.stack(named, weights=stacking_weights(density))
            scores[label] = float(np.mean(stacked.predictive(X_test).log_prob(y_test)))
            weights[label] = stacked.weights.tolist()
    return {"scores": scores, "weights": weights}


def split_order(num_splits: int, first: int) -> list[int]:
    """Splits first..num_splits-1, then 0..first-1 (the first ones were run before)."""
    return list(range(first, num_splits)) + list(range(min(first, num_splits)))


def run_uci_splits(quick: bool, data: Path, datasets, splits: int, first: int,
                   cv: int = 0) -> None:
    """Run split by split, all data sets per split, appending each result to SPLITS_LOG
    (so a stopped run keeps every split it finished)."""
    num_splits, steps, members = (2, 300, 3) if quick else (splits, 1000, 5)
    for split in split_order(num_splits, 0 if quick else first):
        for dataset in datasets:
            started = time.perf_counter()
            result = uci_split(data / dataset, split, steps, members, cv)
            record = {"dataset": dataset, "split": split, "quick": quick, "num_steps": steps,
                      "num_members": members, "seconds": time.perf_counter() - started,
                      "load_average": list(os.getloadavg()), **result}
            with open(SPLITS_LOG, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"uci: {dataset} split {split} in {record['seconds']:.0f} s", flush=True)


def load_splits(quick: bool, previous: Path | None, extra_logs=()) -> dict[str, dict[int, dict]]:
    """Per data set, split -> result: this run's log, then `previous` (an earlier
    results JSON of the same protocol, its ``details``) for splits not rerun. `extra_logs`:
    logs of reruns with more variants (``--cv``); their scores and weights are added to the
    same split's (same protocol and keys, so the shared variants agree)."""
    found: dict[str, dict[int, dict]] = {}
    for extra in extra_logs:
        for line in Path(extra).read_text().splitlines():
            record = json.loads(line)
            if record["quick"] == quick:
                found.setdefault(record["dataset"], {})[record["split"]] = record | {
                    "source": f"this run + {Path(extra).name}"}
    if SPLITS_LOG.exists():
        for line in SPLITS_LOG.read_text().splitlines():
            record = json.loads(line)
            if record["quick"] != quick:
                continue
            known = found.setdefault(record["dataset"], {}).get(record["split"])
            if known is None:
                found[record["dataset"]][record["split"]] = record | {"source": "this run"}
            else:  # an extra log reran this split: keep its extra variants, and say how
                # far the variants both runs have differ (same keys: they should agree)
                shared = [name for name in record["scores"] if name in known["scores"]]
                known["rerun_max_difference"] = max(
                    (abs(record["scores"][name] - known["scores"][name]) for name in shared),
                    default=None)
                known["scores"] = known["scores"] | record["scores"]
                known["weights"] = known["weights"] | record["weights"]
    if previous is not None and previous.exists():
        for dataset, per_split in json.loads(previous.read_text()).get("details", {}).items():
            for split, result in enumerate(per_split):
                found.setdefault(dataset, {}).setdefault(split, result | {
                    "source": "previous run"})
    return found


def summarise_uci(found: dict[str, dict[int, dict]], datasets) -> list[dict]:
    rows = []
    singles = [f"K={K}" for K in UCI_COMPONENTS]
    for dataset in datasets:
        per_split = [found[dataset][s] for s in sorted(found.get(dataset, {}))]
        if not per_split:
            continue
        names = list(dict.fromkeys(n for s in per_split for n in s["scores"]))
        best = max(singles, key=lambda name: np.mean([s["scores"][name] for s in per_split]))
        for name in names:
            having = [s for s in per_split if name in s["scores"]]
            scores = np.array([s["scores"][name] for s in having])
            mean, se = mean_se(scores)
            row = {"part": "uci", "dataset": dataset, "model": name, "test_ll": mean,
                   "test_ll_se": se, "num_splits": len(having)}
            if name not in singles and name != "K picked on validation":
                diff, diff_se = mean_se(scores - np.array([s["scores"][best] for s in having]))
                row.update(best_single=best, minus_best_single=diff, minus_best_single_se=diff_se,
                           wins=int(np.sum(scores >= np.array([s["scores"][best]
                                                               for s in having]))),
                           mean_weights=np.mean([s["weights"][name] for s in having],
                                                axis=0).round(3).tolist())
            rows.append(row)
    return rows


def headline(rows: list[dict]) -> list[str]:
    """The must-show comparisons, in words, from the rows (written above the table)."""
    lines = ["# Stacked fits (bm.stack) against the best single fit", ""]
    seed = [r for r in rows if r["part"] == "seed" and "minus_best_single" in r]
    if seed:
        lines += [f"Seed data, 200 training points, 20 000 test points (goal {GOAL}, exact "
                  f"density {seed[0]['exact_ll']:.3f}); weights from the training rows only:", ""]
        for r in seed:
            # Within 5e-4 nats per point (float32 rounding of equal weights) is a tie; a
            # loss smaller than 2 paired standard errors is said to be one.
            difference, se = r["minus_best_single"], r.get("minus_best_single_se") or 0.0
            verdict = ("at least as high" if difference >= -5e-4 else
                       "lower (within 2 se)" if difference > -2 * se else "LOSES")
            k = r.get("max_pareto_k")
            pareto = "" if k is None else f", max Pareto k {k:.2f}"
            se = ("" if r.get("minus_best_single_se") is None
                  else f" ± {r['minus_best_single_se']:.3f}")
            lines.append(f"- {r['model']}: {r['test_ll']:.3f} vs best single "
                         f"{r['best_single']} ({r['test_ll'] - r['minus_best_single']:.3f}): "
                         f"{r['minus_best_single']:+.3f}{se}, {verdict}{pareto}")
        lines.append("")
    uci = [r for r in rows if r["part"] == "uci" and "minus_best_single" in r]
    if uci:
        lines += ["UCI, test log likelihood per point, mean over splits; difference to the best "
                  "single K (paired, ± standard error; wins = splits where it is >= that K, ties "
                  "included):",
                  ""]
        for r in uci:
            lines.append(f"- {r['dataset']}, {r['model']} ({r['num_splits']} splits): "
                         f"{r['minus_best_single']:+.3f} ± {r['minus_best_single_se']:.3f} vs "
                         f"{r['best_single']}, wins {r['wins']}/{r['num_splits']}")
        lines.append("")
    return lines


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
    parser.add_argument("--cv", type=int, default=0,
                        help="seed and UCI: also cv-fold stacking weights (refits every fit cv "
                             "times)")
    parser.add_argument("--seed-sources", nargs="+", default=["LOO", "cv", "auto"],
                        choices=("LOO", "cv", "auto"),
                        help="seed: which weightings to run (cv needs --cv)")
    parser.add_argument("--nuts-refit", default=None,
                        help="seed: JSON of MDN.fit options overriding the NUTS fits' recorded "
                             "recipe in their refits, e.g. '{\"num_chains\": 2}'")
    parser.add_argument("--keep-seed-rows", type=Path, default=None,
                        help="seed: add the stack rows of this earlier results JSON that were "
                             "not rerun")
    parser.add_argument("--cache", type=Path, default=None,
                        help="seed: save the fits here and reuse them on the next run")
    parser.add_argument("--name", default=None, help="results file name (no suffix)")
    parser.add_argument("--seed-rows", type=Path, default=None,
                        help="take the seed rows from this results JSON instead of running")
    parser.add_argument("--first-split", type=int, default=0,
                        help="run splits from this one on, then the ones before it")
    parser.add_argument("--previous", type=Path, default=None,
                        help="an earlier results JSON whose UCI splits fill those not rerun")
    parser.add_argument("--extra-log", nargs="*", default=[], type=Path,
                        help="UCI: split logs of reruns with more variants, merged in")
    parser.add_argument("--summarise-only", action="store_true",
                        help="UCI: only tabulate the splits already in the log")
    args = parser.parse_args()
    started = time.perf_counter()
    name = args.name or ("stacking_quick" if args.quick else "stacking")
    rows: list[dict] = []
    extra: dict = {"details": {}}

    def save() -> None:
        """Rewrite the results after every part, so a stopped run keeps what it made."""
        settings = {"seed_components": SEED_COMPONENTS, "uci_components": UCI_COMPONENTS,
                    "nuts": args.nuts, "quick": args.quick, "goal": GOAL, "cv": args.cv,
                    "seed_sources": args.seed_sources, "nuts_refit": args.nuts_refit,
                    "uci_splits": 2 if args.quick else args.splits,
                    "elapsed_s": time.perf_counter() - started,
                    "load_average": list(os.getloadavg())}
        write_results(name, {"settings": settings, **extra}, table_rows(rows), quiet=True)
        markdown = RESULTS / f"{name}.md"
        markdown.write_text("\n".join(headline(rows)) + "\n" + markdown.read_text())

    if args.seed_rows is not None:
        seed_run = json.loads(args.seed_rows.read_text())
        rows += [row for row in seed_run["rows"] if row["part"] == "seed"]
        extra["seed_run"] = {"file": args.seed_rows.name, "settings": seed_run["settings"]}
    elif "seed" in args.parts:
        def save_seed(seed_rows: list[dict]) -> None:
            rows[:] = seed_rows
            save()

        rows[:] = run_seed(args.quick, args.nuts, args.cv, args.cache, save_seed,
                           args.seed_sources, json.loads(args.nuts_refit or "{}"))
        if args.keep_seed_rows is not None:  # earlier rows of stacks not rerun this time
            done = {row["model"] for row in rows}
            earlier = json.loads(args.keep_seed_rows.read_text())["rows"]
            rows[:] = rows + [row | {"from": args.keep_seed_rows.name} for row in earlier
                              if row["part"] == "seed" and row["model"] not in done]
        save()
    if "uci" in args.parts:
        datasets = args.datasets[:2] if args.quick else args.datasets
        if not args.summarise_only:
            run_uci_splits(args.quick, args.data, datasets, args.splits, args.first_split,
                           args.cv)
        found = load_splits(args.quick, args.previous, args.extra_log)
        rows += summarise_uci(found, datasets)
        extra["details"].update({d: {str(k): v for k, v in sorted(found[d].items())}
                                 for d in datasets if d in found})
        extra.update(num_steps=300 if args.quick else 1000, num_members=3 if args.quick else 5)
        save()

if __name__ == "__main__":
    main()
