"""Predictive engine speed (issue 19): every query beside a hand-written draw-major kernel and
the previous implementation, in one run; the 2-core arithmetic limit; compression losses.

Model (speed parts): the seed's MDN (K = 20 Normal components, hidden (15, 15), tanh, P = 1,
D = 1) fitted by mean-field SVI on the seed's 4000 rows (``--svi-steps``), S draws. Three
implementations of each query, timed in the same process:

* ``new``: ``PredictiveMixture`` of this package (draw-major layout at many inputs);
* ``handwritten``: ``benchmarks/_predictive_handwritten.py``, the same arithmetic written
  directly on the weights in column layout, ``lax.scan`` over draws (mean, log_prob only);
* ``previous``: ``benchmarks/_predictive_previous``, a copy of ``bayes_mdn/predictive`` before
  issue 19. For mean and log_prob it runs at a tenth of the inputs and its time is scaled
  linearly in M (its cost is linear in M: scale.md, 10^5 -> 10^6), marked ``scaled``.

Each time is the best of ``--repeats`` calls after a compiling call on one chunk (new and
hand-written alternating; the previous implementation once). Pairs/s =
M x S / seconds; GFLOP/s = pairs/s x the FLOP per pair of the query (:func:`flop_counts`,
from the arithmetic). The 2-core limit is ``1 / sum_op (count_op / rate_op)`` pairs/s over
FLOP, tanh, exp, log1p and log, each rate measured by a compute-bound microkernel with its
data in cache and both cores busy (:func:`measure_limit`). It adds the operations' times as
if they ran one after another; a CPU overlaps FLOP with transcendentals (separate execution
ports), so a query can exceed it somewhat, and on a shared machine both the rates and the
queries run slower with the load (recorded per part).

Quantiles: the previous implementation at ``--quantile-previous-inputs`` (default: the same
M) and its time scaled linearly to M (its cost is linear in M: fixed-size input chunks).
Agreement: the largest difference from the previous answers, the stated x tolerance
(``(2 eps |x| + 5e-7) y_scale``, PredictiveMixture.quantiles), the share of answers within
two tolerances (each answer is within one of its root), that difference times the density
there (cdf units: where the density is small the float32 cdf sum's rounding moves either root
by more than the x tolerance) and ``|cdf(x) - q|`` of both.

Compression (``reduce``): the seed NUTS predictive at n = 200 (K = 5, hidden (20,)) and
n = 4000 (K = 20, hidden (15, 15)), the settings of inference_seed.py, with a smaller NUTS
budget (``--nuts-chains/--nuts-warmup/--nuts-samples``, initialised from a MAP ensemble);
test log-likelihood and CRPS on ``--compress-inputs`` test rows for the full predictive and
``reduce(K')``, K' = 5, 10, 20.

    python benchmarks/predictive_speed.py [--quick] [--parts speed quantiles regions limit
        compress] [--inputs 1e5] [--draws 1000] [--quantile-inputs 1000]
        [--region-inputs 200] [--repeats 2]

Writes results/predictive_speed.{json,md} (``--quick``: predictive_speed_quick.*).
Speed ratios are within one run; the machine is shared and its load (``os.getloadavg``) is
recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import itertools

import _predictive_handwritten as hw
from _predictive_previous import PredictiveMixture as PreviousMixture

import bayes_mdn as bm

RESULTS = Path(__file__).parent / "results"
LEVELS = np.array([0.05, 0.5, 0.95])


def best_of(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def seed_posterior(num_draws: int, svi_steps: int) -> tuple[bm.Posterior, np.ndarray]:
    X, y, X_test, _y_test = bm.datasets.inverse_sine(jax.random.key(0), num_samples=40_000,
                                                    train_fraction=0.1)
    model = bm.MDN(num_components=20, hidden_sizes=(15, 15))
    post = model.fit(X, y, key=jax.random.key(1), method="svi", guide="normal",
                     num_steps=svi_steps, num_draws=num_draws)
    return post, X_test


def inputs_for(X_test: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = X_test[rng.integers(0, len(X_test), num)]
    y = rng.uniform(-10.5, 10.5, size=num)
    return X, y


def previous_of(pred: bm.PredictiveMixture) -> PreviousMixture:
    return PreviousMixture(pred.model, pred.draws, pred.standardizer, pred.X_std,
                           pred.max_elements)


def flop_counts(P=1, hidden=(15, 15), K=20):
    """Operations per (input, draw) pair of each query on the seed network, from the
    arithmetic: ``{query: {"flop": n, "tanh": n, "exp": n, "log1p": n, "log": n}}``.

    Hidden layers: 2 a b + b FLOP (multiply-add, bias) and b tanh each. Heads: 2 w n + n
    FLOP for the n outputs a query needs (mean: logits and loc, 2K; log_prob: logits, loc,
    scale, 3K). mean: softmax (max, subtract, sum, divide: 4K FLOP, K exp) and the weighted
    sum of locations (2K). log_prob: softplus of the scale head (K exp + K log1p, K adds of
    min_scale), log-softmax (4K FLOP, K exp, 1 log), each component's log density
    ((y - loc) / scale, square, halve, subtract log scale and the constant, add the log
    weight: 7K FLOP, K log), log-sum-exp over K (3K FLOP, K exp, 1 log) and the running
    log-add-exp over draws (about 4 FLOP, 1 exp, 1 log1p).
    """
    widths = (P, *hidden)
    hidden_flop = sum(2 * a * b + b for a, b in itertools.pairwise(widths))
    tanh = sum(hidden)

    def heads(outputs):
        return 2 * hidden[-1] * outputs + outputs

    mean = {"flop": hidden_flop + heads(2 * K) + 4 * K + 2 * K, "tanh": tanh, "exp": K,
            "log1p": 0, "log": 0}
    log_prob = {"flop": hidden_flop + heads(3 * K) + K + 4 * K + 7 * K + 3 * K + 4,
                "tanh": tanh, "exp": K + K + K + 1, "log1p": K + 1, "log": 1 + K + 1}
    return {"mean": mean, "log_prob": log_prob}


def _rate(function, argument, work, repeats=9, threads=2):
    """Operations per second of `function(argument)` (`work` operations per call) with
    `threads` calls at once (the 2 cores), best of `repeats`."""
    from concurrent.futures import ThreadPoolExecutor

    jax.block_until_ready(function(argument))
    with ThreadPoolExecutor(threads) as pool:
        def once():
            return [f.result() for f in [pool.submit(
                lambda: jax.block_until_ready(function(argument))) for _ in range(threads)]]

        seconds, _ = best_of(once, repeats)
    return threads * work / seconds


def measure_limit() -> dict[str, float]:
    """Compute-bound throughput of each operation on this machine (both cores busy).

    Matmul: 200 chained (64 x 64) @ (64 x 1024) float32 products in one ``fori_loop`` (the
    operands, 256 KiB each, stay in cache; orthogonal W keeps the values bounded).
    Transcendentals: 64 chained applications (8 per loop step, fused) on 16 384 floats
    (64 KiB, in cache): ``tanh(1.5 x)``, ``exp(-x^2)``, ``log1p(x^2)``, ``log(1 + x^2)``,
    one transcendental and 1-2 FLOP each. Rates are per second, both cores busy (two calls
    at once); a shared machine under load gives lower rates, so the limit is an estimate.
    """
    rng = np.random.default_rng(0)
    W = jnp.asarray(np.linalg.qr(rng.normal(size=(64, 64)))[0], jnp.float32)
    H = jnp.asarray(rng.normal(size=(64, 1024)), jnp.float32)
    steps = 200
    chain = jax.jit(lambda H: jax.lax.fori_loop(0, steps, lambda _, h: W @ h, H))
    rates = {"matmul_flop": _rate(chain, H, steps * 2 * 64 * 64 * 1024)}
    v = jnp.asarray(rng.uniform(0.1, 0.9, size=2**14), jnp.float32)
    for name, fn in (("tanh", lambda x: jnp.tanh(1.5 * x)), ("exp", lambda x: jnp.exp(-x * x)),
                     ("log1p", lambda x: jnp.log1p(x * x)),
                     ("log", lambda x: jnp.log(1.0 + x * x))):
        def body(_, x, fn=fn):
            for _ in range(8):
                x = fn(x)
            return x

        f = jax.jit(lambda x, body=body: jax.lax.fori_loop(0, 8, body, x))
        rates[name] = _rate(f, v, 64 * v.size)
    return {f"{k}_G_per_s": r / 1e9 for k, r in rates.items()}


def limit_pairs_per_s(counts: dict[str, int], limit: dict[str, float]) -> float:
    """Pairs per second if every operation ran at its measured compute-bound rate, one
    after another: ``1 / sum_op (count_op / rate_op)``."""
    seconds = counts["flop"] / (limit["matmul_flop_G_per_s"] * 1e9)
    seconds += sum(counts[op] / (limit[f"{op}_G_per_s"] * 1e9)
                   for op in ("tanh", "exp", "log1p", "log"))
    return 1.0 / seconds


def hlo_transcendentals(lowered) -> str:
    """Transcendental and divide ops in a compiled program's HLO, e.g. ``exp 1, tanh 2``:
    each is one op per element of its array, so equal counts mean equal work per pair."""
    import collections
    import re

    text = lowered.compile().as_text()
    found = re.findall(r"\} (exponential|tanh|log|log-plus-one|divide|logistic|erf)\(", text)
    return ", ".join(f"{op} {n}" for op, n in sorted(collections.Counter(found).items()))


def hlo_ops(pred, flat, X_std, y_std, static, block):
    """The transcendental ops of the package's draw-major kernels and the hand-written ones
    on one block, from the compiled HLO."""
    from bayes_mdn.predictive import _reductions

    y_shift, y_scale = pred._scalers()
    X = jnp.asarray(X_std[:block])
    y = jnp.asarray(y_std[:block])
    return {
        "mean": (hlo_transcendentals(_reductions.mean_kernel.lower(
            pred.model, 1, flat, y_shift, y_scale, X)),
            hlo_transcendentals(hw.mean_kernel.lower(flat, X, **static))),
        "log_prob": (hlo_transcendentals(_reductions.log_prob_kernel.lower(
            pred.model, 1, flat, y_shift, y_scale, X, y[:, None])),
            hlo_transcendentals(hw.log_prob_kernel.lower(flat, X, y, **static))),
    }


def speed_part(post, X_test, args, limit):
    rows = []
    S = post.num_chains * post.num_draws
    flat = {name: jnp.asarray(value.reshape(-1, *value.shape[2:]))
            for name, value in post.draws.items()}
    X, y = inputs_for(X_test, args.inputs)
    pred = post.predictive(X)
    X_std = np.asarray(pred.X_std)
    y_std = pred._to_standardised(y[:, None])[:, 0]
    small = args.inputs // 10
    old = previous_of(pred[:small])
    counts = flop_counts()
    static = dict(num_hidden=2, num_components=20, min_scale=1e-3)
    block = 2048
    ops = hlo_ops(pred, flat, X_std, y_std, static, block)
    queries = {
        "mean": (lambda: pred.mean(), lambda: pred[:4096].mean(),
                 lambda: hw.run_blocks(hw.mean_kernel, flat, X_std, block=block, **static),
                 lambda: old.mean()),
        "log_prob": (lambda: pred.log_prob(y), lambda: pred[:4096].log_prob(y[:4096]),
                     lambda: hw.run_blocks(hw.log_prob_kernel, flat, X_std, y_std,
                                           block=block, **static),
                     lambda: old.log_prob(y[:small])),
    }
    for name, (new, warm, hand, previous) in queries.items():
        warm(), hand(), previous()  # compile every program first
        # New and hand-written alternate (a shared machine's load drifts within minutes);
        # the previous implementation (scaled, several times slower) runs once.
        new_times, hand_times = [], []
        for _ in range(args.repeats):
            seconds, new_value = best_of(new, 1)
            new_times.append(seconds)
            seconds, hand_value = best_of(hand, 1)
            hand_times.append(seconds)
        new_s, hand_s = min(new_times), min(hand_times)
        old_s, old_value = best_of(previous, 1)
        old_scaled = old_s * args.inputs / small
        value = new_value[:, 0] if new_value.ndim == 2 else new_value
        hand_value = (pred._to_original(hand_value[:, None])[:, 0] if name == "mean"
                      else hand_value - pred._log_scale())
        flop = counts[name]["flop"]
        trans = sum(counts[name][op] for op in ("tanh", "exp", "log1p", "log"))
        pairs = args.inputs * S
        limit_pairs = limit_pairs_per_s(counts[name], limit)
        rows.append({
            "query": name, "M": args.inputs, "S": S, "K": 20,
            "new_s": new_s, "handwritten_s": hand_s,
            "previous_s": old_scaled, "previous_M": small, "previous_timing": "scaled x10",
            "new_over_handwritten": new_s / hand_s, "speedup_vs_previous": old_scaled / new_s,
            "pairs_per_s": pairs / new_s, "gflops": pairs * flop / new_s / 1e9,
            "flop_per_pair": flop, "transcendentals_per_pair": trans,
            "limit_pairs_per_s": limit_pairs, "fraction_of_limit": pairs / new_s / limit_pairs,
            "hlo_ops_new": ops[name][0], "hlo_ops_handwritten": ops[name][1],
            "max_abs_diff_handwritten": float(np.max(np.abs(value - hand_value))),
            "max_abs_diff_previous": float(np.max(np.abs(
                new_value[:small] - old_value))),
            "target": "new <= 1.2 x handwritten; >= 3x previous",
        })
        print(rows[-1], flush=True)
    return rows


def quantile_part(post, X_test, args):
    X, _ = inputs_for(X_test, args.quantile_inputs)
    pred = post.predictive(X)
    small = min(args.quantile_previous_inputs or args.quantile_inputs, args.quantile_inputs)
    old = previous_of(pred[:small])
    chunk = pred._chunk_plan(len(LEVELS))[0]  # the same chunk shape in both: compile first
    pred[:chunk].quantiles(LEVELS), old[:chunk].quantiles(LEVELS)
    new_s, new_value = best_of(lambda: pred.quantiles(LEVELS), args.repeats)
    old_s, old_value = best_of(lambda: old.quantiles(LEVELS), 1)
    old_s *= args.quantile_inputs / small
    cdf_error = max(float(np.max(np.abs(pred.cdf(new_value[i])[:, 0] - level)))
                    for i, level in enumerate(LEVELS))
    old_part = pred[:small]
    old_cdf_error = max(float(np.max(np.abs(old_part.cdf(old_value[i])[:, 0] - level)))
                        for i, level in enumerate(LEVELS))
    # The stated tolerance (PredictiveMixture.quantiles): a bracket narrower than
    # 2 eps |x| + 5e-7 in standardised units; and the difference from the previous answers
    # in cdf units (times the density there): where the density is small, the float32 cdf
    # sum's rounding (~1e-7) moves either root by more than the x tolerance.
    y_scale = float(pred.standardizer.y_scale[0])
    diff = np.abs(new_value[:, :small, 0] - old_value[:, :, 0])
    x_std = np.abs(pred._to_standardised(new_value[:, :small]))[..., 0]
    tolerance = (2 * np.finfo(np.float32).eps * x_std + 5e-7) * y_scale
    density = np.stack([np.exp(old_part.log_prob(new_value[i, :small, 0]))
                        for i in range(len(LEVELS))])
    row = {"query": "quantiles (3 levels)", "M": args.quantile_inputs,
           "S": post.num_chains * post.num_draws, "K": 20, "new_s": new_s,
           "previous_s": old_s, "previous_M": small,
           "previous_timing": ("same M" if small == args.quantile_inputs
                               else f"scaled x{args.quantile_inputs / small:g}"),
           "speedup_vs_previous": old_s / new_s,
           "new_ms_per_input": 1e3 * new_s / args.quantile_inputs,
           "max_abs_diff_previous": float(np.max(diff)),
           "x_tolerance_max": float(np.max(tolerance)),
           "share_within_2_tolerances": float(np.mean(diff <= 2 * tolerance)),
           "max_diff_times_density": float(np.max(diff * density)),
           "max_cdf_error": cdf_error, "max_cdf_error_previous": old_cdf_error,
           "target": ">= 10x previous"}
    print(row, flush=True)
    return [row]


def region_part(post, X_test, args):
    X, _ = inputs_for(X_test, args.region_inputs)
    pred = post.predictive(X)
    old = previous_of(pred)
    rows = []
    for name, new, previous in (("hdr(0.9)", lambda p: p.hdr(0.9), lambda p: p.hdr(0.9)),
                                ("modes()", lambda p: p.modes(), lambda p: p.modes())):
        # Chunk shapes depend on M: the first (compiling) call of each is not timed.
        new_s, new_value = best_of(lambda new=new: new(pred), args.repeats + 1)
        old_s, old_value = best_of(lambda previous=previous: previous(old), 2)
        same = float(np.mean([a.shape == b.shape and np.allclose(a, b, atol=1e-3)
                              for a, b in zip(new_value, old_value, strict=True)]))
        rows.append({"query": name, "M": args.region_inputs,
                     "S": post.num_chains * post.num_draws, "K": 20, "new_s": new_s,
                     "previous_s": old_s, "previous_M": args.region_inputs,
                     "previous_timing": "same M", "speedup_vs_previous": old_s / new_s,
                     "same_within_1e-3": same, "target": "reported"})
        print(rows[-1], flush=True)
    return rows


SEED_SETTINGS = {200: dict(K=5, hidden=(20,), prior_scale=2.0, scale_head_prior=None),
                 4000: dict(K=20, hidden=(15, 15), prior_scale=2.0, scale_head_prior=0.5)}


def compress_part(args):
    from bayes_mdn.priors import FanInNormal

    rows = []
    for num_train, setting in SEED_SETTINGS.items():
        total = num_train + 20_000
        X, y, X_test, y_test = bm.datasets.inverse_sine(
            jax.random.key(0), num_samples=total, train_fraction=num_train / total)
        prior = FanInNormal(setting["prior_scale"])
        if setting["scale_head_prior"] is not None:
            prior = {"default": prior, "scale": FanInNormal(setting["scale_head_prior"])}
        model = bm.MDN(num_components=setting["K"], hidden_sizes=setting["hidden"],
                       prior=prior)
        start = time.perf_counter()
        ensemble = model.fit(X, y, key=jax.random.key(3), method="ensemble",
                             num_members=args.nuts_chains, num_steps=args.map_steps)
        nuts = model.fit(X, y, key=jax.random.key(8), method="nuts", init=ensemble,
                         num_chains=args.nuts_chains, num_warmup=args.nuts_warmup,
                         num_samples=args.nuts_samples, max_tree_depth=5)
        fit_s = time.perf_counter() - start
        X_eval, y_eval = X_test[:args.compress_inputs], y_test[:args.compress_inputs]
        full = nuts.predictive(X_eval)
        full_ll = float(np.mean(full.log_prob(y_eval)))
        full_crps = float(np.mean(bm.metrics.crps(full, y_eval)))
        for components in (5, 10, 20, 30):
            start = time.perf_counter()
            reduced = full.reduce(components)
            reduce_s = time.perf_counter() - start
            ll = float(np.mean(reduced.log_prob(y_eval)))
            crps = float(np.mean(bm.metrics.crps(reduced, y_eval)))
            rows.append({
                "n_train": num_train, "S": nuts.num_chains * nuts.num_draws,
                "K": setting["K"], "K_reduced": components, "numbers_per_input": 3 * components,
                "full_numbers_per_input": 3 * setting["K"] * nuts.num_chains * nuts.num_draws,
                "test_rows": len(y_eval), "full_test_ll": full_ll, "reduced_test_ll": ll,
                "ll_loss_nats": full_ll - ll, "full_crps": full_crps, "reduced_crps": crps,
                "crps_loss_percent": 100 * (crps - full_crps) / full_crps,
                "reduce_s": reduce_s, "fit_s": fit_s,
                "nuts": f"{args.nuts_chains} chains x {args.nuts_warmup} warmup x "
                        f"{args.nuts_samples}, ensemble init ({args.map_steps} MAP steps)",
                "target": "K'=20: ll loss <= 0.005 nats, CRPS loss <= 0.5 %",
            })
            print(rows[-1], flush=True)
    return rows


def markdown(results) -> str:
    lines = ["2 shared CPU cores; each part was run on its own, with the load average "
             "(1, 5, 15 min) at its start and end.", ""]
    loads = results.get("loads", {})

    def load_line(part):
        load = loads.get(part)
        return ([f"Load {load['load_start']} -> {load['load_end']}; {load['note']}.", ""]
                if load else [])

    if "limit" in results:
        lines += ["### limit", "", *load_line("limit"),
                  "Compute-bound rates (G/s): " + ", ".join(
                      f"{k} {v:.3g}" for k, v in results["limit"].items()), ""]
    for part in ("speed", "quantiles", "regions", "compress"):
        rows = results.get(part)
        if not rows:
            continue
        keys = list(rows[0])
        lines += [f"### {part}", "", *load_line(part), "| " + " | ".join(keys) + " |",
                  "|" + "---|" * len(keys)]
        for row in rows:
            cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+",
                        default=["limit", "speed", "quantiles", "regions", "compress"])
    parser.add_argument("--inputs", type=float, default=1e5)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--quantile-inputs", type=int, default=1000)
    parser.add_argument("--quantile-previous-inputs", type=int, default=None)
    parser.add_argument("--posterior", default=None,
                        help="a saved Posterior (bm.io.save) to use instead of fitting")
    parser.add_argument("--region-inputs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--svi-steps", type=int, default=3000)
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-warmup", type=int, default=100)
    parser.add_argument("--nuts-samples", type=int, default=50)
    parser.add_argument("--map-steps", type=int, default=1000)
    parser.add_argument("--compress-inputs", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.draws, args.quantile_inputs, args.region_inputs = 2**14, 200, 64, 32
        args.svi_steps, args.nuts_chains, args.nuts_warmup, args.nuts_samples = 500, 2, 30, 30
        args.map_steps, args.compress_inputs, args.repeats = 300, 200, 1
    args.inputs = int(args.inputs)
    name = "predictive_speed_quick" if args.quick else "predictive_speed"
    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for stale in ("load_start", "load_end", "note"):  # the layout before per-part loads
        results.pop(stale, None)
    loads = results.setdefault("loads", {})
    notes = {"limit": "both cores busy",
             "speed": f"M = {args.inputs}, S = {args.draws}; previous at M / 10, scaled "
                      f"linearly; repeats {args.repeats}",
             "quantiles": f"M = {args.quantile_inputs}, S = {args.draws}",
             "regions": f"M = {args.region_inputs}, S = {args.draws}",
             "compress": f"{args.compress_inputs} test rows"}

    def timed(part, function):
        start = [round(v, 1) for v in os.getloadavg()]
        results[part] = function()
        loads[part] = {"load_start": start, "load_end": [round(v, 1) for v in os.getloadavg()],
                       "note": notes[part]}
        print(part, loads[part], flush=True)

    if "limit" in args.parts:
        timed("limit", measure_limit)
    if {"speed", "quantiles", "regions"} & set(args.parts):
        if args.posterior:  # a posterior saved by an earlier run (bm.io.save) with its test X
            post = bm.io.load(args.posterior)
            X_test = np.load(f"{args.posterior}.X_test.npy")
        else:
            post, X_test = seed_posterior(args.draws, args.svi_steps)
        if "speed" in args.parts:
            timed("speed", lambda: speed_part(post, X_test, args, results["limit"]))
        if "quantiles" in args.parts:
            timed("quantiles", lambda: quantile_part(post, X_test, args))
        if "regions" in args.parts:
            timed("regions", lambda: region_part(post, X_test, args))
    if "compress" in args.parts:
        timed("compress", lambda: compress_part(args))
    RESULTS.mkdir(exist_ok=True)
    for suffix, text in (("json", json.dumps(results, indent=1)), ("md", markdown(results))):
        target = RESULTS / f"{name}.{suffix}"
        temporary = target.with_suffix(f".{suffix}.tmp")
        temporary.write_text(text)
        temporary.replace(target)
    print(markdown(results))


if __name__ == "__main__":
    main()
