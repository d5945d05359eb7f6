"""Why the linearised Laplace predictive trails MAP at n = 4000, and what the evidence says.

Seed data, 4000 training points (5000 test points, key 0), the n = 4000 network and priors of
``inference_seed.py`` (K = 20, hidden (15, 15), FanInNormal(2), scale head FanInNormal(0.5)),
MAP by 2000 Adam steps with EMA. The Laplace posterior with the Monte Carlo Fisher is
N(MAP, (alpha P + F)^-1), where P is the prior precision (diagonal for these priors) and F the
Fisher information at the MAP point; ``method="laplace"`` uses alpha = 1. For alpha on a grid
the script reports

* the Laplace (MacKay) log evidence of the prior scaled by alpha, at the fixed MAP point:
  ``W/2 log alpha + 1/2 log det P - alpha/2 MAP' P MAP - 1/2 log det(alpha P + F)`` (+ const),
  the usual post-hoc way to tune a Laplace prior precision;
* the test log-likelihood per point of the linearised predictive with that covariance
  (``test_ll``, every direction: ``subspace="full"``), and with the covariance restricted to
  the well-determined directions, those where the Fisher exceeds alpha P (``test_ll_well_
  determined``, ``method="laplace"``'s default ``subspace="well_determined"``).

The question it answers: would tuning the prior precision by the evidence bring Laplace
within 0.03 nats of MAP (issue 3's "no method worse than MAP by more than 0.03" at n = 4000)?

    python benchmarks/laplace_prior_precision.py

Writes results/laplace_prior_precision.{json,md}.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from _common import write_results
from numpyro.infer.util import potential_energy

import bayes_mdn as bm
from bayes_mdn.inference import laplace
from bayes_mdn.inference._data import point_log_prob, prepare_data
from bayes_mdn.priors import FanInNormal

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
NUM_DRAWS = 400
NUM_TRAIN, NUM_TEST = 4000, 5000


def test_log_likelihood(posterior: bm.Posterior, X_test: np.ndarray, y_test: np.ndarray
                        ) -> float:
    draws = min(NUM_DRAWS, posterior.num_chains * posterior.num_draws)
    return float(np.mean(posterior.predictive(X_test, num_draws=draws).log_prob(y_test)))


def prior_and_fisher(model: bm.MDN, map_fit: bm.Posterior, X: np.ndarray, y: np.ndarray):
    """Flat MAP point (W,), prior precision P (W, W) and Monte Carlo Fisher F (W, W), float64,
    in the site order of ``model.latent_shapes``; the same quantities as the Laplace kernel."""
    data = prepare_data(model, X, y)
    shapes = model.latent_shapes(data.shape[1], data.shape[2])
    offsets = np.cumsum([0, *(math.prod(shape) for shape in shapes.values())])

    def unravel(flat):
        return {name: flat[start:stop].reshape(shape) for (name, shape), start, stop
                in zip(shapes.items(), offsets[:-1], offsets[1:], strict=True)}

    values = {name: value[0, 0] for name, value in map_fit.draws.items()}
    centre = jnp.concatenate([jnp.ravel(values[name]) for name in shapes])
    args, kwargs = (data.X, data.y), {"y_scale": data.y_scale}

    def prior_potential(flat):
        return (potential_energy(model.numpyro_model, args, kwargs, unravel(flat))
                + jnp.sum(point_log_prob(model, unravel(flat), data.X, data.y, data.y_scale)))

    prior_precision = jax.jacfwd(jax.grad(prior_potential))(centre)

    def row_log_likelihood(flat, x_row, y_row):
        return point_log_prob(model, unravel(flat), x_row[None], y_row[None],
                              data.y_scale)[0]

    def outer_gradients(targets):
        rows = jax.vmap(jax.grad(row_log_likelihood), in_axes=(None, 0, 0))(
            centre, data.X, targets)
        return rows.T @ rows

    log_weights, params = model.mixture(values, data.X, data.y_scale)
    fisher = sum(outer_gradients(laplace._replicate(
        model, log_weights, params, jax.random.fold_in(jax.random.key(9), index)))
        for index in range(laplace.NUM_FISHER_REPLICATES)) / laplace.NUM_FISHER_REPLICATES
    as64 = lambda array: np.asarray(array, np.float64)  # noqa: E731
    return as64(centre), as64(prior_precision), as64(fisher), shapes, offsets


def main() -> None:
    X, y, X_test, y_test = bm.datasets.inverse_sine(
        jax.random.key(0), num_samples=NUM_TRAIN + NUM_TEST,
        train_fraction=NUM_TRAIN / (NUM_TRAIN + NUM_TEST))
    model = bm.MDN(num_components=20, hidden_sizes=(15, 15),
                   prior={"default": FanInNormal(2.0), "scale": FanInNormal(0.5)})
    map_fit = model.fit(X, y, key=jax.random.key(1), num_steps=2000, ema_decay=0.995)
    map_ll = test_log_likelihood(map_fit, X_test, y_test)
    fitted = model.fit(X, y, key=jax.random.key(7), method="laplace", init=map_fit,
                       hessian="fisher", num_draws=NUM_DRAWS)
    laplace_ll = test_log_likelihood(fitted, X_test, y_test)
    centre, prior_precision, fisher, shapes, offsets = prior_and_fisher(model, map_fit, X, y)
    num_weights = centre.size
    quadratic = centre @ prior_precision @ centre
    log_det_prior = np.linalg.slogdet(prior_precision)[1]
    noise = np.random.default_rng(0).normal(size=(NUM_DRAWS, num_weights))
    rows = []
    def score(flat: np.ndarray) -> float:
        draws = {name: jnp.asarray(flat[:, start:stop].reshape((1, NUM_DRAWS, *shape)),
                                   jnp.float32)
                 for (name, shape), start, stop in zip(shapes.items(), offsets[:-1],
                                                       offsets[1:], strict=True)}
        return test_log_likelihood(dataclasses.replace(fitted, draws=draws), X_test, y_test)

    for alpha in ALPHAS:
        # Generalised eigenvectors of F against alpha P (P = L L'): precision^-1 =
        # L^-T U diag(1 / (1 + lambda)) U' L^-1, and the well-determined subspace keeps the
        # directions with lambda >= 1 (the library's default, subspace="well_determined").
        lower = np.linalg.cholesky(alpha * prior_precision)
        whitened = np.linalg.solve(lower, np.linalg.solve(lower, fisher).T)
        ratio, rotation = np.linalg.eigh(0.5 * (whitened + whitened.T))
        ratio = np.maximum(ratio, 0.0)
        root = np.linalg.solve(lower.T, rotation / np.sqrt(1.0 + ratio))  # (W, W)
        log_evidence = (0.5 * num_weights * np.log(alpha) + 0.5 * log_det_prior
                        - 0.5 * alpha * quadratic - 0.5 * np.sum(np.log1p(ratio))
                        - 0.5 * np.linalg.slogdet(alpha * prior_precision)[1])
        kept = ratio >= 1.0
        test_ll = score(centre + noise @ root.T)
        subspace_ll = score(centre + noise @ (root * kept).T)
        rows.append({"alpha": alpha, "log_evidence": float(log_evidence), "test_ll": test_ll,
                     "minus_map": test_ll - map_ll, "well_determined": int(kept.sum()),
                     "test_ll_well_determined": subspace_ll,
                     "well_determined_minus_map": subspace_ll - map_ll})
        print(rows[-1], flush=True)
    best = max(rows, key=lambda row: row["log_evidence"])
    summary = {"map_test_ll": map_ll, "laplace_fisher_test_ll": laplace_ll,
               "laplace_minus_map": laplace_ll - map_ll, "evidence_alpha": best["alpha"],
               "evidence_test_ll": best["test_ll"], "best_test_ll_alpha": max(
                   rows, key=lambda row: row["test_ll"])["alpha"]}
    write_results("laplace_prior_precision", {"summary": summary, "num_train": NUM_TRAIN,
                                              "num_test": NUM_TEST}, rows)
    print(summary)


if __name__ == "__main__":
    main()
