"""Prior specifications: resolution, precedence, the distributions they build (checked
against scipy), validation, and the prior log-density of a whole network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from scipy import stats

import bayes_mdn as bm
from bayes_mdn import priors
from bayes_mdn.priors import (
    CallablePrior,
    FanInNormal,
    Flat,
    Normal,
    PriorMap,
    Site,
    prior_from_config,
    resolve_prior,
)

# Log-densities are computed in float32 (unless x64 is on); relative tolerance for them.
RTOL = 1e-5

KERNEL = Site("hidden_0.kernel", (4, 3), 4, "kernel")
BIAS = Site("hidden_0.bias", (3,), 4, "bias")


def _values(site: Site, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=site.shape).astype(np.float32)


def _scipy_normal_lp(value: np.ndarray, std: float) -> float:
    return float(np.sum(stats.norm.logpdf(np.asarray(value, np.float64), 0.0, std)))


# --------------------------------------------------------------------------- resolve_prior
def test_resolve_none_is_fan_in_normal():
    assert resolve_prior(None) == PriorMap() == PriorMap((), FanInNormal())
    assert bm.MDN(num_components=2, hidden_sizes=(3,)).prior == PriorMap()


def test_resolve_instance_becomes_default():
    resolved = resolve_prior(Normal(2.0))
    assert resolved == PriorMap(default=Normal(2.0))
    assert resolved.for_site(KERNEL) == Normal(2.0)


def test_resolve_prior_map_passes_through():
    prior_map = PriorMap((("loc", Normal(2.0)),), Flat())
    assert resolve_prior(prior_map) is prior_map


def test_resolve_dict_sorts_entries_and_takes_default():
    resolved = resolve_prior({"scale": Normal(3.0), "default": Normal(0.5), "loc": Flat()})
    assert resolved.entries == (("loc", Flat()), ("scale", Normal(3.0)))
    assert resolved.default == Normal(0.5)
    # Hashable and order-independent: it is part of the jit cache key of a model.
    same = resolve_prior({"loc": Flat(), "scale": Normal(3.0), "default": Normal(0.5)})
    assert same == resolved and hash(same) == hash(resolved)


def test_resolve_dict_without_default_uses_fan_in_normal():
    assert resolve_prior({"loc": Normal(2.0)}).default == FanInNormal()


def test_resolve_callable_wraps_it():
    def function(name, shape):
        return dist.Normal(0.0, 1.0)

    resolved = resolve_prior(function)
    assert resolved.entries == ()
    assert isinstance(resolved.default, CallablePrior)
    assert resolved.default.function is function


def test_resolve_rejects_other_types():
    with pytest.raises(TypeError, match=r"`prior` must be a bayes_mdn\.priors\.Prior, a dict of "
                                        r"site names to priors, or a callable \(name, shape\) -> "
                                        r"Distribution; got str\."):
        resolve_prior("normal")


def test_resolve_rejects_non_prior_values():
    with pytest.raises(TypeError, match=r"Prior dict value for 'default' must be a "
                                        r"bayes_mdn\.priors\.Prior .*; got Normal\."):
        resolve_prior({"default": dist.Normal(0.0, 1.0)})


def test_resolve_rejects_non_string_keys():
    with pytest.raises(TypeError, match=r"Prior dict keys must be site names \(str\); got "
                                        r"\('loc',\)\."):
        resolve_prior({("loc",): Normal(1.0)})


# --------------------------------------------------------------------------- precedence
def test_most_specific_key_wins():
    resolved = resolve_prior({
        "default": Normal(3.0),
        "loc": Normal(2.0),
        "loc.kernel": Normal(1.0),
    })
    loc_kernel = Site("loc.kernel", (4, 2), 4, "kernel")
    loc_bias = Site("loc.bias", (2,), 4, "bias")
    assert loc_kernel.layer == loc_bias.layer == "loc"
    assert resolved.for_site(loc_kernel) == Normal(1.0)  # site name
    assert resolved.for_site(loc_bias) == Normal(2.0)  # layer name
    assert resolved.for_site(KERNEL) == Normal(3.0)  # default
    assert resolved.for_site(BIAS) == Normal(3.0)


def test_check_sites_accepts_site_and_layer_names():
    model = bm.MDN(num_components=2, hidden_sizes=(3,),
                   prior={"hidden_0": Normal(1.0), "loc.bias": Normal(2.0)})
    model.prior.check_sites(model.sites(2, 1))


def test_check_sites_rejects_unknown_keys():
    model = bm.MDN(num_components=2, hidden_sizes=(3,),
                   prior={"hidden_1": Normal(1.0), "loc.weight": Normal(2.0)})
    with pytest.raises(ValueError, match=r"Prior keys \['hidden_1', 'loc\.weight'\] match no "
                                         r"parameter site; valid keys are \[.*'hidden_0', "
                                         r"'hidden_0\.bias'.*\] and 'default'\."):
        model.prior.check_sites(model.sites(2, 1))


# --------------------------------------------------------------------------- distributions
@pytest.mark.parametrize(("scale", "bias_scale"), [(1.0, 1.0), (2.5, 0.3)])
def test_fan_in_normal_kernel_and_bias_scales(scale, bias_scale):
    prior = FanInNormal(scale=scale, bias_scale=bias_scale)
    for site, std in ((KERNEL, scale / np.sqrt(KERNEL.fan_in)), (BIAS, bias_scale)):
        distribution = prior.distribution(site)
        assert distribution.batch_shape == ()
        assert distribution.event_shape == site.shape
        np.testing.assert_allclose(np.sqrt(distribution.variance), np.full(site.shape, std),
                                   rtol=RTOL)
        value = _values(site)
        np.testing.assert_allclose(float(distribution.log_prob(value)),
                                   _scipy_normal_lp(value, std), rtol=RTOL)


def test_fan_in_normal_scales_with_fan_in():
    prior = FanInNormal(scale=2.0)
    for fan_in in (1, 4, 100):
        site = Site("loc.kernel", (fan_in, 2), fan_in, "kernel")
        std = np.sqrt(prior.distribution(site).variance)
        np.testing.assert_allclose(std, 2.0 / np.sqrt(fan_in), rtol=RTOL)
        bias = Site("loc.bias", (2,), fan_in, "bias")
        np.testing.assert_allclose(np.sqrt(prior.distribution(bias).variance), 1.0, rtol=RTOL)


def test_normal_prior_ignores_fan_in():
    for site in (KERNEL, BIAS):
        distribution = Normal(0.7).distribution(site)
        assert distribution.event_shape == site.shape
        value = _values(site, seed=1)
        np.testing.assert_allclose(float(distribution.log_prob(value)),
                                   _scipy_normal_lp(value, 0.7), rtol=RTOL)


def test_flat_prior_is_zero_everywhere():
    distribution = Flat().distribution(KERNEL)
    assert distribution.event_shape == KERNEL.shape
    assert float(distribution.log_prob(_values(KERNEL) * 1e3)) == 0.0


@pytest.mark.parametrize("value", [-1, -1.0, 0, 0.0, float("nan"), float("inf")])
def test_normal_scale_must_be_positive(value):
    with pytest.raises(ValueError, match=r"`scale` must be a finite positive number; got "):
        Normal(scale=value)


@pytest.mark.parametrize("value", ["1", None, True])
def test_normal_scale_must_be_a_number(value):
    with pytest.raises(TypeError, match=r"`scale` must be a positive number; got "):
        Normal(scale=value)


def test_fan_in_normal_validates_both_scales():
    with pytest.raises(ValueError, match=r"`scale` must be a finite positive number; got -2"):
        FanInNormal(scale=-2.0)
    with pytest.raises(ValueError, match=r"`bias_scale` must be a finite positive number; got 0"):
        FanInNormal(bias_scale=0.0)


# --------------------------------------------------------------------------- callable priors
def test_callable_scalar_distribution_is_expanded():
    prior = CallablePrior(lambda name, shape: dist.Normal(0.0, 2.0))
    distribution = prior.distribution(KERNEL)
    assert distribution.batch_shape == () and distribution.event_shape == KERNEL.shape
    value = _values(KERNEL)
    np.testing.assert_allclose(float(distribution.log_prob(value)),
                               _scipy_normal_lp(value, 2.0), rtol=RTOL)


def test_callable_receives_name_and_shape():
    seen = []

    def function(name, shape):
        seen.append((name, tuple(shape)))
        return dist.Normal(jnp.zeros(shape), 0.5)  # batch shape == site shape

    distribution = CallablePrior(function).distribution(KERNEL)
    assert seen == [("hidden_0.kernel", (4, 3))]
    assert distribution.batch_shape == () and distribution.event_shape == KERNEL.shape
    value = _values(KERNEL)
    np.testing.assert_allclose(float(distribution.log_prob(value)),
                               _scipy_normal_lp(value, 0.5), rtol=RTOL)


def test_callable_full_event_distribution_is_used_as_is():
    def function(name, shape):
        return dist.Normal(jnp.zeros(shape), 1.0).to_event(len(shape))

    distribution = CallablePrior(function).distribution(BIAS)
    assert distribution.batch_shape == () and distribution.event_shape == BIAS.shape


def test_callable_wrong_shape_raises():
    prior = CallablePrior(lambda name, shape: dist.Normal(jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match=r"The prior callable returned a distribution of shape "
                                         r"\(3,\) for site 'hidden_0\.kernel', which has shape "
                                         r"\(4, 3\); return a scalar distribution or one of the "
                                         r"site's shape\."):
        prior.distribution(KERNEL)


def test_callable_non_distribution_raises():
    prior = CallablePrior(lambda name, shape: 1.0)
    with pytest.raises(TypeError, match=r"The prior callable returned float for site "
                                        r"'hidden_0\.kernel'; it must return a "
                                        r"numpyro\.distributions\.Distribution\."):
        prior.distribution(KERNEL)


def test_callable_wrong_shape_raises_at_fit():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 1)), rng.normal(size=20)
    model = bm.MDN(num_components=2, hidden_sizes=(4,),
                   prior=lambda name, shape: dist.Normal(jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match=r"returned a distribution of shape \(3,\) for site "
                                         r"'hidden_0\.kernel', which has shape \(1, 4\)"):
        model.fit(X, y, key=jax.random.key(0), num_steps=1)


# --------------------------------------------------------------------------- configs
def test_config_round_trip():
    prior_map = resolve_prior({"default": FanInNormal(2.0, 0.5), "loc": Normal(3.0),
                               "scale.bias": Flat()})
    assert prior_from_config(prior_map.to_config()) == prior_map


def test_callable_config_loads_as_unavailable():
    config = resolve_prior(lambda name, shape: dist.Normal(0.0, 1.0)).to_config()
    restored = prior_from_config(config)
    with pytest.raises(ValueError, match=r"This model was saved with a custom callable prior "
                                         r"\(.*<lambda>.*\), which cannot be stored\."):
        restored.for_site(KERNEL).distribution(KERNEL)


def test_unknown_prior_name_in_config():
    config = {"name": "map", "default": {"name": "spike_slab"}, "entries": {}}
    with pytest.raises(ValueError, match=r"Unknown prior 'spike_slab' in saved configuration\."):
        prior_from_config(config)


# --------------------------------------------------------------------------- network density
MIXED = {"default": FanInNormal(scale=1.5, bias_scale=0.7), "loc": Normal(2.0),
         "scale.bias": Flat()}


def _expected_std(site: Site) -> float | None:
    """The prior std implied by MIXED, written out by hand (None: flat)."""
    if site.name == "scale.bias":
        return None
    if site.layer == "loc":
        return 2.0
    return 1.5 / np.sqrt(site.fan_in) if site.role == "kernel" else 0.7


@pytest.fixture(scope="module")
def mixed_model():
    model = bm.MDN(num_components=3, hidden_sizes=(5, 4), prior=MIXED)
    sites = model.sites(2, 2)
    rng = np.random.default_rng(42)
    params = {site.name: rng.normal(size=site.shape).astype(np.float32) for site in sites}
    return model, sites, params


def test_prior_log_density_matches_scipy(mixed_model):
    model, sites, params = mixed_model
    expected = sum(
        _scipy_normal_lp(params[site.name], std)
        for site in sites
        if (std := _expected_std(site)) is not None
    )
    actual = float(priors.log_density(model.prior, sites, params))
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_numpyro_model_prior_sites_match_log_density(mixed_model):
    model, sites, params = mixed_model
    X_std = jnp.asarray(np.random.default_rng(1).normal(size=(6, 2)), dtype=jnp.float32)
    y_scale = jnp.ones(2, dtype=jnp.float32)
    seeded = handlers.seed(handlers.substitute(model.numpyro_model, data=params), rng_seed=0)
    trace = handlers.trace(seeded).get_trace(X_std, None, y_scale=y_scale)
    sample_sites = {name for name, site in trace.items() if site["type"] == "sample"}
    assert sample_sites == {site.name for site in sites} | {"y"}
    for site in sites:  # every weight site carries the whole tensor as one event
        assert trace[site.name]["fn"].event_shape == site.shape
        np.testing.assert_array_equal(trace[site.name]["value"], params[site.name])
    total = sum(
        float(trace[site.name]["fn"].log_prob(trace[site.name]["value"])) for site in sites
    )
    np.testing.assert_allclose(total, float(priors.log_density(model.prior, sites, params)),
                               rtol=RTOL)
