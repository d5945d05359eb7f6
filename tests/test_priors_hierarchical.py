"""The prior library beyond Normals: Laplace and Student-t weights, hierarchical (ARD) scales
and the regularised horseshoe, as latent sites of the NumPyro model, checked against scipy,
their non-centred transforms, and fits by every method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from scipy import stats

import bayes_mdn as bm
from bayes_mdn import priors
from bayes_mdn.priors import (
    Hierarchical,
    Horseshoe,
    Laplace,
    Site,
    StudentT,
    prior_from_config,
    resolve_prior,
)

RTOL = 1e-5
KERNEL = Site("hidden_0.kernel", (4, 3), 4, "kernel")
BIAS = Site("hidden_0.bias", (3,), 4, "bias")


def _values(shape, seed=0, positive=False):
    value = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return np.abs(value) + 0.1 if positive else value


# --------------------------------------------------------------------------- simple priors
@pytest.mark.parametrize("fan_in", [True, False])
def test_laplace_matches_scipy(fan_in):
    prior = Laplace(scale=1.5, bias_scale=0.3, fan_in=fan_in)
    value = _values(KERNEL.shape)
    expected_b = 1.5 / 2.0 if fan_in else 1.5  # fan_in 4
    np.testing.assert_allclose(float(prior.distribution(KERNEL).log_prob(value)),
                               stats.laplace.logpdf(value, scale=expected_b).sum(), rtol=RTOL)
    bias = _values(BIAS.shape, 1)
    np.testing.assert_allclose(float(prior.distribution(BIAS).log_prob(bias)),
                               stats.laplace.logpdf(bias, scale=0.3).sum(), rtol=RTOL)


def test_student_t_matches_scipy():
    prior = StudentT(df=2.5, scale=2.0, bias_scale=0.5)
    value = _values(KERNEL.shape)
    np.testing.assert_allclose(float(prior.distribution(KERNEL).log_prob(value)),
                               stats.t.logpdf(value, 2.5, scale=1.0).sum(), rtol=RTOL)
    bias = _values(BIAS.shape, 1)
    np.testing.assert_allclose(float(prior.distribution(BIAS).log_prob(bias)),
                               stats.t.logpdf(bias, 2.5, scale=0.5).sum(), rtol=RTOL)


@pytest.mark.parametrize(("factory", "message"), [
    (lambda: Laplace(scale=0.0), r"`scale` must be a finite positive number; got 0\.0\."),
    (lambda: StudentT(df=-1.0), r"`df` must be a finite positive number; got -1\.0\."),
    (lambda: Hierarchical(group="layer"), r"`group` must be 'tensor' or 'input'; got 'layer'"),
    (lambda: Hierarchical(fan_in=1), r"`fan_in` must be True or False; got 1\."),
    (lambda: Horseshoe(slab_df=float("inf")), r"`slab_df` must be a finite positive number"),
])
def test_invalid_prior_options(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


# --------------------------------------------------------------------------- hierarchical
@pytest.mark.parametrize("group", ["tensor", "input"])
def test_hierarchical_latents_and_weight(group):
    prior = Hierarchical(scale=0.8, bias_scale=0.4, group=group)
    latents = prior.latent_distributions(KERNEL)
    tau_shape = (4, 1) if group == "input" else ()
    assert {name: tuple(d.event_shape) for name, d in latents.items()} == {
        "hidden_0.kernel.z": (4, 3), "hidden_0.kernel.tau": tau_shape}
    z, tau = _values((4, 3)), _values(tau_shape, 2, positive=True)
    values = {"hidden_0.kernel.z": z, "hidden_0.kernel.tau": tau}
    np.testing.assert_allclose(prior.weight(KERNEL, values), z * tau / 2.0, rtol=RTOL)
    expected = stats.norm.logpdf(z).sum() + stats.halfnorm.logpdf(tau, scale=0.8).sum()
    actual = sum(float(d.log_prob(values[name])) for name, d in latents.items())
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    # Biases keep one scale with their own hyperprior scale.
    bias_latents = prior.latent_distributions(BIAS)
    assert tuple(bias_latents["hidden_0.bias.tau"].event_shape) == ()
    np.testing.assert_allclose(float(bias_latents["hidden_0.bias.tau"].log_prob(0.3)),
                               stats.halfnorm.logpdf(0.3, scale=0.4), rtol=RTOL)


@pytest.mark.parametrize("prior", [Hierarchical(), Hierarchical(group="input"), Horseshoe(),
                                   Laplace(), StudentT()])
@pytest.mark.parametrize("site", [KERNEL, BIAS])
def test_initial_latents_reproduce_the_weight(prior, site):
    weight = jnp.asarray(_values(site.shape, 3))
    latents = prior.initial_latents(site, weight)
    assert set(latents) == set(prior.latent_distributions(site))
    np.testing.assert_allclose(prior.weight(site, latents), weight, rtol=1e-5, atol=1e-7)
    for name, value in latents.items():  # each latent inside its prior's support
        assert np.isfinite(float(prior.latent_distributions(site)[name].log_prob(value)))


def test_horseshoe_shrinkage_formula():
    prior = Horseshoe(global_scale=0.5, slab_scale=1.5, slab_df=3.0)
    z, lam = _values((4, 3)), _values((4, 3), 1, positive=True)
    tau, c2 = np.float32(0.3), np.float32(2.0)
    values = {"hidden_0.kernel.z": z, "hidden_0.kernel.lambda": lam,
              "hidden_0.kernel.tau": tau, "hidden_0.kernel.c2": c2}
    lam_tilde = np.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
    np.testing.assert_allclose(prior.weight(KERNEL, values), z * tau * lam_tilde, rtol=1e-5)
    latents = prior.latent_distributions(KERNEL)
    expected = (stats.norm.logpdf(z).sum() + stats.halfcauchy.logpdf(lam).sum()
                + stats.halfcauchy.logpdf(tau, scale=0.25)  # 0.5 / sqrt(fan_in 4)
                + stats.invgamma.logpdf(c2, 1.5, scale=1.5 * 1.5**2))
    actual = sum(float(d.log_prob(values[name])) for name, d in latents.items())
    np.testing.assert_allclose(actual, expected, rtol=1e-4)
    assert set(prior.latent_distributions(BIAS)) == {"hidden_0.bias"}


def test_new_priors_config_round_trip():
    prior_map = resolve_prior({"default": Hierarchical(0.7, group="input"),
                               "loc": Horseshoe(global_scale=0.3), "scale": Laplace(0.5),
                               "logits": StudentT(df=4.0)})
    assert prior_from_config(prior_map.to_config()) == prior_map


# --------------------------------------------------------------------------- in the model
MIXED = {"default": Hierarchical(group="input"), "loc": Horseshoe(), "scale": Laplace()}


def test_model_samples_exactly_the_latent_sites():
    model = bm.MDN(num_components=2, hidden_sizes=(5,), prior=MIXED)
    shapes = model.latent_shapes(3, 1)
    assert shapes["hidden_0.kernel.tau"] == (3, 1)
    assert shapes["loc.kernel.lambda"] == (5, 2) and shapes["loc.bias"] == (2,)
    assert shapes["scale.kernel"] == (5, 2)
    X_std = jnp.asarray(_values((7, 3)))
    trace = handlers.trace(handlers.seed(model.numpyro_model, 0)).get_trace(
        X_std, None, y_scale=jnp.ones(1))
    sampled = {name: tuple(site["value"].shape) for name, site in trace.items()
               if site["type"] == "sample" and name != "y"}
    assert sampled == shapes
    latents = {name: trace[name]["value"] for name in shapes}
    total = sum(float(trace[name]["fn"].log_prob(value)) for name, value in latents.items())
    np.testing.assert_allclose(
        total, float(priors.log_density(model.prior, model.sites(3, 1), latents)), rtol=RTOL)


@pytest.fixture(scope="module")
def data():
    return bm.datasets.inverse_sine(jax.random.key(3), num_samples=400, train_fraction=0.5)


@pytest.mark.parametrize("prior", [Hierarchical(), Hierarchical(group="input"), Horseshoe(),
                                   Laplace(), StudentT()], ids=lambda p: repr(p)[:24])
def test_map_fit_with_each_prior(data, prior):
    X, y, X_test, y_test = data
    model = bm.MDN(num_components=3, hidden_sizes=(8,), prior=prior)
    posterior = model.fit(X, y, key=jax.random.key(0), num_steps=400)
    assert set(posterior.draws) == set(model.latent_shapes(1, 1))
    log_lik = posterior.predictive(X_test).log_prob(y_test)
    assert np.isfinite(log_lik).all()
    assert np.mean(log_lik) > -2.6  # learned something (a single wide Normal scores ~ -2.9)


@pytest.mark.parametrize("method,options", [
    ("svi", {"num_steps": 100, "num_draws": 20}),
    ("laplace", {"num_steps": 300, "hessian": "fisher", "num_draws": 20}),
    ("nuts", {"num_chains": 2, "num_warmup": 20, "num_samples": 10, "max_tree_depth": 3}),
    ("ensemble", {"num_members": 2, "num_steps": 50}),
])
def test_hierarchical_prior_with_every_method(data, method, options):
    X, y, X_test, y_test = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,), prior=Hierarchical(group="input"))
    posterior = model.fit(X, y, key=jax.random.key(1), method=method, **options)
    assert set(posterior.draws) == set(model.latent_shapes(1, 1))
    taus = np.asarray(posterior.draws["hidden_0.kernel.tau"])
    assert taus.shape[2:] == (1, 1) and (taus > 0).all()
    assert np.isfinite(posterior.predictive(X_test[:40]).log_prob(y_test[:40])).all()


def test_hierarchical_posterior_saves_and_loads(tmp_path, data):
    X, y, X_test, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,), prior=MIXED)
    posterior = model.fit(X, y, key=jax.random.key(2), num_steps=50)
    path = tmp_path / "fit.bmdn"
    posterior.save(path)
    loaded = bm.load(path)
    assert loaded.model == model
    np.testing.assert_array_equal(loaded.predictive(X_test[:20]).mean(),
                                  posterior.predictive(X_test[:20]).mean())


def test_nuts_starts_hierarchical_scales_where_init_put_them(data):
    """numpyro's init_params are unconstrained: a positive scale must enter as its log.

    (Passing the constrained value started chains at exp(tau), hundreds, where they stuck.)
    """
    X, y, _, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,), prior=Hierarchical(2.0))
    fitted = model.fit(X, y, key=jax.random.key(5), num_steps=300)
    start = float(np.asarray(fitted.draws["hidden_0.kernel.tau"]).ravel()[0])
    nuts = model.fit(X, y, key=jax.random.key(6), method="nuts", init=fitted, num_chains=1,
                     num_warmup=0, num_samples=3, max_tree_depth=2)
    first = float(np.asarray(nuts.draws["hidden_0.kernel.tau"])[0, 0])
    assert abs(np.log(first) - np.log(start)) < 0.5, (start, first)
