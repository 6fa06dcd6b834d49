"""Restoration and generation with a cold degradation D and a restorer R(x_t, t) ~ x0 (Bansal et al. 2022).

* :func:`restore_direct` — the one-shot baseline x0_hat = R(x_T, T).
* :func:`sample_alg1`    — Algorithm 1: x_{s-1} = D(R(x_s, s), s - 1).
* :func:`sample_alg2`    — Algorithm 2: x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s - 1); for D(x, s) ~ x + s e the
  error of R cancels to first order, which is why it works for degradations where Algorithm 1 fails.
* :func:`generate_cold`  — generation from the fully degraded prior: a flat colour drawn from a Gaussian mixture of the
  data's per-image channel means (blur), or the mixed-in source / Gaussian noise (mix, noise), plus an optional small
  noise added once ("broken symmetry"), then Algorithm 2.

A restorer is any callable ``R(x, t)`` with a per-sample t (B,); :func:`restorer` binds a Denoiser and condition.
Each sampler is a short function of (R, x, degradation, t, z) in the style of the core samplers.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from .degradations import Blur, Degradation, Mix

Restorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def restorer(model, cond=None) -> Restorer:
    """R(x, t) from a trained cold Denoiser (the core's D(x; sigma, c) with sigma = t)."""
    return lambda x, t: model(x, t.float(), cond)


def _t(value: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.long)


@torch.no_grad()
def restore_direct(R: Restorer, x: torch.Tensor, degradation: Degradation, t: int, z=None) -> torch.Tensor:
    return R(x, _t(t, x))


def _reverse(R: Restorer, x: torch.Tensor, degradation: Degradation, t: int, z, update, desc: str,
             progress: bool) -> torch.Tensor:
    """s = t..1: x0_hat = R(x_s, s), refresh the nuisance estimate, x_{s-1} = update(x_s, x0_hat, s, z)."""
    for s in tqdm(range(t, 0, -1), desc=desc, leave=False, disable=not progress):
        x0_hat = R(x, _t(s, x))
        z = degradation.estimate_nuisance(x, x0_hat, _t(s, x), z)
        x = update(x, x0_hat, s, z)
    return x


@torch.no_grad()
def sample_alg1(R: Restorer, x: torch.Tensor, degradation: Degradation, t: int, z=None,
                progress: bool = False) -> torch.Tensor:
    """Algorithm 1 from severity t down to 0: x_{s-1} = D(R(x_s, s), s - 1)."""
    D = degradation.apply
    return _reverse(R, x, degradation, t, z, lambda x, x0, s, z: D(x0, _t(s - 1, x), z), "alg1", progress)


@torch.no_grad()
def sample_alg2(R: Restorer, x: torch.Tensor, degradation: Degradation, t: int, z=None,
                progress: bool = False) -> torch.Tensor:
    """Algorithm 2 from severity t down to 0: x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s - 1)."""
    D = degradation.apply
    return _reverse(R, x, degradation, t, z, lambda x, x0, s, z: x - D(x0, _t(s, x), z) + D(x0, _t(s - 1, x), z),
                    "alg2", progress)


RESTORERS = {"direct": restore_direct, "alg1": sample_alg1, "alg2": sample_alg2}


# --- generation from the fully degraded prior --------------------------------------------------------------------
def fit_flat_prior(images: torch.Tensor, components: int = 1, seed: int = 0) -> dict:
    """Gaussian mixture (full covariance, scikit-learn) of the per-image channel means — the distribution of x_T
    under blur-to-mean."""
    from sklearn.mixture import GaussianMixture

    means = images.double().mean(dim=(2, 3)).numpy()
    gmm = GaussianMixture(components, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(means)
    return {"weights": gmm.weights_.tolist(), "means": gmm.means_.tolist(), "covariances": gmm.covariances_.tolist()}


def sample_flat_prior(prior: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, C) channel colours drawn from the stored mixture."""
    w = torch.tensor(prior["weights"], dtype=torch.float64)
    mu = torch.tensor(prior["means"], dtype=torch.float64)
    L = torch.linalg.cholesky(torch.tensor(prior["covariances"], dtype=torch.float64))
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    eps = torch.randn(n, mu.shape[1], generator=generator, dtype=torch.float64)
    return (mu[k] + (L[k] @ eps[:, :, None])[..., 0]).float()


def degraded_prior(degradation: Degradation, n: int, shape: tuple, generator: torch.Generator) -> tuple:
    """x_T and its nuisance z for generation."""
    C, H, W = shape
    if isinstance(degradation, Blur):
        if not (degradation.to_mean and degradation.prior):
            raise KakusanError("generation from blur needs a blur-to-mean model with a fitted prior "
                               "(train with --process blur-generate)")
        colours = sample_flat_prior(degradation.prior, n, generator)
        return colours[:, :, None, None].expand(n, C, H, W).contiguous(), None
    if isinstance(degradation, Mix):
        z = degradation.nuisance(torch.zeros(n, C, H, W), generator)
        return degradation.apply(torch.zeros(n, C, H, W), _t(degradation.steps, z), z), None
    raise KakusanError(f"generation is defined for blur (to mean), mix and noise, not {degradation.kind!r}")


@torch.no_grad()
def generate_cold(R: Restorer, degradation: Degradation, seeds, shape: tuple, *, symmetry_noise: float = 0.002,
                  batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Algorithm 2 from x_T drawn from the degraded prior, + N(0, symmetry_noise^2) once (0: perfect symmetry).
    Sample i depends only on seeds[i]."""
    seeds = list(seeds)
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), desc="generate", disable=not progress):
        xs = []
        for seed in seeds[start:start + batch_size]:
            g = torch.Generator().manual_seed(int(seed))
            x, _ = degraded_prior(degradation, 1, shape, g)
            xs.append(x + symmetry_noise * torch.randn(x.shape, generator=g))
        out.append(sample_alg2(R, torch.cat(xs), degradation, degradation.steps))
    return torch.cat(out).clamp(-1, 1)



def is_generative(degradation: Degradation) -> bool:
    """True if x_T can be drawn without a clean image: blur to a flat mean with a fitted prior, mix, noise."""
    return isinstance(degradation, Mix) or (isinstance(degradation, Blur) and degradation.to_mean
                                            and degradation.prior is not None)


@torch.no_grad()
def cold_preview(model, clean: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Training preview: generated samples for a generative degradation, else Algorithm-2 restorations of ``clean``
    degraded to T."""
    d, R = model.process, restorer(model)
    if is_generative(d):
        return generate_cold(R, d, range(len(clean)), tuple(clean.shape[1:]), progress=False)
    z = d.nuisance(clean, torch.Generator().manual_seed(seed))
    return sample_alg2(R, d.apply(clean, _t(d.steps, clean), z), d, d.steps, z).clamp(-1, 1)
