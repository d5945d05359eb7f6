"""The one place tests build Posteriors by hand: known mixtures (closed-form predictive) and
random weights. Import from here (``from _posteriors import exact_posterior``; ``tests/`` is
on the import path through ``tests/conftest.py``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

import bayes_mdn as bm
from bayes_mdn.families import Family, inverse_softplus
from bayes_mdn.scaling import Standardizer


def head_bias_posterior(family: Family | str, biases: Mapping[str, np.ndarray], *,
                        num_components: int, num_features: int = 1, num_outputs: int = 1,
                        y_shift: float | np.ndarray = 0.0, y_scale: float | np.ndarray = 1.0,
                        method: str = "map") -> bm.Posterior:
    """A Posterior whose predictive is a known mixture, the same at every input.

    No hidden layer and zero head kernels: the raw head outputs are the head biases, so
    draw s has the raw outputs ``biases[head][s]``.

    Parameters
    ----------
    family : Family or str
    biases : dict of head name to array, shape (S, width) or (width,)
        Raw head outputs per draw (``logits`` (S, K) included); width = K * d.
    num_components : int
    num_features, num_outputs : int
        P (identity standardisation of X) and D.
    y_shift, y_scale : float or array of shape (D,)
        Standardisation of y: original units are ``y_shift + y_scale * y_std``.
    """
    model = bm.MDN(num_components=num_components, hidden_sizes=(), family=family)
    draws = {}
    for head, bias in biases.items():
        bias = np.asarray(bias, np.float32)
        bias = bias.reshape(-1, bias.shape[-1]) if bias.ndim > 1 else bias[None]
        draws[f"{head}.kernel"] = np.zeros((1, bias.shape[0], num_features, bias.shape[-1]),
                                           np.float32)
        draws[f"{head}.bias"] = bias[None]
    standardizer = Standardizer(np.zeros(num_features), np.ones(num_features),
                                np.broadcast_to(np.asarray(y_shift, float), (num_outputs,)),
                                np.broadcast_to(np.asarray(y_scale, float), (num_outputs,)))
    return bm.Posterior(model=model, method=method, draws=draws, standardizer=standardizer)


def exact_posterior(logits, locs, scales, *, num_features: int = 1,
                    min_scale: float = 1e-3) -> bm.Posterior:
    """A Posterior whose predictive is a known Normal mixture, the same at every input.

    Draw s has mixing logits ``logits[s]``, locations ``locs[s]`` and scales ``scales[s]``
    (each of shape (K,), one output, identity standardisation).
    """
    logits, locs, scales = (np.atleast_2d(np.asarray(a, np.float32)) for a in
                            (logits, locs, scales))
    raw_scale = inverse_softplus(scales - min_scale).astype(np.float32)
    return head_bias_posterior(bm.families.Normal(min_scale=min_scale),
                               {"logits": logits, "loc": locs, "scale": raw_scale},
                               num_components=logits.shape[1], num_features=num_features)


def random_posterior(num_draws: int, num_components: int, *, num_outputs: int = 1,
                     hidden_sizes: tuple[int, ...] = (4,), seed: int = 0,
                     scale_spread: float | None = None) -> bm.Posterior:
    """Random weights (a different mixture per draw and input), two features, and y
    standardised with shift 1.5 and scale 2 (results are checked in original units).

    With `scale_spread`, scales are about ``2 softplus(1 + scale_spread * noise)``: the
    larger it is, the narrower the narrowest components.
    """
    rng = np.random.default_rng(seed)
    model = bm.MDN(num_components=num_components, hidden_sizes=hidden_sizes)
    draws = {site.name: (0.8 * rng.normal(size=(1, num_draws, *site.shape))).astype(np.float32)
             for site in model.sites(2, num_outputs)}
    if scale_spread is not None:
        draws["scale.kernel"] = scale_spread * draws["scale.kernel"]
        draws["scale.bias"] = 0.25 * draws["scale.bias"] + 1.0
    standardizer = Standardizer(np.zeros(2), np.ones(2), np.full(num_outputs, 1.5),
                                np.full(num_outputs, 2.0))
    return bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)


def constant_normal_posterior(loc: float, scale: float, *, num_features: int = 1,
                              num_draws: int = 1, num_outputs: int = 1,
                              spread: float = 0.0) -> bm.Posterior:
    """A fit whose draw s predicts Normal(loc + spread * s, scale) at every input.

    K = 1, no hidden layer, zero kernels, ``min_scale=0`` and identity standardisation;
    method ``"ensemble"`` for S > 1 draws, else ``"map"``.
    """
    model = bm.MDN(num_components=1, hidden_sizes=(), family=bm.families.Normal(min_scale=0.0))
    raw_scale = np.log(np.expm1(scale))  # softplus^-1
    P, D, S = num_features, num_outputs, num_draws
    offsets = spread * np.arange(S)[:, None]
    draws = {"logits.kernel": np.zeros((1, S, P, 1)), "logits.bias": np.zeros((1, S, 1)),
             "loc.kernel": np.zeros((1, S, P, D)),
             "loc.bias": (loc + offsets + np.zeros((S, D)))[None],
             "scale.kernel": np.zeros((1, S, P, D)),
             "scale.bias": np.full((1, S, D), raw_scale)}
    draws = {name: value.astype(np.float32) for name, value in draws.items()}
    identity = Standardizer(np.zeros(P), np.ones(P), np.zeros(D), np.ones(D))
    return bm.Posterior(model=model, method="ensemble" if S > 1 else "map", draws=draws,
                        standardizer=identity)


#: Hidden width of :func:`wide_feature_posterior`'s Flax feature network.
WIDE_FEATURES = 512


@functools.cache
def _wide_features_class() -> type:
    import flax.linen as nn  # flax comes with the test extra; imported only when used

    class WideFeatures(nn.Module):
        """A Flax feature network whose hidden layer (512) is far wider than K x D (2)."""

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.tanh(nn.Dense(WIDE_FEATURES)(x)))

    return WideFeatures


def wide_feature_posterior(num_draws: int) -> bm.Posterior:
    """An SVI-kind posterior of a K = 2 MDN on a 512-wide Flax feature network (random
    draws): the case where counting only K x D would break the memory budget."""
    model = bm.MDN(num_components=2, hidden_sizes=(), network=_wide_features_class()())
    rng = np.random.default_rng(0)
    draws = {name: (0.3 * rng.normal(size=(1, num_draws, *shape))).astype(np.float32)
             for name, shape in model.latent_shapes(1, 1).items()}
    standardizer = Standardizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    return bm.Posterior(model=model, method="svi", draws=draws, standardizer=standardizer)
