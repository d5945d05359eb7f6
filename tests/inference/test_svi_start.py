"""SVI guides start centred on the MAP fit passed as ``init=``, at every guide family."""

import jax
import numpy as np
import pytest

import bayes_mdn as bm


@pytest.fixture(scope="module")
def map_start():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=300,
                                          train_fraction=0.5)
    model = bm.MDN(num_components=3, hidden_sizes=(6,))
    return model, X, y, model.fit(X, y, key=jax.random.key(1), num_steps=300)


@pytest.mark.parametrize("guide", ["normal", "lowrank", "mvn", "flow"])
def test_guide_starts_at_the_map_point(map_start, guide):
    """One step at a negligible learning rate leaves the guide at its start: draws centred
    on the MAP weights (every site: a packing-order slip would misplace whole tensors) with
    spread `init_scale`."""
    model, X, y, start = map_start
    num_draws, init_scale = 400, 0.01
    fit = model.fit(X, y, key=jax.random.key(2), method="svi", guide=guide, init=start,
                    num_steps=1, learning_rate=1e-9, init_scale=init_scale,
                    num_draws=num_draws)
    for name, value in start.draws.items():
        draws = np.asarray(fit.draws[name][0]).reshape(num_draws, -1)
        centre = np.asarray(value[0, 0]).ravel()
        # Mean of 400 draws of sd 0.01: standard error 5e-4, so 3e-3 is a 6-sigma bound.
        np.testing.assert_allclose(draws.mean(axis=0), centre, atol=3e-3, err_msg=name)
        np.testing.assert_allclose(draws.std(axis=0).mean(), init_scale, rtol=0.2,
                                   err_msg=name)
