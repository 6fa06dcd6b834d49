"""Noise schedules as plain tensors.

* DDPM (Ho et al. 2020): beta_t linear from 1e-4 to 0.02; cosine (Nichol & Dhariwal 2021, eq. 17);
  alpha_bar_t = prod_{s<=t} (1 - beta_s).
* The exact map between the DDPM view and the sigma view (Karras et al. 2022, Table 1 "VP"):
  sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)  <=>  alpha_bar_t = 1 / (1 + sigma_t^2),
  with x_VE = x_VP / sqrt(alpha_bar_t).
* Karras sigmas (Karras et al. 2022, eq. 5): sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho.
"""
from __future__ import annotations

import math

import torch

from .. import KakusanError


BETA_SCHEDULES = ("linear", "cosine")


def ddpm_betas(schedule: str, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_1..beta_T in float64."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if schedule == "scaled_linear":  # Stable Diffusion's: linear in sqrt(beta)
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float64) ** 2
    if schedule == "cosine":
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise KakusanError(f"unknown beta schedule {schedule!r} (choose 'linear', 'scaled_linear' or 'cosine')")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    return torch.cumprod(1 - betas, dim=0)


def sigma_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def alpha_bar_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """alpha_bar = 1 / (1 + sigma^2), the inverse of :func:`sigma_from_alpha_bar`."""
    return 1 / (1 + sigma**2)


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``num_steps`` decreasing sigmas of Karras et al. (2022, eq. 5), with a final 0 appended."""
    if num_steps < 1:
        raise KakusanError("the number of sampling steps must be >= 1")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64) if num_steps > 1 else torch.zeros(1, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def spaced_sigmas(discrete_sigmas: torch.Tensor, num_steps: int) -> torch.Tensor:
    """DDIM-style evenly spaced time steps of a discrete schedule (``discrete_sigmas[t]`` for t = 0..T-1),
    from the last step down to the first, with a final 0 appended. ``num_steps == T`` gives the full DDPM chain."""
    T = len(discrete_sigmas)
    if not 1 <= num_steps <= T:
        raise KakusanError(f"the number of steps must be in 1..{T} (the model's discrete steps)")
    t = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long()
    return torch.cat([discrete_sigmas[t].double(), discrete_sigmas.new_zeros(1, dtype=torch.float64)])
