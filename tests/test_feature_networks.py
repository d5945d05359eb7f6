"""User-supplied Flax (linen) and Equinox feature networks: sites, priors, the same model as
the built-in MLP when the architecture matches, and fits by MAP and NUTS through MDN.fit."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import bayes_mdn as bm
from bayes_mdn.feature_networks import EquinoxNetwork, FlaxNetwork, resolve_network

WIDTH = 12


class FlaxFeatures(nn.Module):
    """Dense + tanh: the built-in MLP's first hidden layer, written in Flax."""

    width: int = WIDTH

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(self.width)(x))


def equinox_features(seed: int = 0):
    return eqx.nn.MLP(in_size=1, out_size=WIDTH, width_size=WIDTH, depth=1,
                      activation=jnp.tanh, final_activation=jnp.tanh, key=jax.random.key(seed))


@pytest.fixture(scope="module")
def data():
    return bm.datasets.inverse_sine(jax.random.key(5), num_samples=1200, train_fraction=0.5)


def test_flax_sites_names_shapes_and_fan_in():
    model = bm.MDN(num_components=3, hidden_sizes=(), network=FlaxFeatures())
    assert isinstance(model.network, FlaxNetwork)
    sites = {site.name: site for site in model.sites(2, 1)}
    assert sites["features.Dense_0.kernel"].shape == (2, WIDTH)
    assert sites["features.Dense_0.kernel"].fan_in == 2
    assert sites["features.Dense_0.bias"].role == "bias"
    assert sites["loc.kernel"].shape == (WIDTH, 3)  # heads read the module's features


def test_equinox_sites_use_equinox_layout():
    model = bm.MDN(num_components=2, hidden_sizes=(), network=equinox_features())
    assert isinstance(model.network, EquinoxNetwork)
    sites = {site.name: site for site in model.sites(1, 1)}
    assert sites["features.layers.0.weight"].shape == (WIDTH, 1)
    assert sites["features.layers.0.weight"].fan_in == 1  # (out, in): fan-in is axis 1
    assert sites["features.layers.1.weight"].fan_in == WIDTH
    assert sites["logits.kernel"].shape == (WIDTH, 2)


def test_flax_network_is_the_builtin_mlp_with_renamed_sites(data):
    """Same architecture, same weights: identical mixtures, and the same prior density."""
    X, y, _, _ = data
    builtin = bm.MDN(num_components=3, hidden_sizes=(WIDTH,))
    custom = bm.MDN(num_components=3, hidden_sizes=(), network=FlaxFeatures())
    fitted = builtin.fit(X, y, key=jax.random.key(0), num_steps=50)
    weights = {name: value[0, 0] for name, value in fitted.draws.items()}
    renamed = {name.replace("hidden_0", "features.Dense_0"): value
               for name, value in weights.items()}
    X_std = jnp.asarray(X[:30])
    y_scale = jnp.ones(1)
    expected = builtin.mixture(weights, X_std, y_scale)
    actual = custom.mixture(renamed, X_std, y_scale)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-6)
    for head in expected[1]:
        np.testing.assert_allclose(actual[1][head], expected[1][head], rtol=1e-5, atol=1e-6)
    from bayes_mdn.priors import log_density
    np.testing.assert_allclose(
        float(log_density(custom.prior, custom.sites(1, 1), renamed)),
        float(log_density(builtin.prior, builtin.sites(1, 1), weights)), rtol=1e-5)


@pytest.mark.parametrize("make", [FlaxFeatures, equinox_features], ids=["flax", "equinox"])
def test_map_through_mdn_fit(data, make):
    X, y, X_test, y_test = data
    model = bm.MDN(num_components=3, hidden_sizes=(), network=make())
    fitted = model.fit(X, y, key=jax.random.key(1), num_steps=800)
    assert set(fitted.draws) == set(model.latent_shapes(1, 1))
    map_ll = float(np.mean(fitted.predictive(X_test).log_prob(y_test)))
    # As good as the built-in MLP of the same architecture after the same steps.
    builtin = bm.MDN(num_components=3, hidden_sizes=(WIDTH,)).fit(
        X, y, key=jax.random.key(1), num_steps=800)
    builtin_ll = float(np.mean(builtin.predictive(X_test).log_prob(y_test)))
    assert map_ll > builtin_ll - 0.15 and map_ll > -2.5  # one wide Normal: about -2.9


@pytest.mark.slow  # about 30 s on two idle cores, most of it compiling NUTS
def test_nuts_with_a_flax_network_through_mdn_fit(data):
    X, y, X_test, y_test = data
    model = bm.MDN(num_components=3, hidden_sizes=(), network=FlaxFeatures())
    fitted = model.fit(X, y, key=jax.random.key(1), num_steps=800)
    map_ll = float(np.mean(fitted.predictive(X_test).log_prob(y_test)))
    nuts = model.fit(X, y, key=jax.random.key(2), method="nuts", init=fitted, num_chains=2,
                     num_warmup=20, num_samples=10, max_tree_depth=3)
    assert nuts.num_chains == 2 and nuts.num_draws == 10
    nuts_ll = nuts.predictive(X_test).log_prob(y_test)
    assert np.isfinite(nuts_ll).all() and np.mean(nuts_ll) > map_ll - 0.5


def test_ensemble_members_start_apart_with_equinox(data):
    X, y, _, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(), network=equinox_features())
    ensemble = model.fit(X, y, key=jax.random.key(3), method="ensemble", num_members=3,
                         num_steps=5)
    weight = np.asarray(ensemble.draws["features.layers.0.weight"])[0]
    assert not np.allclose(weight[0], weight[1])


def test_priors_address_module_sites_by_name(data):
    X, y, _, _ = data
    seen = []

    def prior(name, shape):
        seen.append(name)
        return numpyro.distributions.Normal(0.0, 1.0)

    model = bm.MDN(num_components=2, hidden_sizes=(), network=FlaxFeatures(), prior=prior)
    model.fit(X, y, key=jax.random.key(4), num_steps=5)
    assert "features.Dense_0.kernel" in seen
    keyed = bm.MDN(num_components=2, hidden_sizes=(), network=FlaxFeatures(),
                   prior={"features": bm.priors.Hierarchical()})
    shapes = keyed.latent_shapes(1, 1)
    assert "features.Dense_0.kernel.tau" not in shapes  # layer key is "features.Dense_0"
    keyed = bm.MDN(num_components=2, hidden_sizes=(), network=FlaxFeatures(),
                   prior={"features.Dense_0": bm.priors.Hierarchical()})
    assert "features.Dense_0.kernel.tau" in keyed.latent_shapes(1, 1)


def test_prior_key_matching_no_site_is_rejected(data):
    X, y, _, _ = data
    model = bm.MDN(num_components=2, hidden_sizes=(), network=FlaxFeatures(),
                   prior={"features": bm.priors.Hierarchical()})
    with pytest.raises(ValueError, match=r"Prior keys \['features'\] match no parameter site"):
        model.fit(X, y, key=jax.random.key(4), num_steps=5)


def test_saved_custom_network_must_be_passed_again(tmp_path, data):
    X, y, X_test, _ = data
    module = FlaxFeatures()
    model = bm.MDN(num_components=2, hidden_sizes=(), network=module)
    fitted = model.fit(X, y, key=jax.random.key(6), num_steps=20)
    path = tmp_path / "custom.bmdn"
    fitted.save(path)
    loaded = bm.load(path)
    with pytest.raises(ValueError, match=r"(?s)saved with a custom feature network .*flax.*"
                                         r"Pass the module again"):
        loaded.predictive(X_test[:5]).mean()
    restored = dataclasses.replace(loaded, model=dataclasses.replace(loaded.model,
                                                                     network=module))
    np.testing.assert_array_equal(restored.predictive(X_test[:5]).mean(),
                                  fitted.predictive(X_test[:5]).mean())


def test_unsupported_network_type():
    with pytest.raises(TypeError, match=r"`network` must be a flax.linen.Module or an "
                                        r"equinox.Module .* got str\. Install"):
        bm.MDN(network="resnet")
    assert resolve_network(None) is None
