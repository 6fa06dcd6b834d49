"""Per-image restoration metrics on [-1, 1] images, measured in [0, 1] intensity units: RMSE and SSIM
(Wang et al. 2004, torchmetrics' Gaussian-window implementation)."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.double() + 1) / 2).clamp(0, 1)


def rmse(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over images of the per-image root-mean-square error."""
    return float(((_unit(x) - _unit(ref)) ** 2).flatten(1).mean(1).sqrt().mean())


def ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean SSIM (data range 1, 11x11 Gaussian window of std 1.5)."""
    return float(structural_similarity_index_measure(_unit(x), _unit(ref), data_range=1.0))
