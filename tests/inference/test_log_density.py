"""bm.log_density: the log posterior in BlackJAX's ``logdensity_fn`` terms, and a user's own
sampler (BlackJAX NUTS) turned back into a Posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.model import point_log_prob
from bayes_mdn.scaling import Standardizer

N = 40
MODEL = bm.MDN(num_components=2, hidden_sizes=(3,))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 1))
    return X, np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)


@pytest.fixture(scope="module")
def target(data):
    X, y = data
    return bm.log_density(MODEL, X, y, key=jax.random.key(0))


def test_log_density_is_log_prior_plus_log_likelihood(data, target):
    """Every site of this model is unconstrained (Normal priors on real weights), so the
    density is the priors' log densities plus the mixture log-likelihood in standardised
    units; compared at two positions to 1e-4 relative."""
    X, y = data
    standardizer = Standardizer.fit(np.asarray(X, np.float32),
                                    np.asarray(y, np.float32)[:, None])
    X_std, y_std = standardizer.transform_X(X), standardizer.transform_y(y[:, None])
    y_scale = jnp.asarray(standardizer.y_scale, X_std.dtype)
    priors = MODEL.prior.latent_distributions(MODEL.sites(1, 1))
    assert set(priors) == set(target.initial_position)
    for shift in (0.0, 0.3):
        position = {name: value + shift for name, value in target.initial_position.items()}
        expected = (sum(float(jnp.sum(priors[name].log_prob(value)))
                        for name, value in position.items())
                    + float(jnp.sum(point_log_prob(MODEL, position, X_std, y_std, y_scale))))
        value = target.logdensity_fn(position)
        assert value.shape == ()
        assert float(value) == pytest.approx(expected, rel=1e-4)
    gradient = jax.grad(target.logdensity_fn)(target.initial_position)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(gradient))


def test_blackjax_nuts_on_log_density_gives_a_posterior(data, target, tmp_path):
    blackjax = pytest.importorskip("blackjax")
    X, y = data
    num_chains, num_samples = 2, 20
    kernel = blackjax.nuts(target.logdensity_fn, step_size=0.02,
                           inverse_mass_matrix=jnp.ones(MODEL.num_parameters(1, 1)))

    def chain(key):
        def step(state, step_key):
            state, _ = kernel.step(step_key, state)
            return state, state.position

        _, positions = jax.lax.scan(step, kernel.init(target.initial_position),
                                    jax.random.split(key, num_samples))
        return positions

    positions = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), num_chains))
    posterior = target.to_posterior(positions, method="blackjax_nuts")
    assert (posterior.num_chains, posterior.num_draws) == (num_chains, num_samples)
    assert posterior.kind == "chains" and posterior.method == "blackjax_nuts"
    log_prob = np.asarray(posterior.predictive(X[:5]).log_prob(y[:5]))
    assert log_prob.shape == (5,) and np.isfinite(log_prob).all()
    report = bm.diagnostics.diagnose(posterior, warn=False)
    assert report.max_rhat is not None  # two chains of the "chains" kind: R-hat computed
    posterior.save(tmp_path / "bj.bmdn")
    assert bm.load(tmp_path / "bj.bmdn").kind == "chains"


def test_to_posterior_refuses_bad_positions(target):
    with pytest.raises(ValueError, match=r"`positions` lacks the sites"):
        target.to_posterior({})
    bad = {name: value[None, None, None] for name, value in target.initial_position.items()}
    with pytest.raises(ValueError, match=r"leading \(C, S\) axes"):
        target.to_posterior(bad)
    with pytest.raises(ValueError, match=r"Unknown kind 'mcmc'"):
        target.to_posterior({name: value[None] for name, value in
                             target.initial_position.items()}, kind="mcmc")


def test_log_density_refuses_bad_input(data):
    X, y = data
    with pytest.raises(TypeError, match=r"`model` must be a bayes_mdn.MDN"):
        bm.log_density("mdn", X, y, key=jax.random.key(0))
    flat = bm.MDN(num_components=2, hidden_sizes=(3,), prior=bm.priors.Flat())
    with pytest.raises(ValueError, match=r"method='log_density' integrates over the "
                       r"posterior and needs a proper prior"):
        bm.log_density(flat, X, y, key=jax.random.key(0))
