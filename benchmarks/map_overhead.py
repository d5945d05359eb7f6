"""MAP fit time of bayes_mdn against a minimal hand-written NumPyro + optax loop.

Seed setting: 4000 training points, K = 20 Normal components, hidden layers (15, 15), tanh,
fan-in Normal priors, full-batch Adam (lr 0.01). Both programs run the same number of steps
in the same process; each is timed cold (first call: tracing + compilation + run) and warm
(best of `--repeats` further calls). The overhead ratio is warm bayes_mdn / warm baseline.

    python benchmarks/map_overhead.py [--num-steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse

import _handwritten as hw
import jax
import jax.numpy as jnp
import numpy as np
from _common import timed, write_results

import bayes_mdn as bm

K, HIDDEN = 20, (15, 15)


def handwritten_map(X, y, num_steps):
    """The baseline: the same model written directly in NumPyro and optimised by optax Adam
    in one lax.scan (``_handwritten.py``), compiled once so that repeats are warm. Data are
    standardised the same way. Returns ``key -> (params, losses)``."""
    x_s, y_s = hw.standardise(X, y)
    run = hw.make_map(hw.make_model(K, HIDDEN), x_s, y_s, num_steps)

    def init(key):
        keys = jax.random.split(key, 8)
        params, fan_in = {}, 1
        for i, width in enumerate(HIDDEN):
            params[f"hidden_{i}.kernel"] = jax.random.normal(keys[i], (fan_in, width)
                                                             ) / np.sqrt(fan_in)
            params[f"hidden_{i}.bias"] = jnp.zeros(width)
            fan_in = width
        for j, name in enumerate(("logits", "loc", "scale")):
            params[f"{name}.kernel"] = 0.1 * jax.random.normal(keys[3 + j], (fan_in, K))
            params[f"{name}.bias"] = jnp.zeros(K)
        params["loc.bias"] = jnp.linspace(-1.6, 1.6, K)
        return params

    return lambda key: run(init(key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0))
    model = bm.MDN(num_components=K, hidden_sizes=HIDDEN)

    def ours(seed):
        return lambda: model.fit(X, y, key=jax.random.key(seed), num_steps=args.num_steps
                                 ).draws["loc.kernel"]

    baseline_fit = handwritten_map(X, y, args.num_steps)

    def baseline(seed):
        return lambda: baseline_fit(jax.random.key(seed))

    # Interleave warm repeats so that machine noise hits both sides alike.
    _, ours_cold = timed(ours(0))
    _, base_cold = timed(baseline(0))
    ours_warm, base_warm = [], []
    for seed in range(1, args.repeats + 1):
        ours_warm.append(timed(ours(seed))[1])
        base_warm.append(timed(baseline(seed))[1])
    ratio = min(ours_warm) / min(base_warm)
    rows = [
        {"program": "hand-written NumPyro + optax", "cold_s": base_cold,
         "warm_s": min(base_warm), "ms_per_step": 1e3 * min(base_warm) / args.num_steps,
         "ratio_to_baseline": 1.0},
        {"program": "bayes_mdn MDN.fit(method='map')", "cold_s": ours_cold,
         "warm_s": min(ours_warm), "ms_per_step": 1e3 * min(ours_warm) / args.num_steps,
         "ratio_to_baseline": ratio},
    ]
    write_results("map_overhead", {"num_steps": args.num_steps, "repeats": args.repeats,
                                   "overhead_ratio": ratio, "target": 1.15}, rows)
    print(f"overhead ratio (warm, bayes_mdn / baseline): {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
