"""The demo setting over many keys: no NaN/inf anywhere, and the spread of test log-likelihood.

Each key draws a fresh data set (40 000 points, 10 % train) and fits the demo's MDN (K = 20,
hidden (15, 15), tanh, the demo's priors, MAP with iterate averaging), exactly as
``bayes-mdn demo --seed <key>`` does.

    python benchmarks/map_seed_sweep.py [--num-keys 20] [--num-steps 2000]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from _common import write_results

import bayes_mdn as bm
from bayes_mdn.cli import _demo_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-keys", type=int, default=20)
    parser.add_argument("--num-steps", type=int, default=2000)
    args = parser.parse_args()

    model = bm.MDN(num_components=20, hidden_sizes=(15, 15), prior=_demo_prior())
    rows = []
    for seed in range(args.num_keys):
        data_key, fit_key, _ = jax.random.split(jax.random.key(seed), 3)
        X, y, X_test, y_test = bm.datasets.inverse_sine(data_key)
        started = time.perf_counter()
        post = model.fit(X, y, key=fit_key, num_steps=args.num_steps, ema_decay=0.995)
        seconds = time.perf_counter() - started
        loss = post.history["loss"]
        test_lp = post.predictive(X_test).log_prob(y_test)
        optimal = float(np.mean(bm.datasets.inverse_sine_log_prob(X_test, y_test)))
        rows.append({
            "seed": seed,
            "finite_loss": bool(np.isfinite(loss).all()),
            "finite_predictions": bool(np.isfinite(test_lp).all()),
            "test_log_likelihood": float(np.mean(test_lp)),
            "optimal": optimal,
            "gap": optimal - float(np.mean(test_lp)),
            "fit_seconds": seconds,
        })
        print(rows[-1], flush=True)
    test_ll = np.array([row["test_log_likelihood"] for row in rows])
    summary = {
        "num_keys": args.num_keys,
        "all_finite": all(row["finite_loss"] and row["finite_predictions"] for row in rows),
        "test_log_likelihood_mean": float(test_ll.mean()),
        "test_log_likelihood_min": float(test_ll.min()),
        "test_log_likelihood_max": float(test_ll.max()),
        "keys_meeting_-1.335": int(np.sum(test_ll >= -1.335)),
    }
    write_results("map_seed_sweep", summary, rows)
    print(summary)


if __name__ == "__main__":
    main()
