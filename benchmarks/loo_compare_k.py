"""How many mixture components? PSIS-LOO model comparison on the seed problem.

Fits the seed's network (two hidden layers of 15 units) with K in {1, 2, 5, 20} Normal
components to 4000 training points of the inverse-sine problem (deep ensembles of 8 members,
the seed's MAP recipe run from 8 starts), ranks the fits with :func:`bayes_mdn.compare`
(PSIS-LOO over the training data, arviz underneath), and checks the ranking against what
LOO estimates: the log-likelihood on 20 000 held-out points, next to the exact conditional
density's (the best any model can do).

An ensemble's 8 members are few draws for importance sampling: expect arviz's Pareto-k
warning (``warning`` column) and treat ``elpd_loo`` as a rough estimate; the held-out column
is the check. The ordering, and that K = 1 (a unimodal Gaussian for a trimodal p(y | x))
loses by a wide margin, is the point.

    python benchmarks/loo_compare_k.py [--quick]

Writes ``results/loo_compare_k.json`` and ``results/loo_compare_k.md``. The cells (``# %%``)
run as a notebook too (e.g. with jupytext).
"""

# %%
from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
from _common import write_results

import bayes_mdn as bm
from bayes_mdn.priors import FanInNormal

NUM_TRAIN = 4000
NUM_TEST = 20_000
COMPONENTS = (1, 2, 5, 20)
#: The n = 4000 setting of inference_seed.py: the seed's network and the demo's priors.
HIDDEN = (15, 15)
PRIOR = {"default": FanInNormal(2.0), "scale": FanInNormal(0.5)}
FIT = dict(method="ensemble", num_members=8, num_steps=2000, ema_decay=0.995,
           num_evaluations=1)


# %%
def fit_all(X, y, components, fit_options):
    """One ensemble per K; returns {name: Posterior} and {name: fit seconds}."""
    fits, seconds = {}, {}
    for num_components in components:
        model = bm.MDN(num_components=num_components, hidden_sizes=HIDDEN, prior=PRIOR)
        started = time.perf_counter()
        fits[f"K={num_components}"] = model.fit(X, y, key=jax.random.key(num_components),
                                                **fit_options)
        seconds[f"K={num_components}"] = time.perf_counter() - started
        print(f"K={num_components}: {seconds[f'K={num_components}']:.1f} s", flush=True)
    return fits, seconds


# %%
def compare_fits(fits, X, y, X_test, y_test, seconds):
    """bm.compare on the training data, plus held-out and diagnostic columns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k > 0.7 with 8 draws: in the table instead
        table = bm.compare(fits, X, y)
    exact = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    rows = []
    for name, entry in table.iterrows():
        posterior = fits[name]
        test_ll = float(np.mean(posterior.predictive(X_test).log_prob(y_test)))
        report = bm.diagnostics.diagnose(posterior, warn=False)
        rows.append({
            "model": name,
            "rank": int(entry["rank"]),
            "elpd_loo": float(entry["elpd_loo"]),
            "elpd_loo_per_point": float(entry["elpd_loo"]) / X.shape[0],
            "se": float(entry["se"]),
            "elpd_diff": float(entry["elpd_diff"]),
            "dse": float(entry["dse"]),
            "p_loo": float(entry["p_loo"]),
            "weight": float(entry["weight"]),
            "pareto_k_warning": bool(entry["warning"]),
            "test_ll": test_ll,
            "gap_to_exact": exact - test_ll,
            "effective_components": report.effective_components,
            "dead_components": report.dead_components,
            "fit_s": seconds[name],
        })
    return rows, exact


# %%
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke run")
    args = parser.parse_args()
    fit_options = dict(FIT)
    num_train, num_test = NUM_TRAIN, NUM_TEST
    if args.quick:
        fit_options.update(num_members=4, num_steps=200)
        num_train, num_test = 500, 2000
    X, y, X_test, y_test = bm.datasets.inverse_sine(
        jax.random.key(0), num_samples=num_train + num_test,
        train_fraction=num_train / (num_train + num_test))
    fits, seconds = fit_all(X, y, COMPONENTS, fit_options)
    rows, exact = compare_fits(fits, X, y, X_test, y_test, seconds)
    last = rows[-1]
    summary = {
        "ranking": [row["model"] for row in rows],
        "k1_last": last["model"] == "K=1",
        "k1_elpd_diff_in_dse": last["elpd_diff"] / last["dse"] if last["dse"] > 0 else None,
        "exact_test_ll": exact,
        "loo_and_held_out_agree": [row["model"] for row in rows]
        == [row["model"] for row in sorted(rows, key=lambda row: -row["test_ll"])],
    }
    settings = {"num_train": num_train, "num_test": num_test, "hidden": list(HIDDEN),
                "prior": "FanInNormal(2), scale head FanInNormal(0.5)",
                "fit": {name: value for name, value in fit_options.items()}}
    write_results("loo_compare_k_quick" if args.quick else "loo_compare_k",
                  {"settings": settings, "summary": summary}, rows)
    print(summary)


if __name__ == "__main__":
    main()
