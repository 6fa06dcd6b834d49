"""Samplers: short functions of ``(denoise, x, sigmas)`` in the sigma view x = x0 + sigma n.

``denoise(x, sigma) -> x0_hat`` is the only model call (condition and guidance are bound into it beforehand), and
``sigmas`` is a decreasing 1-D tensor ending in 0. ``x`` enters as x_T = sigma_0 * n.

* :func:`sample_euler`, :func:`sample_heun` — Karras et al. 2022, Algorithm 2 (Heun's 2nd order with optional churn
  S_churn, S_tmin, S_tmax, S_noise); the ODE is dx/dsigma = (x - D(x; sigma)) / sigma (eq. 3 with sigma(t) = t).
* :func:`sample_ddim` — Song et al. 2021, eq. 12, rewritten for x_VE = x_VP / sqrt(alpha_bar):
  x_next = x0_hat + sqrt(sigma_next^2 - sigma_up^2) eps_hat + sigma_up z,
  sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)   (equal to sigma_t(eta) / sqrt(alpha_bar_{t-1})).
* :func:`invert_ddim` — DDIM inversion (Song et al. 2021, sec. 4.3; Mokady et al. 2023): the same eta = 0 update,
  x_next = x0_hat + sigma_next eps_hat, along an *increasing* grid that starts at a small sigma_0 > 0 where x ~ x0 —
  the Euler step of the ODE run backwards, mapping an image to the noise that DDIM would decode into it.
* :func:`sample_dpmpp_2m` — DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): with lambda = -ln sigma and h = lambda_next
  - lambda, the exact solution of the ODE with D held constant over the step is
  x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) D   (first order: DDIM), and the second-order multistep
  version replaces D by D_i + (D_i - D_{i-1}) / (2 r), r = h_{i-1} / h_i: one network evaluation per step.
* :func:`sample_dpmpp_3m` — DPM-Solver++(3M) (Lu et al. 2022, the third-order multistep update of App. B): with
  r0 = h_{i-1} / h, r1 = h_{i-2} / h and the divided differences D1_0 = (D_i - D_{i-1}) / r0,
  D1_1 = (D_{i-1} - D_{i-2}) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1):
  x_next = (sigma_next / sigma) x + (1 - e^-h) D_i - ((1 - e^-h) / h - 1) D1 - ((e^-h - 1 + h) / h^2 - 1/2) D2;
  lower orders while the history is short, and the step to sigma = 0 is D_i (the limit h -> inf).
* :func:`sample_ddpm` — DDPM ancestral sampling (Ho et al. 2020, Algorithm 2 with sigma_t^2 = beta_tilde_t), which is
  DDIM with eta = 1 on the full discrete schedule.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor, float], None]


def _steps(sigmas: torch.Tensor, progress: bool, desc: str):
    n = len(sigmas) - 1
    return tqdm(range(n), desc=desc, leave=False, unit="step") if progress else range(n)


def _edm(denoise: Denoise, x, sigmas, second_order: bool, churn: float, s_tmin: float, s_tmax: float,
         s_noise: float, noise: Noise | None, callback: Callback | None, progress: bool):
    noise = noise or torch.randn_like
    n = len(sigmas) - 1
    for i in _steps(sigmas, progress, "heun" if second_order else "euler"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:  # "churn": raise the noise level to sigma_hat by adding fresh noise
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise(x)
        x0_hat = denoise(x, x.new_tensor(sigma_hat))
        d = (x - x0_hat) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if second_order and sigma_next > 0:  # Heun correction with the slope at the end of the step
            d_next = (x_next - denoise(x_next, x.new_tensor(sigma_next))) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        if callback:
            callback(i, x_next, x0_hat, sigma_hat)
        x = x_next
    return x


def sample_euler(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0, noise: Noise | None = None,
                 callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (one network evaluation per step)."""
    return _edm(denoise, x, sigmas, False, churn, s_tmin, s_tmax, s_noise, noise, callback, progress)


def sample_heun(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0, noise: Noise | None = None,
                callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Karras et al. (2022) Algorithm 2: Heun's method, 2N - 1 network evaluations for N steps."""
    return _edm(denoise, x, sigmas, True, churn, s_tmin, s_tmax, s_noise, noise, callback, progress)


def sample_ddim(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 0.0,
                noise: Noise | None = None, callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DDIM (eta = 0: deterministic; eta = 1: ancestral)."""
    noise = noise or torch.randn_like
    for i in _steps(sigmas, progress, "ddim"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoise(x, x.new_tensor(sigma))
        eps_hat = (x - x0_hat) / sigma
        sigma_up = eta * sigma_next * math.sqrt(max(1 - sigma_next**2 / sigma**2, 0.0))
        sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
        x = x0_hat + sigma_down * eps_hat
        if sigma_up > 0:
            x = x + sigma_up * noise(x)
        if callback:
            callback(i, x, x0_hat, sigma)
    return x


def invert_ddim(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
    """DDIM inversion: ``x`` (an image, taken as x at ``sigmas[0]`` > 0) carried up the increasing ``sigmas``."""
    if len(sigmas) < 2 or float(sigmas[0]) <= 0 or bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError("invert_ddim needs an increasing grid that starts above 0")
    for i in _steps(sigmas, progress, "ddim inversion"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoise(x, x.new_tensor(sigma))
        x = x0_hat + sigma_next * (x - x0_hat) / sigma
    return x


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, noise: Noise | None = None,
                    callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M): a good few-step solver (one network evaluation per step)."""
    x0_prev, h_prev = None, None
    for i in _steps(sigmas, progress, "dpm++2m"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoise(x, x.new_tensor(sigma))
        if sigma_next == 0:  # the limit of the update as sigma_next -> 0
            x = x0_hat
        else:
            h = math.log(sigma / sigma_next)
            d = x0_hat if x0_prev is None else x0_hat + (x0_hat - x0_prev) * h / (2 * h_prev)
            x = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * d
            x0_prev, h_prev = x0_hat, h
        if callback:
            callback(i, x, x0_hat, sigma)
    return x


def sample_dpmpp_3m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, noise: Noise | None = None,
                    callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(3M): third-order multistep in lambda = -ln sigma, one network evaluation per step.

    x_next = (sigma_next / sigma) x + (1 - e^-h) D_i - ((1 - e^-h) / h - 1) D1 - ((e^-h - 1 + h) / h^2 - 1/2) D2, with
    D1, D2 the first and second divided differences of D over lambda (module docstring); D2 = 0 with two points of
    history, D1 = D2 = 0 with one (DPM-Solver++(2M), DDIM)."""
    hist: list[tuple[torch.Tensor, float]] = []  # (D, h of the step that followed it), newest last
    for i in _steps(sigmas, progress, "dpm++3m"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoise(x, x.new_tensor(sigma))
        if sigma_next == 0:
            x = x0_hat
        else:
            h = math.log(sigma / sigma_next)
            phi1 = -math.expm1(-h)  # 1 - e^-h
            x = (sigma_next / sigma) * x + phi1 * x0_hat
            if hist:
                r0 = hist[-1][1] / h
                d1_0 = (x0_hat - hist[-1][0]) / r0
                if len(hist) > 1:
                    r1 = hist[-2][1] / h
                    d1_1 = (hist[-1][0] - hist[-2][0]) / r1
                    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    x = x - (phi1 / h - 1) * d1 - ((h - phi1) / h**2 - 0.5) * d2
                else:  # second order, as in DPM-Solver++(2M)
                    x = x + phi1 * d1_0 / 2
            hist = (hist + [(x0_hat, h)])[-2:]
        if callback:
            callback(i, x, x0_hat, sigma)
    return x


def sample_ddpm(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, noise: Noise | None = None,
                callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DDPM ancestral sampling: x_{t-1} ~ q(x_{t-1} | x_t, x0 = x0_hat) (the posterior of the tutorial seed)."""
    return sample_ddim(denoise, x, sigmas, eta=1.0, noise=noise, callback=callback, progress=progress)


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim, "ddpm": sample_ddpm,
            "dpmpp2m": sample_dpmpp_2m, "dpmpp3m": sample_dpmpp_3m}


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Number of steps that spends ``nfe`` network evaluations (Heun: 2N - 1)."""
    from . import schedulers

    if schedulers.is_scheduler(sampler):
        return schedulers.steps_for_nfe(sampler, nfe)
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations of a grid of ``steps`` steps (Heun skips its correction on the last step to sigma = 0;
    a diffusers scheduler's grid has one entry per network call)."""
    return 2 * steps - 1 if sampler == "heun" else steps


class PerSampleNoise:
    """Noise drawn from one generator per sample, so sample i depends only on its own seed (not on the batch)."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        draws = [torch.randn(like.shape[1:], generator=g) for g in self.generators]
        return torch.stack(draws).to(device=like.device, dtype=like.dtype)
