"""The family contract, generated from the registry (bayes_mdn.families.FAMILIES): every
registered family, including one a user registers, declares its capabilities, round-trips
through its configuration and through save/load, and gives a predictive whose samples lie
in its support, whose log-densities are finite there and (with a closed-form cdf) whose
cdf at its median is 1/2. Diagnostics read the declared capabilities."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import numpy as np
import pytest
from _posteriors import head_bias_posterior

import bayes_mdn as bm
from bayes_mdn import families as F
from bayes_mdn.diagnostics import function_space_draws

X = np.array([[-1.0], [0.0], [2.0]])


@dataclass(frozen=True)
class WideNormal(F.Normal):
    """A user's family: a Normal without closed-form marginals or a scale floor report."""

    name: ClassVar[str] = "test_wide_normal"
    closed_form_cdf: ClassVar[bool] = False

    def scale_floor(self) -> float | None:
        return None


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so a family registered in a test leaves no trace."""
    monkeypatch.setattr(F, "FAMILIES", dict(F.FAMILIES))
    return F.FAMILIES


def random_posterior(family: F.Family, *, seed: int = 0) -> bm.Posterior:
    """Two draws, K = 2, small random raw head outputs (valid for every link)."""
    rng = np.random.default_rng(seed)
    num_outputs = family.min_outputs
    widths = {"logits": 1, **family.head_dims(num_outputs)}
    biases = {head: 0.3 * rng.normal(size=(2, 2 * width)) for head, width in widths.items()}
    return head_bias_posterior(family, biases, num_components=2, num_outputs=num_outputs)


@pytest.fixture(params=sorted(F.FAMILIES))
def family(request) -> F.Family:
    return F.FAMILIES[request.param]()


def test_capabilities_are_declared(family):
    assert isinstance(family.discrete, bool) and isinstance(family.closed_form_cdf, bool)
    assert isinstance(family.closed_form_crps, bool) and isinstance(family.standardize_y, bool)
    lower, upper = family.support
    assert lower < upper
    floor = family.scale_floor()
    assert floor is None or (math.isfinite(floor) and floor > 0)
    assert F.family_from_config(json.loads(json.dumps(family.to_config()))) == family


def test_predictive_respects_the_declared_support(family):
    pred = random_posterior(family).predictive(X)
    samples = pred.sample(jax.random.key(0), num_samples=64)  # (64, M, D)
    lower, upper = family.support
    assert np.all((samples >= lower) & (samples <= upper))
    if family.discrete:
        assert np.all(samples == np.round(samples))
    log_prob = np.stack([pred.log_prob(sample) for sample in samples[:8]])
    assert np.isfinite(log_prob).all()
    if family.closed_form_cdf:
        median = pred.quantiles(0.5)
        cdf = pred.cdf(median.reshape(X.shape[0], -1))
        if family.discrete:
            assert np.all(cdf >= 0.5 - 1e-6)
        else:
            np.testing.assert_allclose(cdf, 0.5, atol=1e-4)


def test_user_family_round_trips_through_save_and_load(registry, tmp_path):
    assert F.register_family(WideNormal) is WideNormal
    assert F.register_family(WideNormal) is WideNormal  # again: a no-op
    posterior = random_posterior(WideNormal(min_scale=0.01))
    path = tmp_path / "user.bmdn"
    posterior.save(path)
    loaded = bm.load(path)
    assert loaded.model.family == WideNormal(min_scale=0.01)
    np.testing.assert_array_equal(loaded.predictive(X).log_prob(np.zeros(3)),
                                  posterior.predictive(X).log_prob(np.zeros(3)))
    del registry["test_wide_normal"]
    with pytest.raises(ValueError, match=r"Unknown family 'test_wide_normal' in saved "
                       r"configuration\. If it is a family defined in your code, register"):
        bm.load(path)


def test_register_family_refuses_bad_classes(registry):
    with pytest.raises(TypeError, match=r"register_family takes a @dataclass\(frozen=True\) "
                       "subclass"):
        F.register_family(int)

    @dataclass(frozen=True)
    class Unnamed(F.Normal):
        pass

    with pytest.raises(ValueError, match=r"Unnamed needs a name of its own"):
        F.register_family(Unnamed)

    @dataclass(frozen=True)
    class Impostor(F.Normal):
        name: ClassVar[str] = "gamma"

    with pytest.raises(ValueError, match=r"The family name 'gamma' is taken by Gamma"):
        F.register_family(Impostor)


def test_base_class_is_abstract():
    with pytest.raises(TypeError, match=r"abstract"):
        F.Family()


def test_diagnostics_read_the_declared_capabilities():
    """Quantiles need a closed-form cdf, the scale-floor report a declared floor."""
    normal = function_space_draws(random_posterior(F.Normal(min_scale=0.01)))
    assert "quantiles" in normal and "scale_floor_fraction" in normal
    wide = function_space_draws(random_posterior(WideNormal(min_scale=0.01)))
    assert "quantiles" not in wide and "scale_floor_fraction" not in wide
