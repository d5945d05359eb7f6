"""Validation-driven stopping against the hand-tuned step count on the UCI protocol.

``benchmarks/uci.py`` tunes the number of Adam steps per data set and K on split 0 (fit on
the first 80 % of its training rows, score the last 20 % every 100 steps) and refits every
split with that count on all its training rows. Here instead every split's fit holds out 20 %
of its own training rows (``validation=0.2``, chosen with the fit's key), stops when their
log-likelihood has not improved for ``patience`` evaluations, and keeps each member's best
iterate; ``num_steps`` (5000, uci.py's tuning range) is only a maximum. Nothing is tuned by
hand. Same models (deep ensemble of 5 MAP fits of an MDN with one hidden layer of 50 ReLU
units, ``FanInNormal(1.0)``), same splits and keys, same scoring (mean test log-likelihood per
point and RMSE, mean ± standard error over splits).

The tuned reference is ``results/uci.json`` (written by ``benchmarks/uci.py``); pass
``--rerun-tuned`` to measure it again in the same run instead.

    python benchmarks/validation_stopping.py [--splits 20] [--components 1 3] [--quick]

``refit=True`` (the default for a fraction; ``--no-refit`` for the best iterate of the fit on
80 % of the rows, the runs before refitting existed) then fits every row again and takes each
member at its chosen step, as the tuned protocol refits on every row.

Writes ``results/validation_stopping.json`` and ``.md`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
import uci
from _common import RESULTS, machine

import bayes_mdn as bm

VALIDATION = 0.2
PATIENCE = 20  # the default
NUM_EVALUATIONS = 50  # 5000 / 50 = 100 steps per evaluation, uci.py's EVAL_EVERY


def run_split(folder: Path, split: int, num_components: int, max_steps: int,
              refit: bool = True) -> dict:
    X, y, X_test, y_test = bm.datasets.load_uci(folder, split)
    started = time.perf_counter()
    num_evaluations = max(1, round(NUM_EVALUATIONS * max_steps / uci.MAX_STEPS))
    posterior = uci.fit(uci.make_model(num_components), X, y, jax.random.key(split), max_steps,
                        validation=VALIDATION, patience=PATIENCE, refit=refit,
                        num_evaluations=num_evaluations)
    fit_s = time.perf_counter() - started
    pred = posterior.predictive(X_test)
    return {"split": split, "test_ll": float(np.mean(pred.log_prob(y_test))),
            "rmse": float(np.sqrt(np.mean((np.asarray(pred.mean()) - y_test) ** 2))),
            "fit_s": fit_s, "stopped_step": int(posterior.history["stopped_step"]),
            "best_step": np.asarray(posterior.history["best_step"]).tolist()}


def tuned_reference(path: Path) -> dict[tuple[str, str], dict]:
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(row["dataset"], row["model"]): row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "BAYES_MDN_UCI_DIR", uci.DEFAULT_DATA)), help="folder holding the data-set folders")
    parser.add_argument("--datasets", nargs="+", default=list(uci.DATASETS),
                        choices=uci.DATASETS)
    parser.add_argument("--components", nargs="+", type=int, default=list(uci.COMPONENTS))
    parser.add_argument("--splits", type=int, default=20, help="first N splits (max 20)")
    parser.add_argument("--rerun-tuned", action="store_true",
                        help="measure uci.py's tuned protocol again in this run")
    parser.add_argument("--quick", action="store_true", help="2 splits, 500 steps: smoke run")
    parser.add_argument("--max-steps", type=int, default=uci.MAX_STEPS,
                        help="num_steps, the most steps a fit may take (evaluations stay "
                             "every 100 steps)")
    parser.add_argument("--name", default="validation_stopping",
                        help="results file stem (e.g. to run K=1 and K=3 side by side)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="return the best iterate of the fit on 80 %% of the rows "
                             "(refit=False) instead of refitting on every row for the chosen "
                             "step count (refit=True, the default for a fraction)")
    parser.add_argument("--summarise", action="store_true",
                        help="only combine every results/validation_stopping*.json into "
                             "results/validation_stopping_summary.md")
    args = parser.parse_args()
    if args.summarise:
        summarise()
        return
    num_splits, max_steps = (2, 500) if args.quick else (args.splits, args.max_steps)
    reference = tuned_reference(RESULTS / "uci.json")

    rows, details = [], {}
    for name in args.datasets:
        folder = args.data / name
        for num_components in args.components:
            model_name = f"ensemble ({uci.NUM_MEMBERS}), K={num_components}"
            started = time.perf_counter()
            per_split = [run_split(folder, split, num_components, max_steps, args.refit)
                         for split in range(num_splits)]
            ll, ll_se = uci.mean_se([r["test_ll"] for r in per_split])
            rmse, rmse_se = uci.mean_se([r["rmse"] for r in per_split])
            tuned = reference.get((name, model_name))
            if args.rerun_tuned:
                num_steps, _ = uci.tune_steps(folder, num_components, max_steps)
                runs = [uci.run_split(folder, s, num_components, num_steps)
                        for s in range(num_splits)]
                t_ll, t_se = uci.mean_se([r["test_ll"] for r in runs])
                tuned = {"test_ll": t_ll, "test_ll_se": t_se, "num_steps": num_steps,
                         "num_splits": num_splits, "source": "this run"}
            row = {"dataset": name, "model": model_name, "num_splits": num_splits,
                   "test_ll": ll, "test_ll_se": ll_se, "rmse": rmse, "rmse_se": rmse_se,
                   "mean_stopped_step": float(np.mean([r["stopped_step"] for r in per_split])),
                   "fit_s_per_split": float(np.mean([r["fit_s"] for r in per_split])),
                   "total_s": time.perf_counter() - started}
            if tuned is not None:
                row.update({"tuned_test_ll": tuned["test_ll"],
                            "tuned_test_ll_se": tuned["test_ll_se"],
                            "tuned_num_steps": tuned["num_steps"],
                            "tuned_source": tuned.get("source", "results/uci.json"),
                            "within_one_se": bool(abs(ll - tuned["test_ll"])
                                                  <= tuned["test_ll_se"])})
            rows.append(row)
            details[f"{name}/K={num_components}"] = per_split
            print(row, flush=True)

    name = f"{args.name}_quick" if args.quick else args.name
    settings = {"validation": VALIDATION, "patience": PATIENCE, "refit": args.refit,
                "num_evaluations": NUM_EVALUATIONS, "max_steps": max_steps,
                "num_members": uci.NUM_MEMBERS, "hidden_sizes": [50], "activation": "relu",
                "prior": f"FanInNormal({uci.PRIOR_SCALE})", "num_splits": num_splits,
                "load_average": os.getloadavg()}
    RESULTS.mkdir(exist_ok=True)
    payload = {"settings": settings, "machine": machine(), "rows": rows, "details": details}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown_table(rows, settings))
    print(markdown_table(rows, settings))


def summarise() -> None:
    """One table of every full run's rows (each file's own settings in its columns)."""
    lines = ["Validation-driven stopping (validation=0.2, default patience 20 evaluations of "
             "100 steps, best iterate per member) against uci.py's tuned step count: test "
             "log-likelihood per point, mean ± s.e. over splits.", "",
             "| run | dataset | model | max steps | refit | validation stopping | mean stopped "
             "step | tuned (steps) | difference / tuned s.e. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("validation_stopping*.json")):
        if "quick" in path.name:
            continue
        payload = json.loads(path.read_text())
        for row in payload["rows"]:
            if "tuned_test_ll" not in row:
                continue
            z = (row["test_ll"] - row["tuned_test_ll"]) / row["tuned_test_ll_se"]
            lines.append(
                f"| {path.stem} | {row['dataset']} | {row['model']} | "
                f"{payload['settings']['max_steps']} | "
                f"{'yes' if payload['settings'].get('refit') else 'no'} | {row['test_ll']:.2f} ± "
                f"{row['test_ll_se']:.2f} | {row['mean_stopped_step']:.0f} | "
                f"{row['tuned_test_ll']:.2f} ± {row['tuned_test_ll_se']:.2f} "
                f"({row['tuned_num_steps']}) | {z:+.1f} |")
    (RESULTS / "validation_stopping_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown_table(rows: list[dict], settings: dict) -> str:
    lines = [f"Test log-likelihood per point (nats), mean ± s.e. over {settings['num_splits']} "
             f"splits: validation={settings['validation']} (patience {settings['patience']} "
             f"evaluations of 100 steps, at most {settings['max_steps']} steps, "
             + ("then refit on every row to each member's best step"
                if settings.get("refit") else "best iterate per member")
             + ") against uci.py's step count tuned on split 0. Load average at the end: "
             f"{', '.join(f'{v:.1f}' for v in settings['load_average'])}.", "",
             "| dataset | model | validation stopping | mean stopped step | tuned | tuned steps "
             "| within 1 s.e. of tuned |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        tuned = (f"{row['tuned_test_ll']:.2f} ± {row['tuned_test_ll_se']:.2f}"
                 if "tuned_test_ll" in row else "")
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['test_ll']:.2f} ± {row['test_ll_se']:.2f}"
            f" ({row['rmse']:.2f}) | {row['mean_stopped_step']:.0f} | {tuned} | "
            f"{row.get('tuned_num_steps', '')} | "
            f"{'yes' if row.get('within_one_se') else 'no' if 'within_one_se' in row else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
