"""From a trained denoiser to images: bind the condition, draw x_T per seed from the process's prior, run a sampler
over the process's grid.

``bind`` is the one place where the network is called during sampling; guidance replaces it by a guided denoiser
with the same ``(x, sigma) -> x0_hat`` signature. The process answers which samplers apply to it, their default grid
and its prior, so the same call generates from a Gaussian model (EDM, DDPM) or a cold one (Algorithm 2).
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .samplers import Denoise, PerSampleNoise


def bind(model: Callable, cond: torch.Tensor | None) -> Denoise:
    """(x, sigma) -> D(x; sigma, cond)."""
    def denoise(x, sigma):
        return model(x, sigma, cond)
    return denoise


@torch.no_grad()
def generate(model, seeds, *, cond: torch.Tensor | None = None, sampler: str | None = None, steps: int = 18,
             schedule: str = "auto", batch_size: int = 64, progress: bool = True,
             make_denoise: Callable | None = None, on_batch: Callable[[int], object] | None = None,
             **sampler_options) -> torch.Tensor:
    """Samples for ``seeds`` (one image per seed; the same seed always gives the same image, whatever the batch), as
    the sampler leaves them (an ODE sampler may end slightly outside [-1, 1]; clamp before saving).

    ``sampler``: a name the process accepts (default: the process's own, Heun for Gaussian processes).
    ``cond``: per-sample condition (class labels (N,), token ids (N, L) or embeddings (N, L, D)), or None.
    ``make_denoise(cond)`` overrides how the condition is bound to the model (guidance plugs in here).
    ``on_batch(k)`` is told after each batch how many images it made (e.g. an outer progress bar's ``update``)."""
    process = model.process
    sampler = sampler or process.default_sampler
    run = process.sampler(sampler, steps, schedule)
    grid = model.sampling_grid(sampler, steps, schedule)
    device = next(model.parameters()).device
    seeds = [int(s) for s in seeds]
    make_denoise = make_denoise or (lambda c: bind(model, c))
    out = []
    batches = range(0, len(seeds), batch_size)
    for start in tqdm(batches, desc="sampling", unit="batch", disable=not progress or len(batches) < 2):
        noise = PerSampleNoise(seeds[start:start + batch_size])
        x = process.prior(noise, model.image_shape, grid, device)
        c = None if cond is None else cond[start:start + batch_size].to(device)
        out.append(run(make_denoise(c), x, grid, noise=noise, progress=progress and len(batches) < 2,
                       **sampler_options).cpu())
        if on_batch is not None:
            on_batch(len(noise))
    return torch.cat(out)
