"""Scratch memory of every consumer of draws x inputs with a wide Flax feature network:
the code before the consumers used the one evaluator (git commit `--baseline`) beside this
checkout, in the same run.

Each consumer's kernel is compiled (not run) at the chunk shapes its planner chooses, and
XLA's own accounting (``memory_analysis().temp_size_in_bytes``) of the scratch memory is
reported beside the budget ``4 * max_elements`` bytes (float32). The feature network has a
512-wide hidden layer; K = 2 components, D = 1, so a planner counting K x D terms per
(input, draw) plans 256 times too many pairs. Consumers: function-space diagnostics (2000
draws at 32 reference inputs), the ArviZ log-likelihood (200 draws at 20 000 rows) and the
fit-time scores (256 draws at 3000 rows).

    python benchmarks/consumer_memory.py [--baseline 92892dd] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _common import write_results

import bayes_mdn as bm
from bayes_mdn import _arviz, diagnostics
from bayes_mdn.model import predictive_log_likelihood
from bayes_mdn.predictive import DEFAULT_MAX_ELEMENTS as BUDGET
from bayes_mdn.predictive import _kernels, _reductions
from bayes_mdn.scaling import Standardizer

ROOT = Path(__file__).resolve().parents[1]
WIDE = 512


class WideFeatures(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.tanh(nn.Dense(WIDE)(x)))


def wide_posterior(num_draws: int) -> bm.Posterior:
    model = bm.MDN(num_components=2, hidden_sizes=(), network=WideFeatures())
    rng = np.random.default_rng(0)
    draws = {name: (0.3 * rng.normal(size=(1, num_draws, *shape))).astype(np.float32)
             for name, shape in model.latent_shapes(1, 1).items()}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)


def load_old(commit: str, path: str, name: str, folder: Path):
    """A module of the package as it was at `commit` (its imports resolve to this checkout)."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def mib(lowered) -> float:
    return lowered.compile().memory_analysis().temp_size_in_bytes / 2**20


def rows_of(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="92892dd")
    parser.add_argument("--quick", action="store_true", help="a tenth of the draws and rows")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    one = jnp.ones(1, jnp.float32)
    table = []
    with tempfile.TemporaryDirectory() as folder:
        old_diag = load_old(args.baseline, "bayes_mdn/diagnostics.py", "old_diagnostics",
                            Path(folder))
        old_arviz = load_old(args.baseline, "bayes_mdn/_arviz.py", "old_arviz", Path(folder))

        num_draws, num_inputs = 2000 // scale, diagnostics.REFERENCE_POINTS
        post = wide_posterior(num_draws)
        draws = {k: jnp.asarray(v) for k, v in post.prediction_draws().items()}
        levels = diagnostics.QUANTILE_LEVELS
        old_batch = max(1, min(num_draws, BUDGET // (num_inputs * 2)))
        new_batch = diagnostics._draw_batch(post, draws, num_inputs, len(levels), BUDGET)
        shape_args = (draws, rows_of(num_inputs, 1), rows_of(num_inputs, 1), one * 0, one)
        table.append({
            "consumer": f"diagnostics ({num_draws} draws x {num_inputs} inputs)",
            "baseline_MiB": mib(old_diag._function_space_kernel.lower(
                post.model, old_batch, True, levels, old_diag._scale_floor(post.model),
                *shape_args)),
            "now_MiB": mib(diagnostics._function_space_kernel.lower(
                post.model, new_batch, True, levels, diagnostics._scale_floor(post.model),
                *shape_args))})

        num_draws, num_rows = 200 // scale, 20_000 // scale
        post = wide_posterior(num_draws)
        draws = {k: jnp.asarray(v) for k, v in post.prediction_draws().items()}
        rows, batch = old_arviz._plan(num_rows, num_draws, old_arviz._per_row(post.model, 1),
                                      BUDGET)
        pred = _arviz._predictive(post, np.zeros((num_rows, 1)), BUDGET)
        m, b = pred._chunk_plan()
        table.append({
            "consumer": f"arviz log_likelihood ({num_draws} draws x {num_rows} rows)",
            "baseline_MiB": mib(old_arviz._log_likelihood_kernel.lower(
                post.model, batch, draws, rows_of(rows, 1), rows_of(rows, 1), one)),
            "now_MiB": mib(_kernels._draw_log_prob_kernel.lower(
                pred.model, b, draws, one * 0, one, rows_of(m, 1), rows_of(m, 1)))})

        num_draws, num_rows = 256 // scale, 3000 // scale
        post = wide_posterior(num_draws)
        draws = {k: jnp.asarray(v) for k, v in post.prediction_draws().items()}
        pred = post.predictive(np.zeros((num_rows, 1)))
        layout, m, b = pred._plan()
        kernel = _reductions.log_prob_kernel if layout == "draw" else _kernels._log_prob_kernel
        table.append({
            "consumer": f"fit-time scores ({num_draws} draws x {num_rows} rows)",
            "baseline_MiB": mib(jax.jit(predictive_log_likelihood, static_argnums=0).lower(
                post.model, draws, rows_of(num_rows, 1), rows_of(num_rows, 1), one)),
            "now_MiB": mib(kernel.lower(pred.model, b, draws, one * 0, one, rows_of(m, 1),
                                        rows_of(m, 1)))})
    for row in table:
        row["budget_MiB"] = BUDGET * 4 / 2**20
    write_results("consumer_memory" + ("_quick" if args.quick else ""),
                  {"baseline": args.baseline, "width": WIDE}, table)


if __name__ == "__main__":
    main()
