"""Prior sensitivity on the seed problem with 200 training points: NUTS under several priors.

For each prior the script fits a deep ensemble (8 MAP members, the NUTS starting points) and
then multi-chain NUTS, one chain per member, on the n = 200 setting of
``inference_seed.py`` (K = 5, one hidden layer of 20 units), and reports the test
log-likelihood on 20 000 points against the exact conditional density, the 90 % interval
coverage, divergences and fit seconds. The MAP member with the first key is reported too:
hierarchical priors matter most where the posterior is wide.

    python benchmarks/prior_sensitivity.py [--priors fan_in_2 hierarchical ...] [--quick]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import timed, write_results
from inference_seed import NUM_TEST, SETTINGS, score

import bayes_mdn as bm
from bayes_mdn import priors

PRIORS = {
    "fan_in_1": priors.FanInNormal(1.0),
    "fan_in_2": priors.FanInNormal(2.0),
    "laplace_2": priors.Laplace(float(2.0 / np.sqrt(2.0))),  # same variance as fan_in_2
    "student_t_3": priors.StudentT(3.0, float(2.0 / np.sqrt(3.0))),  # same variance as fan_in_2
    "hierarchical": priors.Hierarchical(2.0, bias_scale=1.0),
    "hierarchical_ard": priors.Hierarchical(2.0, bias_scale=1.0, group="input"),
    "horseshoe": priors.Horseshoe(global_scale=1.0, slab_scale=2.0),
}


def run_prior(name: str, data, optimal: float, quick: bool) -> dict:
    X, y, X_test, y_test = data
    setting = SETTINGS[200]
    nuts_options = dict(setting["nuts"])
    steps, members = setting["map_steps"], setting["members"]
    if quick:
        steps, members = 300, 2
        nuts_options.update(num_chains=2, num_warmup=30, num_samples=30, max_tree_depth=4)
    model = bm.MDN(num_components=setting["K"], hidden_sizes=setting["hidden"],
                   prior=PRIORS[name])
    map_fit = model.fit(X, y, key=jax.random.key(1), num_steps=steps, ema_decay=0.995)
    ensemble, ensemble_s = timed(lambda: model.fit(
        X, y, key=jax.random.key(3), method="ensemble", num_members=members,
        num_steps=steps, ema_decay=0.995))
    nuts, nuts_s = timed(lambda: model.fit(X, y, key=jax.random.key(8), method="nuts",
                                           init=ensemble, **nuts_options))
    rows = {}
    for label, posterior in (("map", map_fit), ("ensemble", ensemble), ("nuts", nuts)):
        rows[label] = score(posterior, X_test, y_test)
    row = {"prior": name, "spec": repr(PRIORS[name]),
           "map_test_ll": rows["map"][0], "ensemble_test_ll": rows["ensemble"][0],
           "nuts_test_ll": rows["nuts"][0], "nuts_gap_to_exact": optimal - rows["nuts"][0],
           "nuts_coverage_90": rows["nuts"][1], "nuts_divergences": nuts.info["num_divergent"],
           "nuts_max_depth_fraction": nuts.info["fraction_max_tree_depth"],
           "ensemble_s": ensemble_s, "nuts_s": nuts_s}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke run")
    parser.add_argument("--output", help="results file name (default prior_sensitivity)")
    args = parser.parse_args()
    total = 200 + NUM_TEST
    data = bm.datasets.inverse_sine(jax.random.key(0), num_samples=total,
                                    train_fraction=200 / total)
    optimal = float(np.mean(bm.datasets.inverse_sine_log_prob(data[2], data[3])))
    rows = [run_prior(name, data, optimal, args.quick) for name in args.priors]
    for row in rows:
        row["exact_ll"] = optimal
    name = "prior_sensitivity_quick" if args.quick else "prior_sensitivity"
    if args.output:
        name = args.output
    write_results(name, {"setting": SETTINGS[200], "num_test": NUM_TEST}, rows)


if __name__ == "__main__":
    main()
