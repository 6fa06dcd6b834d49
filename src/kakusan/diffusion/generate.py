"""From a trained denoiser to images: choose the sigmas, bind the condition, draw x_T per seed, run a sampler.

``bind`` is the one place where the network is called during sampling; guidance (later) replaces it by a guided
denoiser with the same ``(x, sigma) -> x0_hat`` signature.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from . import schedules
from .process import DDPMProcess
from .samplers import SAMPLERS, Denoise, PerSampleNoise


def make_sigmas(process, sampler: str, steps: int, schedule: str = "auto", rho: float = 7.0) -> torch.Tensor:
    """``auto``: Karras sigmas for euler/heun; for ddim/ddpm the process's own discrete steps when it has them."""
    if schedule == "auto":
        schedule = "uniform" if sampler in ("ddim", "ddpm") and isinstance(process, DDPMProcess) else "karras"
    if schedule == "karras":
        return karras(process, steps, rho)
    if schedule == "uniform":
        if not isinstance(process, DDPMProcess):
            raise ValueError("schedule 'uniform' needs a DDPM process (discrete steps); use 'karras'")
        return schedules.spaced_sigmas(process.sigmas, steps)
    raise ValueError(f"unknown schedule {schedule!r}: choose auto, karras or uniform")


def karras(process, steps: int, rho: float = 7.0) -> torch.Tensor:
    return schedules.karras_sigmas(steps, process.sigma_min, process.sigma_max, rho)


def bind(model: Callable, cond: torch.Tensor | None) -> Denoise:
    """(x, sigma) -> D(x; sigma, cond)."""
    def denoise(x, sigma):
        return model(x, sigma, cond)
    return denoise


@torch.no_grad()
def generate(model, seeds, *, cond: torch.Tensor | None = None, sampler: str = "heun", steps: int = 18,
             schedule: str = "auto", batch_size: int = 64, progress: bool = True,
             make_denoise: Callable | None = None, **sampler_kwargs) -> torch.Tensor:
    """Samples for ``seeds`` (one image per seed; the same seed always gives the same image, whatever the batch).

    ``cond``: per-sample condition (class labels (N,) or token ids (N, L)), or None. ``make_denoise(cond)`` overrides
    how the condition is bound to the model (guidance plugs in here)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    cfg = model.net_config
    device = next(model.parameters()).device
    sigmas = make_sigmas(model.process, sampler, steps, schedule)
    seeds = [int(s) for s in seeds]
    make_denoise = make_denoise or (lambda c: bind(model, c))
    out = []
    batches = range(0, len(seeds), batch_size)
    for start in tqdm(batches, desc="sampling", unit="batch", disable=not progress or len(batches) < 2):
        chunk = seeds[start:start + batch_size]
        noise = PerSampleNoise(chunk)
        x = float(sigmas[0]) * noise(torch.empty(len(chunk), cfg.channels, cfg.image_size, cfg.image_size,
                                                 device=device))
        c = None if cond is None else cond[start:start + batch_size].to(device)
        x = SAMPLERS[sampler](make_denoise(c), x, sigmas, noise=noise, progress=progress and len(batches) < 2,
                              **sampler_kwargs)
        out.append(x.cpu())
    return torch.cat(out)
