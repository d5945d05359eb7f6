"""The seed's MDN as a plain PyTorch training loop: the speed baseline of ``speed_seed.py``.

The same computation as ``MDN.fit(method="map")`` in the seed setting, written the way a
PyTorch user would: a tanh MLP (1 -> 15 -> 15), three linear heads (mixture logits,
component locations, component scales through softplus + 1e-3), the Normal-mixture negative
log-likelihood through logsumexp, plus the Gaussian log-prior of every weight tensor (fan-in
Normal on kernels, Normal(0, 1) on biases) so that the objective is the negative log joint,
as for MAP. Full batch, float32, Adam (lr 0.01), eager mode, on the CPU with as many threads
as XLA uses. Only this module imports torch; nothing in bayes_mdn does.
"""

from __future__ import annotations

import math
import os

import numpy as np

try:
    import torch
except ImportError:  # the benchmark reports the torch rows as skipped
    torch = None

K, HIDDEN = 20, (15, 15)
PRIOR_SCALE, SCALE_HEAD_PRIOR, BIAS_SCALE = 2.0, 0.5, 1.0
MIN_SCALE = 1e-3
LEARNING_RATE = 0.01


def available() -> bool:
    return torch is not None


def num_threads() -> int:
    """The thread count XLA's CPU client uses: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _layer_shapes(num_features: int) -> list[tuple[str, int, int, float]]:
    """(name, fan_in, width, kernel prior scale) for every dense layer."""
    layers, fan_in = [], num_features
    for i, width in enumerate(HIDDEN):
        layers.append((f"hidden_{i}", fan_in, width, PRIOR_SCALE))
        fan_in = width
    for name in ("logits", "loc", "scale"):
        layers.append((name, fan_in, K, SCALE_HEAD_PRIOR if name == "scale" else PRIOR_SCALE))
    return layers


class TorchMDN:
    """Parameters, negative log joint and an Adam loop for the seed's MDN in PyTorch."""

    def __init__(self, num_features: int = 1, seed: int = 0, threads: int | None = None):
        if torch is None:
            raise ImportError("The PyTorch baseline needs torch, a CPU build: `pip install "
                              "torch --index-url https://download.pytorch.org/whl/cpu`.")
        torch.set_num_threads(threads or num_threads())
        generator = torch.Generator().manual_seed(seed)
        self.layers = _layer_shapes(num_features)
        self.params: dict[str, torch.Tensor] = {}
        for name, fan_in, width, _ in self.layers:
            scale = 1.0 if name.startswith("hidden") else 0.1
            self.params[f"{name}.kernel"] = (scale / math.sqrt(fan_in)) * torch.randn(
                fan_in, width, generator=generator)
            self.params[f"{name}.bias"] = torch.zeros(width)
        self.params["loc.bias"] = torch.linspace(-1.6, 1.6, K)
        for value in self.params.values():
            value.requires_grad_(True)
        self._prior_std = {}
        for name, fan_in, _, kernel_scale in self.layers:
            self._prior_std[f"{name}.kernel"] = kernel_scale / math.sqrt(fan_in)
            self._prior_std[f"{name}.bias"] = BIAS_SCALE

    def negative_log_joint(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.params
        h = X
        for i in range(len(HIDDEN)):
            h = torch.tanh(h @ p[f"hidden_{i}.kernel"] + p[f"hidden_{i}.bias"])
        logits = h @ p["logits.kernel"] + p["logits.bias"]
        loc = h @ p["loc.kernel"] + p["loc.bias"]
        scale = torch.nn.functional.softplus(h @ p["scale.kernel"] + p["scale.bias"]) + MIN_SCALE
        z = (y - loc) / scale  # y (N, 1) broadcasts against (N, K)
        component = -0.5 * z * z - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        log_lik = torch.logsumexp(torch.log_softmax(logits, dim=-1) + component, dim=-1).sum()
        log_prior = sum(
            (-0.5 * (value / self._prior_std[name]).square().sum()
             - value.numel() * (math.log(self._prior_std[name]) + 0.5 * math.log(2 * math.pi)))
            for name, value in p.items()
        )
        return -(log_lik + log_prior)

    def fit(self, X: np.ndarray, y: np.ndarray, num_steps: int) -> np.ndarray:
        """`num_steps` full-batch Adam steps; returns the loss at every step."""
        X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
        optimizer = torch.optim.Adam(list(self.params.values()), lr=LEARNING_RATE)
        losses = torch.empty(num_steps)
        for step in range(num_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = self.negative_log_joint(X_t, y_t)
            loss.backward()
            optimizer.step()
            losses[step] = loss.detach()
        return losses.numpy()
