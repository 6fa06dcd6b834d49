"""Several EMAs of the weights at once, with the power-function profile of Karras et al. 2024 (EDM2, Sec. 3.1).

An EMA length is given as the relative standard deviation sigma_rel of its averaging profile (EDM2 eq. 3):
    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)),
and after t images the update is  theta_ema <- beta theta_ema + (1 - beta) theta,  beta = (1 - dt / t)^(gamma + 1)
(EDM2 eq. 2 with per-batch steps of dt images). Keeping several lengths lets guidance choose the EMA after training.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import KakusanError

# A profile t^gamma on [0, 1] has relative std sigma_rel < sqrt(1/12), the std of the uniform profile (gamma -> 0)
MAX_SIGMA_REL = math.sqrt(1 / 12)


def std_to_gamma(sigma_rel: float) -> float:
    """Solve EDM2 eq. 3 for gamma: sigma^2 g^3 + 7 sigma^2 g^2 + (16 sigma^2 - 1) g + (12 sigma^2 - 1) = 0."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise KakusanError(f"EMA length sigma_rel={sigma_rel} must be in (0, {MAX_SIGMA_REL:.4f})")
    s2 = sigma_rel**2
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    real = roots[np.isclose(roots.imag, 0)].real
    return float(real.max())


class PowerEMA:
    """One EMA copy of the parameters per sigma_rel; buffers (if any) are copied, not averaged."""

    def __init__(self, model: nn.Module, stds=(0.05, 0.10)):
        self.stds = sorted(float(s) for s in stds)
        self.gammas = {s: std_to_gamma(s) for s in self.stds}
        self.weights = {s: {k: v.detach().clone() for k, v in model.state_dict().items()} for s in self.stds}

    @torch.no_grad()
    def update(self, model: nn.Module, images_seen: int, batch_images: int) -> None:
        current = model.state_dict()
        floats = [k for k, v in current.items() if v.is_floating_point()]
        for s, w in self.weights.items():
            b = (1 - batch_images / images_seen) ** (self.gammas[s] + 1)
            torch._foreach_lerp_([w[k] for k in floats], [current[k].detach() for k in floats], 1 - b)
            for k, v in current.items():
                if not v.is_floating_point():
                    w[k].copy_(v)

    def state(self) -> dict[float, dict[str, torch.Tensor]]:
        return self.weights

    def load(self, weights: dict[float, dict[str, torch.Tensor]]) -> None:
        missing = set(self.stds) - set(weights)
        if missing:
            raise KakusanError(f"the checkpoint lacks EMA lengths {sorted(missing)}")
        for s in self.stds:
            for k, v in self.weights[s].items():
                v.copy_(weights[s][k])
