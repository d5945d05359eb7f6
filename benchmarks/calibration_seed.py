"""Calibration of the n = 200 seed fits on 20 000 held-out points.

Fits the seed problem (``bm.datasets.inverse_sine``, key 0, 200 training points) with the
n = 200 settings of ``inference_seed.py`` (model, prior, MAP/ensemble/SVI/NUTS budgets and
keys), and scores MAP, the deep ensemble, SVI with the mean-field Normal guide started
from the MAP fit (the best VI fit there) and NUTS (started from the ensemble) with
``bayes_mdn.metrics``: central-interval coverage at 50/80/90/95 %, the KS test of PIT
uniformity, CRPS, log score, RMSE and MAE. The issue's target: 90 % central intervals
cover 88-92 % of the test points for the NUTS fit and the best VI fit.

Every fit is scored on at most ``--draws`` posterior draws (evenly spaced; default 100,
``inference_seed.py``'s ``COVERAGE_DRAWS``): the quantile bisection and the CRPS cost
grow with draws x components x test points, about 10 CPU minutes per 100 draws here.

    python benchmarks/calibration_seed.py [--quick] [--draws 100] [--prior hierarchical]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import timed, write_results
from inference_seed import NUM_TEST, SETTINGS, prior_of

import bayes_mdn as bm

NUM_TRAIN = 200
#: Draws of SVI's fitted guide (as in inference_seed.py); scoring uses at most --draws.
SVI_DRAWS = 400
LEVELS = (0.5, 0.8, 0.9, 0.95)
TARGET_90 = (0.88, 0.92)


def fits(X, y, quick: bool, prior: str = "fan_in"):
    """(name, posterior, fit seconds) for each scored method, as inference_seed.py fits."""
    setting = dict(SETTINGS[NUM_TRAIN])
    nuts_options = dict(setting["nuts"])
    if quick:
        setting.update(map_steps=300, members=4,
                       svi={**setting["svi"], "num_steps": 300, "num_particles": 1})
        nuts_options.update(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4)
    model = bm.MDN(num_components=setting["K"], hidden_sizes=setting["hidden"],
                   prior=prior_of(setting, prior))
    map_fit, map_s = timed(lambda: model.fit(X, y, key=jax.random.key(1),
                                             num_steps=setting["map_steps"], ema_decay=0.995))
    yield "map", map_fit, map_s
    ensemble, ensemble_s = timed(lambda: model.fit(
        X, y, key=jax.random.key(3), method="ensemble", num_members=setting["members"],
        num_steps=setting["map_steps"], ema_decay=0.995))
    yield f"ensemble ({setting['members']})", ensemble, ensemble_s
    svi, svi_s = timed(lambda: model.fit(
        X, y, key=jax.random.key(5), method="svi", guide="normal", init=map_fit,
        num_draws=SVI_DRAWS, **setting["svi"]))
    yield "svi-normal", svi, svi_s
    nuts, nuts_s = timed(lambda: model.fit(X, y, key=jax.random.key(8), method="nuts",
                                           init=ensemble, **nuts_options))
    print(f"nuts: divergences {nuts.summary()['num_divergent']}, max-depth fraction "
          f"{nuts.info['fraction_max_tree_depth']:.2f}", flush=True)
    yield f"nuts ({nuts_options['num_chains']} chains)", nuts, nuts_s


def score(posterior, X_test, y_test, max_draws: int) -> dict:
    total = posterior.num_chains * posterior.num_draws
    predictive = posterior.predictive(X_test, num_draws=min(max_draws, total))
    report, seconds = timed(lambda: bm.metrics.calibration_report(predictive, y_test,
                                                                  levels=LEVELS))
    coverage = report["coverage"]
    return {
        "draws": predictive.num_draws,
        "coverage_50": coverage[0.5], "coverage_80": coverage[0.8],
        "coverage_90": coverage[0.9], "coverage_95": coverage[0.95],
        "in_target_90": bool(TARGET_90[0] <= coverage[0.9] <= TARGET_90[1]),
        "pit_ks_stat": report["pit_ks_statistic"][0], "pit_ks_p": report["pit_ks_pvalue"][0],
        "crps": report["crps"][0], "log_score": report["log_score"],
        "rmse": report["rmse"][0], "mae": report["mae"][0], "score_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny fit budgets and 2000 test points, for a smoke run")
    parser.add_argument("--draws", type=int, default=100,
                        help="posterior draws each fit is scored on (at most)")
    parser.add_argument("--prior", choices=("fan_in", "hierarchical"), default="fan_in",
                        help="the fixed fan-in prior or a hierarchical one (as inference_seed)")
    args = parser.parse_args()
    total = NUM_TRAIN + NUM_TEST
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=NUM_TRAIN / total)
    if args.quick:
        X_test, y_test = X_test[:2000], y_test[:2000]
    exact_log_score = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
    rows = []
    for method, posterior, fit_s in fits(X, y, args.quick, args.prior):
        rows.append({"method": method, **score(posterior, X_test, y_test, args.draws),
                     "fit_s": fit_s})
        print(rows[-1], flush=True)
    name = "calibration_seed_quick" if args.quick else "calibration_seed"
    if args.prior != "fan_in":
        name += f"_{args.prior}"
    write_results(name, {"num_train": NUM_TRAIN, "num_test": int(X_test.shape[0]),
                         "levels": list(LEVELS), "target_90": list(TARGET_90),
                         "max_score_draws": args.draws, "exact_log_score": exact_log_score,
                         "prior": args.prior,
                         "settings": {k: v for k, v in SETTINGS[NUM_TRAIN].items()}}, rows)
    print(f"exact log score (generator density): {exact_log_score:.4f}")


if __name__ == "__main__":
    main()
