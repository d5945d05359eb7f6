"""Minimal hand-written NumPyro versions of each inference method, the overhead baselines.

The model is the MDN written directly in NumPyro (tanh MLP, fan-in Normal priors, softplus
scales with a 1e-3 floor, a Normal mixture likelihood), with the same site names as
bayes_mdn so that starting points transfer. Each baseline is what a NumPyro user would
write by hand: one compiled optax loop, ``SVI.run``, ``MCMC.run``, ``jax.hessian``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from numpyro.infer.util import log_density, log_likelihood

HEADS = ("logits", "loc", "scale")
FISHER_REPLICATES = 8


def standardise(X, y):
    x_s = (X - X.mean(0)) / X.std(0)
    y_s = (y - y.mean(0)) / y.std(0)
    return jnp.asarray(x_s, jnp.float32), jnp.asarray(y_s, jnp.float32)


def make_model(num_components: int, hidden: tuple[int, ...], prior_scale: float = 1.0,
               scale_head_prior: float | None = None):
    """The MDN as a plain NumPyro model ``model(X, y)``."""
    head_prior = prior_scale if scale_head_prior is None else scale_head_prior

    def dense(name, h, width, scale):
        fan_in = h.shape[-1]
        w = numpyro.sample(f"{name}.kernel", dist.Normal(0, scale / np.sqrt(fan_in)).expand(
            [fan_in, width]).to_event(2))
        b = numpyro.sample(f"{name}.bias", dist.Normal(0, 1).expand([width]).to_event(1))
        return h @ w + b

    def model(X, y=None):
        h = X
        for i, width in enumerate(hidden):
            h = jnp.tanh(dense(f"hidden_{i}", h, width, prior_scale))
        logits = dense("logits", h, num_components, prior_scale)
        loc = dense("loc", h, num_components, prior_scale)
        scale = jax.nn.softplus(dense("scale", h, num_components, head_prior)) + 1e-3
        with numpyro.plate("data", X.shape[0]):
            mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                             dist.Normal(loc, scale))
            numpyro.sample("y", mixture, obs=None if y is None else y[:, 0])

    return model


def _adam_scan(loss, num_steps: int, learning_rate: float):
    optimizer = optax.adam(learning_rate)

    def run(init):
        def step(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), losses = jax.lax.scan(step, (init, optimizer.init(init)), None,
                                           length=num_steps)
        return params, losses

    return run


def make_map(model, X, y, num_steps: int, learning_rate: float = 0.01):
    """Compiled ``init -> (params, losses)``: full-batch Adam on the negative log joint in
    one lax.scan (compiled once, so a second call is the steady state)."""
    return jax.jit(_adam_scan(lambda p: -log_density(model, (X, y), {}, p)[0], num_steps,
                              learning_rate))


def make_ensemble(model, X, y, num_steps: int, learning_rate: float = 0.01):
    """Compiled ``inits -> (params, losses)``: the MAP loop vmapped over E starting points."""
    return jax.jit(jax.vmap(_adam_scan(lambda p: -log_density(model, (X, y), {}, p)[0],
                                       num_steps, learning_rate)))


def make_svi(model, X, y, guide: str, num_steps: int, num_draws: int,
             learning_rate: float = 0.005, init_scale: float = 0.01, num_particles: int = 1,
             lr_schedule: str = "constant"):
    """Compiled ``(init, key) -> draws``: SVI from a MAP point (svi.update in a lax.scan),
    then posterior draws. The mean-field guide uses TraceMeanField_ELBO (closed-form KL),
    the others Trace_ELBO, as bayes_mdn does."""
    if guide == "normal":
        auto = AutoNormal(model, init_scale=init_scale)
    else:
        cls = AutoLowRankMultivariateNormal if guide == "lowrank" else AutoMultivariateNormal
        auto = cls(model, init_scale=init_scale)
    rate = (optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
            if lr_schedule == "cosine" else learning_rate)
    elbo = TraceMeanField_ELBO if guide == "normal" else Trace_ELBO
    svi = SVI(model, auto, optax.adam(rate), elbo(num_particles=num_particles))

    @jax.jit
    def run(init, key):
        if guide == "normal":
            init_params = {f"{name}_auto_loc": value for name, value in init.items()}
        else:
            # numpyro packs the sites in sorted-name order (its starting values are a pytree).
            init_params = {"auto_loc": jnp.concatenate([jnp.ravel(init[name])
                                                        for name in sorted(init)])}
        run_key, draw_key = jax.random.split(key)
        state = svi.init(run_key, X, y, init_params=init_params)
        state, _ = jax.lax.scan(lambda s, _: svi.update(s, X, y), state, None,
                                length=num_steps)
        return auto.sample_posterior(draw_key, svi.get_params(state), X,
                                     sample_shape=(num_draws,))

    return run


def nuts_fit(model, X, y, inits, key, *, num_warmup, num_samples, num_chains, max_tree_depth):
    mcmc = MCMC(NUTS(model, max_tree_depth=max_tree_depth), num_warmup=num_warmup,
                num_samples=num_samples, num_chains=num_chains, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(key, X, y, init_params=inits)
    return mcmc.get_samples()


def laplace_fit(model, X, y, centre, key, num_draws: int, hessian: str = "exact"):
    """Gaussian at `centre` with the inverse Hessian of the negative log joint."""
    names = list(centre)
    shapes = [centre[n].shape for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0, *sizes])

    def unravel(flat):
        return {n: flat[a:b].reshape(s) for n, s, a, b in
                zip(names, shapes, offsets[:-1], offsets[1:], strict=True)}

    def potential(z):
        return -log_density(model, (X, y), {}, unravel(z))[0]

    def row_log_likelihood(z):
        return log_likelihood(model, unravel(z), X, y, batch_ndims=0)["y"]

    def dense_hessian(function, flat):
        """Hessian by Hessian-vector products, 64 columns at a time (jax.hessian over all
        columns at once holds W copies of the network's intermediates: 79 GB at n = 4000)."""
        def hvp(direction):
            return jax.jvp(jax.grad(function), (flat,), (direction,))[1]
        return jax.lax.map(hvp, jnp.eye(flat.shape[0], dtype=flat.dtype), batch_size=64)

    @jax.jit
    def run(flat, key):
        if hessian == "exact":
            precision = dense_hessian(potential, flat)
        else:  # prior curvature + Fisher information (Monte Carlo over replicate data sets)
            precision = dense_hessian(lambda z: potential(z) + row_log_likelihood(z).sum(),
                                      flat)
            fisher = jnp.zeros_like(precision)
            for index in range(FISHER_REPLICATES):
                replicate_key = jax.random.fold_in(key, 1000 + index)
                replicate = trace(seed(substitute(model, data=unravel(flat)), replicate_key)
                                  ).get_trace(X, None)["y"]["value"][:, None]
                # One gradient per row (vmap of grad), not jacrev of the (N,) vector: jacrev
                # back-propagates N cotangents through all N rows, N^2 memory (76 GB here).
                per_row = jax.vmap(lambda x_row, r_row: jax.grad(
                    lambda z: log_likelihood(model, unravel(z), x_row[None], r_row[None],
                                             batch_ndims=0)["y"].sum())(flat))(X, replicate)
                fisher = fisher + per_row.T @ per_row
            precision = precision + fisher / FISHER_REPLICATES
        return dist.MultivariateNormal(flat, precision_matrix=precision).sample(
            key, (num_draws,))

    flat = jnp.concatenate([jnp.ravel(centre[n]) for n in names])
    return run(flat, key)
