"""NUTS with its default options on the seed problem at n = 4000 (the issue's target: done
within 10 minutes on 2 CPU cores, test log-likelihood >= -1.325).

The model is ``inference_seed.py``'s at n = 4000 (K = 20, hidden (15, 15), tanh, the demo's
priors: FanInNormal(2) with FanInNormal(0.5) on the scale head), trained on 4000 points of
``bm.datasets.inverse_sine`` (key 0, 20 000 test points), scored like ``inference_seed.py``
(mean test log-likelihood over 400 draws, central 90 % interval coverage). ``method="nuts"``
gets no options at all, unless ``--candidate`` names explicit settings to compare.

    python benchmarks/nuts_defaults.py [--candidate NAME ...] [--quick]

Writes ``results/nuts_defaults.json`` and ``.md`` (``_quick`` with ``--quick``), with the
load average (``os.getloadavg``) before and after each fit: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
from _common import write_results
from inference_seed import NUM_TEST, SETTINGS, prior_of, score

import bayes_mdn as bm

#: Explicit settings compared with the defaults (the defaults' row is "default").
CANDIDATES = {
    "default": {},
    "random start, depth 6": dict(init=None, max_tree_depth=6, num_warmup=300,
                                  num_samples=200),
    "random start, depth 10 (old default), 100 + 50": dict(init=None, max_tree_depth=10,
                                                           num_warmup=100, num_samples=50),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", nargs="+", default=["default"], choices=list(CANDIDATES))
    parser.add_argument("--quick", action="store_true",
                        help="n = 400 and 2000 test points: smoke run")
    args = parser.parse_args()
    num_train = 400 if args.quick else 4000
    num_test = 2000 if args.quick else NUM_TEST
    setting = SETTINGS[4000]
    total = num_train + num_test
    X, y, X_test, y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                                    train_fraction=num_train / total)
    model = bm.MDN(num_components=setting["K"], hidden_sizes=setting["hidden"],
                   prior=prior_of(setting))
    rows = []
    for name in args.candidate:
        load_before = os.getloadavg()
        started, cpu_started = time.perf_counter(), time.process_time()
        posterior = model.fit(X, y, key=jax.random.key(8), method="nuts", **CANDIDATES[name])
        jax.block_until_ready(posterior.flat_draws())
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        test_ll, coverage = score(posterior, X_test, y_test)
        info = posterior.info
        rows.append({"candidate": name, "n_train": num_train, "fit_s": seconds,
                     # CPU seconds of this process (all threads): on a machine shared with
                     # other jobs, wall time says little; on 2 idle cores, wall time is at
                     # least cpu_s / 2.
                     "cpu_s": cpu_seconds,
                     "test_ll": test_ll, "coverage_90": coverage,
                     "target_met": bool(test_ll >= -1.325 and min(seconds, cpu_seconds) <= 600),
                     "num_chains": info["num_chains"], "num_warmup": info["num_warmup"],
                     "num_samples": info["num_samples"],
                     "max_tree_depth": info["max_tree_depth"], "init": info.get("init"),
                     "fraction_max_tree_depth": info["fraction_max_tree_depth"],
                     "num_divergent": info["num_divergent"],
                     "num_leapfrog_steps": info["num_leapfrog_steps"],
                     "load_before": round(load_before[0], 2),
                     "load_after": round(os.getloadavg()[0], 2),
                     "cpu_count": os.cpu_count()})
        print(rows[-1], flush=True)
    write_results("nuts_defaults_quick" if args.quick else "nuts_defaults",
                  {"settings": {"model": "inference_seed.py n=4000", "key": 8,
                                "num_test": num_test}}, rows)


if __name__ == "__main__":
    main()
