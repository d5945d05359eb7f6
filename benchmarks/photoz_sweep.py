"""Recipe sweep for benchmarks/photoz.py on the DC2 *training* file only.

Each candidate is one MAP fit (or a small ensemble) on the fixed 80 % of the training rows
(:func:`photoz.tune_split`), early-stopped on the other 20 % (``validation=``), and scored
there (exact log score, CRPS, sigma_NMAD, outlier rates of the mode). The validation file is
never read. Usage::

    PYTHONPATH=$PWD python benchmarks/photoz_sweep.py CANDIDATE [CANDIDATE ...]

prints one JSON line per candidate (name, scores, fit seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import photoz

CANDIDATES = {
    # name: (feature set, K, hidden sizes, members, learning rate, FanInNormal scale)
    "base": ("colours", 10, (64, 64), 1, 0.005, 1.0),
    "errors": ("errors", 10, (64, 64), 1, 0.005, 1.0),
    "wide": ("colours", 20, (128, 128), 1, 0.005, 1.0),
    "deep": ("colours", 10, (128, 128, 128), 1, 0.005, 1.0),
    "ens5": ("colours", 10, (64, 64), 5, 0.005, 1.0),
    "ens5_errors": ("errors", 10, (64, 64), 5, 0.005, 1.0),
    "ens5_prior05": ("colours", 10, (64, 64), 5, 0.005, 0.5),
    "ens10": ("colours", 10, (64, 64), 10, 0.005, 1.0),
}


def main() -> None:
    import jax

    import bayes_mdn as bm

    train = __import__("pandas").read_csv(photoz.DEFAULT_DATA / "dc2_training.csv")
    limits, flags = photoz.limiting_magnitudes(train), photoz.flagged_bands(train)
    y = train["redshift"].to_numpy()
    fit_rows, held_rows = photoz.tune_split(len(y))
    for name in sys.argv[1:]:
        feature_set, K, hidden, members, lr, scale = CANDIDATES[name]
        X = photoz.features(train, limits, flags, errors=feature_set == "errors")
        model = bm.MDN(num_components=K, hidden_sizes=hidden, activation="tanh",
                       prior=bm.priors.FanInNormal(scale))
        started = time.perf_counter()
        options = dict(num_steps=4000, validation=(X[held_rows], y[held_rows]),
                       learning_rate=lr, ema_decay=0.995, num_evaluations=40, patience=8)
        if members > 1:
            post = model.fit(X[fit_rows], y[fit_rows], key=jax.random.key(0),
                             method="ensemble", num_members=members, **options)
        else:
            post = model.fit(X[fit_rows], y[fit_rows], key=jax.random.key(0), method="map",
                             **options)
        seconds = time.perf_counter() - started
        pred = post.predictive(X[held_rows])
        report = bm.metrics.photoz_report(pred, y[held_rows], grid=photoz.GRID)
        keep = ("log_score", "crps", "sigma_nmad", "outlier_rate", "outlier_rate_0.15",
                "pit_ks_statistic")
        pdf = np.exp(pred.log_prob_grid(photoz.GRID))
        z = y[held_rows]
        per_galaxy = bm.metrics.gridded_crps(pdf, photoz.GRID, z)
        tails = np.abs(photoz.GRID[np.argmax(pdf, axis=1)] - z) / (1 + z) > 0.15
        row = {"name": name, **{k: round(float(report[k]), 5) for k in keep},
               "crps_from_0.15_outliers": round(float(per_galaxy[tails].sum() / z.size), 5),
               "best_step": np.atleast_1d(post.history["best_step"]).tolist(),
               "fit_seconds": round(seconds, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
