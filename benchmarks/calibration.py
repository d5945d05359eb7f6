"""Recalibration and conformal sets (issue 17): seed n = 200, the four UCI sets, conformal.

Parts (``--parts``, each writes its own ``results/calibration_<part>.json`` + ``.md``):

* ``seed``: the seed problem (``inverse_sine``, key 0), 200 training points, 20 000 test
  points, the n = 200 model, prior, budgets and keys of ``inference_seed.py`` for MAP, the
  ensemble (8) and SVI-normal (started from MAP); NUTS (started from the ensemble) with a
  smaller budget than inference_seed's 8 x (500 + 300) (``NUTS_OPTIONS``, stated in the
  results) so that its six fits fit the machine. For each method: the fit on 200 points
  uncalibrated; cross-fitted recalibration (``cv=5``: the method refitted on 4/5 of the 200
  points, each fold started as the full fit was: SVI from a fold MAP fit, NUTS from a fold
  ensemble; no data beyond the 200 points); a separate calibration set of 100 further points
  (held-out form); and the baseline of fitting all 300 points; with ``--variants loo``,
  ``cv="loo"`` (the full fit's PSIS leave-one-out PIT values, no refits; only for fits with
  at least 50 draws: SVI, NUTS). Scored on the test points:
  90 % central coverage and PIT KS statistic (both from the PIT values, exact for a
  continuous family), mean log-likelihood. Targets: coverage in 0.89-0.91, KS <= 0.015,
  log-likelihood no more than 0.01 below the uncalibrated fit.
* ``uci``: the four UCI sets in ``../shared/data/uci``, 20 standard splits, K = 3, one layer
  of 50 ReLU (``uci.py``'s model), MAP (the cheapest method) with ``uci.py``'s tuned step
  count for K = 3. Per split: fit on the first 80 % of the training rows, recalibrate on the
  last 20 % (held-out form; the test rows are never used before scoring); 90 % coverage on
  the test rows before and after. Target: after within 0.88-0.92 per data set.
* ``conformal``: the ensemble (8) fit on the 200 seed points; 2000 random splits of the
  20 000 test points into 500 calibration and 19 500 test points; 90 % sets by the density
  score (HDR-style) and by the PIT score (single intervals). Target: mean coverage >= 0.90
  and within the finite-sample band [0.9, 0.9 + 1/501]; at bimodal inputs (two modes, the
  second at >= 10 % of the first's density) HDR sets >= 30 % shorter than the intervals.

    python benchmarks/calibration.py [--quick] [--parts seed uci conformal]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from _common import timed, write_results
from inference_seed import NUM_TEST, SETTINGS, prior_of

import bayes_mdn as bm

NUM_TRAIN = 200
NUM_EXTRA = 100
SVI_DRAWS = 400
SCORE_DRAWS = 100
#: NUTS budget here (inference_seed.py: 8 chains x (500 + 300), depth 6): six NUTS fits
#: (the full fit and five folds) on 2 shared cores.
NUTS_OPTIONS = dict(num_chains=4, num_warmup=300, num_samples=150, max_tree_depth=6)
UCI_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
UCI_SETS = ("bostonHousing", "concrete", "energy", "yacht")
CONFORMAL_SPLITS = 2000
CONFORMAL_CAL = 500


def ks_statistic(u: np.ndarray) -> float:
    u = np.sort(u)
    n = u.size
    grid = np.arange(1, n + 1) / n
    return float(max(np.max(grid - u), np.max(u - (grid - 1 / n))))


def seed_fitters(setting: dict, quick: bool):
    """name -> fit(X, y, key) reproducing inference_seed.py's n = 200 fits (and keys)."""
    model = bm.MDN(num_components=setting["K"], hidden_sizes=setting["hidden"],
                   prior=prior_of(setting))
    steps = 300 if quick else setting["map_steps"]
    members = 4 if quick else setting["members"]
    svi = ({**setting["svi"], "num_steps": 300, "num_particles": 1} if quick
           else setting["svi"])
    nuts = (dict(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4) if quick
            else NUTS_OPTIONS)

    def fit_map(X, y, key):
        return model.fit(X, y, key=key, num_steps=steps, ema_decay=0.995)

    def fit_ensemble(X, y, key):
        return model.fit(X, y, key=key, method="ensemble", num_members=members,
                         num_steps=steps, ema_decay=0.995)

    def fit_svi(X, y, key):
        map_key, svi_key = jax.random.split(key)
        return model.fit(X, y, key=svi_key, method="svi", guide="normal",
                         init=fit_map(X, y, map_key), num_draws=SVI_DRAWS, **svi)

    def fit_nuts(X, y, key):
        ens_key, nuts_key = jax.random.split(key)
        return model.fit(X, y, key=nuts_key, method="nuts",
                         init=fit_ensemble(X, y, ens_key), **nuts)

    return {"map": fit_map, f"ensemble ({members})": fit_ensemble, "svi-normal": fit_svi,
            f"nuts ({nuts['num_chains']} x {nuts['num_samples']})": fit_nuts}


def score(posterior, X, y) -> dict:
    draws = min(SCORE_DRAWS, posterior.num_chains * posterior.num_draws)
    pred = posterior.predictive(X, num_draws=draws)
    u = np.asarray(pred.cdf(y), np.float64)[:, 0]
    return {"coverage_90": float(np.mean((u >= 0.05) & (u <= 0.95))),
            "pit_ks": ks_statistic(u), "test_ll": float(np.mean(pred.log_prob(y)))}


def run_seed(quick: bool, methods: tuple[str, ...] | None = None,
             variants: tuple[str, ...] = ("cv", "all")) -> None:
    """Seed part. `variants`: ``cv`` (cv=5 and a held-out set of 100), ``loo``
    (``cv="loo"``, no refits), ``all`` (the baseline fit on all 300 points)."""
    setting = dict(SETTINGS[NUM_TRAIN])
    total = NUM_TRAIN + NUM_TEST
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=NUM_TRAIN / total)
    X_extra, y_extra, _, _ = bm.datasets.inverse_sine(
        jax.random.key(1), num_samples=2 * NUM_EXTRA, train_fraction=0.5)
    if quick:
        X_test, y_test = X_test[:2000], y_test[:2000]
    keys = {"map": 1, "ensemble": 3, "svi-normal": 5, "nuts": 8}
    rows = []
    suffix = ("" if methods is None else "_" + "_".join(methods)) + (
        "" if set(variants) == {"cv", "all"} else "_" + "_".join(variants))
    for name, fitter in seed_fitters(setting, quick).items():
        if methods is not None and name.split(" ")[0] not in methods:
            continue
        key = jax.random.key(keys[name.split(" ")[0]])
        post, fit_s = timed(lambda fitter=fitter, key=key: fitter(X, y, key))
        base = score(post, X_test, y_test)
        rows.append({"method": name, "variant": "uncalibrated (200)", **base, "fit_s": fit_s})
        print(rows[-1], flush=True)
        for method in ("beta", "isotonic") if "loo" in variants else ():
            if post.kind == "point" or post.num_chains * post.num_draws < 50:
                rows.append({"method": name, "variant": f"loo {method} (200)",
                             "note": "not applicable: needs >= 50 posterior draws"})
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loo, loo_s = timed(lambda post=post, method=method: post.recalibrate(
                    X, y, method=method, cv="loo"))
            scored = score(loo, X_test, y_test)
            record = loo.info["recalibration"]
            rows.append({"method": name, "variant": f"loo {method} (200)", **scored,
                         "fit_s": loo_s, "ll_drop": base["test_ll"] - scored["test_ll"],
                         "max_pareto_k": record["max_pareto_k"],
                         "fraction_high_pareto_k": record["fraction_high_pareto_k"],
                         "warned": bool(caught)})
            print(rows[-1], flush=True)
        for method in ("beta", "isotonic") if "cv" in variants else ():
            # beta refits the folds and records them; isotonic replays the same fold fits
            # (same key, same folds): the same PIT values, another map.
            refit = (_recording(fitter) if method == "beta"
                     else lambda Xf, yf, key: _REFITS.pop(0))
            cross, cv_s = timed(lambda post=post, method=method, refit=refit: post.recalibrate(
                X, y, method=method, cv=5, key=jax.random.key(11),
                refit=refit, num_draws=SCORE_DRAWS))
            scored = score(cross, X_test, y_test)
            rows.append({"method": name, "variant": f"cv=5 {method} (200)", **scored,
                         "fit_s": cv_s, "ll_drop": base["test_ll"] - scored["test_ll"]})
            print(rows[-1], flush=True)
            held = post.recalibrate(X_extra, y_extra, method=method, num_draws=SCORE_DRAWS)
            scored = score(held, X_test, y_test)
            rows.append({"method": name, "variant": f"held-out 100 {method} (200 + 100)",
                         **scored, "ll_drop": base["test_ll"] - scored["test_ll"]})
            print(rows[-1], flush=True)
        _REFITS.clear()
        if "all" not in variants:
            _write_seed(rows, quick, X_test, suffix)
            continue
        X_all, y_all = np.concatenate([X, X_extra]), np.concatenate([y, y_extra])
        post_all, fit_s = timed(lambda fitter=fitter, key=key, X_all=X_all, y_all=y_all:
                                fitter(X_all, y_all, key))
        rows.append({"method": name, "variant": "uncalibrated (all 300)",
                     **score(post_all, X_test, y_test), "fit_s": fit_s})
        print(rows[-1], flush=True)
        _write_seed(rows, quick, X_test, suffix)


def _write_seed(rows, quick, X_test, suffix="") -> None:
    """Written after every method, so that a long run leaves its finished rows."""
    write_results("calibration_seed_recal" + suffix + ("_quick" if quick else ""),
                  {"num_train": NUM_TRAIN, "num_extra": NUM_EXTRA,
                   "num_test": int(X_test.shape[0]), "score_draws": SCORE_DRAWS,
                   "nuts_options": NUTS_OPTIONS, "targets": {"coverage_90": [0.89, 0.91],
                                                             "pit_ks_max": 0.015,
                                                             "ll_drop_max": 0.01}}, rows,
                  quiet=True)


#: Fold fits of the beta cross-fit, replayed by the isotonic one.
_REFITS: list = []


def _recording(fitter):
    def refit(X, y, key):
        result = fitter(X, y, key)
        _REFITS.append(result)
        return result
    return refit


def run_uci(quick: bool, num_splits: int = 20) -> None:
    results = json.loads((Path(__file__).parent / "results" / "uci.json").read_text())
    tuned = {row["dataset"]: int(row["num_steps"]) for row in results["rows"]
             if str(row.get("model", "")).endswith("K=3")}
    rows = []
    for dataset in UCI_SETS:
        steps = 300 if quick else tuned.get(dataset, 2000)
        before, after, beta_after, lls = [], [], [], []
        model = bm.MDN(num_components=3, hidden_sizes=(50,), activation="relu",
                       prior=bm.priors.FanInNormal(1.0))
        for split in range(2 if quick else num_splits):
            X, y, X_test, y_test = bm.datasets.load_uci(UCI_DATA / dataset, split)
            cut = len(X) - round(0.2 * len(X))
            post = model.fit(X[:cut], y[:cut], key=jax.random.key(split), num_steps=steps)
            u = np.asarray(post.predictive(X_test).cdf(y_test), np.float64)[:, 0]
            before.append(np.mean((u >= 0.05) & (u <= 0.95)))
            for method, store in (("isotonic", after), ("beta", beta_after)):
                recal = post.recalibrate(X[cut:], y[cut:], method=method)
                v = np.asarray(recal.predictive(X_test).cdf(y_test), np.float64)[:, 0]
                store.append(np.mean((v >= 0.05) & (v <= 0.95)))
            lls.append((float(np.mean(post.predictive(X_test).log_prob(y_test))),
                        float(np.mean(recal.predictive(X_test).log_prob(y_test)))))
        lls = np.array(lls)
        row = {"dataset": dataset, "num_steps": steps, "splits": len(before),
               "coverage_90_before": float(np.mean(before)),
               "coverage_90_after_isotonic": float(np.mean(after)),
               "coverage_90_after_beta": float(np.mean(beta_after)),
               "se": float(np.std(after) / np.sqrt(len(after))),
               "test_ll_before": float(lls[:, 0].mean()),
               "test_ll_after_beta": float(lls[:, 1].mean())}
        row["after_in_0.88-0.92"] = bool(0.88 <= row["coverage_90_after_isotonic"] <= 0.92)
        rows.append(row)
        print(row, flush=True)
    write_results("calibration_uci" + ("_quick" if quick else ""),
                  {"model": "MAP, K=3, (50,) relu, FanInNormal(1.0)",
                   "protocol": "fit on first 80% of train rows, recalibrate on last 20%"},
                  rows)


def run_boston(quick: bool, num_splits: int = 20) -> None:
    """Why bostonHousing misses 0.88-0.92 after recalibration (issue 17): per split, the
    uci part's protocol (MAP on the first 80 % of the training rows, isotonic map from the
    last 20 %) beside cross-fitting on every training row (``cv=5``, the map applied to the
    fit on all of them: five times the calibration rows), and the finite-sample expectation
    of a plug-in 90 % interval from n calibration PIT values."""
    results = json.loads((Path(__file__).parent / "results" / "uci.json").read_text())
    steps = 300 if quick else next(int(row["num_steps"]) for row in results["rows"]
                                   if row["dataset"] == "bostonHousing"
                                   and str(row.get("model", "")).endswith("K=3"))
    model = bm.MDN(num_components=3, hidden_sizes=(50,), activation="relu",
                   prior=bm.priors.FanInNormal(1.0))
    rows = []

    def coverage(post, X_test, y_test):
        u = np.asarray(post.predictive(X_test).cdf(y_test), np.float64)[:, 0]
        return float(np.mean((u >= 0.05) & (u <= 0.95)))

    for split in range(2 if quick else num_splits):
        X, y, X_test, y_test = bm.datasets.load_uci(UCI_DATA / "bostonHousing", split)
        cut = len(X) - round(0.2 * len(X))
        post = model.fit(X[:cut], y[:cut], key=jax.random.key(split), num_steps=steps)
        slice_map = post.recalibrate(X[cut:], y[cut:], method="isotonic")
        u_cal = np.asarray(post.predictive(X[cut:]).cdf(y[cut:]), np.float64)[:, 0]
        full = model.fit(X, y, key=jax.random.key(split), num_steps=steps)
        cross = full.recalibrate(X, y, method="isotonic", cv=5, key=jax.random.key(100 + split))
        rows.append({"split": split, "num_calibration": len(X) - cut,
                     "num_test": len(X_test),
                     "calibration_coverage_before": float(np.mean((u_cal >= 0.05)
                                                                  & (u_cal <= 0.95))),
                     "test_coverage_before": coverage(post, X_test, y_test),
                     "test_coverage_slice_isotonic": coverage(slice_map, X_test, y_test),
                     "test_coverage_full_before": coverage(full, X_test, y_test),
                     "test_coverage_full_cv5_isotonic": coverage(cross, X_test, y_test)})
        print(rows[-1], flush=True)
    summary = {name: [float(np.mean([r[name] for r in rows])),
                      float(np.std([r[name] for r in rows]) / np.sqrt(len(rows)))]
               for name in rows[0] if "coverage" in name}
    n_cal = rows[0]["num_calibration"]
    write_results("calibration_boston" + ("_quick" if quick else ""),
                  {"num_steps": steps, "summary_mean_se": summary,
                   "binomial_se_of_one_split_test_coverage": float(
                       np.sqrt(0.09 / rows[0]["num_test"])),
                   "binomial_se_of_the_map_at_90pct_per_split": float(np.sqrt(0.09 / n_cal))},
                  rows)
    print(summary)


def run_ks_floor(quick: bool, reps: int = 200) -> None:
    """The PIT KS statistic on 20 000 test points that a map fitted to n = 200 (or 100) PIT
    values reaches when the base predictive's miscalibration is known exactly: PIT values
    ``Phi(z / 1.15)`` of standard Normal z (a predictive 15 % too wide, about the seed fits'
    miscalibration); the test statistic is the KS of ``R(u)`` on fresh values. Its floor is
    the map's estimation error, about 0.87 / sqrt(n) for an empirical cdf."""
    from scipy import stats

    rng = np.random.default_rng(0)
    reps = 10 if quick else reps
    rows = []
    for n in (100, 200):
        for method in ("isotonic", "beta"):
            values = []
            for _ in range(reps):
                fitted = bm.calibration.fit_map(stats.norm.cdf(rng.normal(size=n) * 1.15),
                                                method)
                test = stats.norm.cdf(rng.normal(size=NUM_TEST) * 1.15)
                values.append(ks_statistic(fitted(test)))
            values = np.asarray(values)
            rows.append({"num_pit_values": n, "method": method, "reps": reps,
                         "mean_ks": float(values.mean()),
                         "fraction_ks_at_most_0.015": float(np.mean(values <= 0.015)),
                         "ks_quantile_10": float(np.quantile(values, 0.1))})
            print(rows[-1], flush=True)
    write_results("calibration_ks_floor" + ("_quick" if quick else ""),
                  {"num_test": NUM_TEST, "true_miscalibration": "u = Phi(z / 1.15)",
                   "empirical_cdf_expected_ks_n200": 0.8687 / np.sqrt(200)}, rows)


def run_conformal(quick: bool) -> None:
    setting = dict(SETTINGS[NUM_TRAIN])
    total = NUM_TRAIN + NUM_TEST
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=NUM_TRAIN / total)
    if quick:
        X_test, y_test = X_test[:4000], y_test[:4000]
    fitter = list(seed_fitters(setting, quick).values())[1]
    post, fit_s = timed(lambda: fitter(X, y, jax.random.key(3)))
    pred = post.predictive(X_test)
    density_score = -pred.log_prob(y_test)
    pit_score = np.abs(np.asarray(pred.cdf(y_test), np.float64)[:, 0] - 0.5)
    rng = np.random.default_rng(0)
    n = CONFORMAL_CAL
    splits = 20 if quick else CONFORMAL_SPLITS
    covers = {"density": [], "pit": []}
    thresholds = {"density": [], "pit": []}
    for _ in range(splits):
        order = rng.permutation(len(X_test))
        cal, test = order[:n], order[n:]
        for name, values in (("density", density_score), ("pit", pit_score)):
            rank = int(np.ceil((n + 1) * 0.9))
            q = np.sort(values[cal])[rank - 1]
            thresholds[name].append(q)
            covers[name].append(float(np.mean(values[test] <= q)))
    band = (0.9, 0.9 + 1 / (n + 1))
    # Bimodal inputs: two modes, the second at >= 10 % of the first's density.
    modes = pred.modes(min_relative_density=0.1)
    bimodal = np.array([len(m) >= 2 for m in modes])
    # Sets at bimodal inputs, with the first split's calibration rows, through the API.
    order = np.random.default_rng(1).permutation(len(X_test))
    cal, rest = order[:n], order[n:]
    sets = {}
    for name in ("density", "pit"):
        predictor = bm.calibration.conformal(post, X_test[cal], y_test[cal], alpha=0.1,
                                             score=name)
        where = rest[bimodal[rest]][: (200 if quick else 2000)]
        lengths = predictor.set_length(X_test[where])
        inside = predictor.contains(X_test[where], y_test[where])
        sets[name] = {"mean_length_bimodal": float(np.mean(lengths)),
                      "coverage_bimodal": float(np.mean(inside)),
                      "num_bimodal_scored": int(where.size)}
    ratio = sets["density"]["mean_length_bimodal"] / sets["pit"]["mean_length_bimodal"]
    rows = [{"score": name, "splits": splits, "n_cal": n,
             "mean_coverage": float(np.mean(covers[name])),
             "sd_coverage": float(np.std(covers[name])),
             "mc_se": float(np.std(covers[name]) / np.sqrt(splits)),
             "in_band": bool(band[0] - 2 * np.std(covers[name]) / np.sqrt(splits)
                             <= np.mean(covers[name]) <= band[1] + 2 * np.std(covers[name])
                             / np.sqrt(splits)),
             **sets[name]} for name in ("density", "pit")]
    write_results("calibration_conformal" + ("_quick" if quick else ""),
                  {"band": band, "fraction_bimodal": float(bimodal.mean()),
                   "hdr_to_interval_length_ratio_bimodal": ratio, "fit_s": fit_s}, rows)
    print(f"bimodal inputs: {bimodal.mean():.3f}; HDR / interval length at bimodal inputs "
          f"{ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    parser.add_argument("--parts", nargs="+", default=["conformal", "uci", "seed"],
                        choices=["seed", "uci", "conformal", "boston", "ks_floor"])
    parser.add_argument("--uci-splits", type=int, default=20, help="UCI splits (max 20)")
    parser.add_argument("--methods", nargs="+", default=None,
                        choices=["map", "ensemble", "svi-normal", "nuts"],
                        help="seed part: only these methods (results file gets a suffix)")
    parser.add_argument("--variants", nargs="+", default=["cv", "all"],
                        choices=["cv", "loo", "all"],
                        help="seed part: cv (cv=5 and held-out 100), loo (cv='loo'), all "
                             "(fit on 300); other than the default, the file gets a suffix")
    args = parser.parse_args()
    for part in args.parts:
        started = time.perf_counter()
        if part == "uci":
            run_uci(args.quick, args.uci_splits)
        elif part == "boston":
            run_boston(args.quick, args.uci_splits)
        elif part == "ks_floor":
            run_ks_floor(args.quick)
        else:
            if part == "seed":
                run_seed(args.quick, None if args.methods is None else tuple(args.methods),
                         tuple(args.variants))
            else:
                run_conformal(args.quick)
        print(f"{part}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
