"""Restoration and generation with a cold degradation D and a restorer R(x_t, t) ~ x0 (Bansal et al. 2022).

* :func:`restore_direct` — the one-shot baseline x0_hat = R(x_T, T).
* :func:`sample_alg1`    — Algorithm 1: x_{s-1} = D(R(x_s, s), s - 1).
* :func:`sample_alg2`    — Algorithm 2: x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s - 1); for D(x, s) ~ x + s e the
  error of R cancels to first order, which is why it works for degradations where Algorithm 1 fails.
* generation from the fully degraded prior (:func:`generation_sampler`, run by the core's ``generate``): a flat
  colour drawn from a Gaussian mixture of the data's per-image channel means (blur), or the mixed-in source / Gaussian
  noise (mix, noise), plus an optional small noise added once ("broken symmetry"), then Algorithm 2.

A restorer is any callable ``R(x, t)`` with a per-sample t (B,); :func:`restorer` binds a Denoiser and condition.
Each sampler is a short function of (R, x, degradation, t, z) in the style of the core samplers.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from ..diffusion.process import ForwardProcess as Degradation  # any cold degradation (apply, estimate_nuisance)

SYMMETRY_NOISE = 0.002  # std of the noise added once to a flat prior x_T ("broken symmetry", Bansal et al. sec. 5.2)

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


def generation_sampler(degradation: Degradation, name: str):
    """Algorithm ``name`` as a core sampler ``(denoise, x_T, grid, *, noise, progress, symmetry_noise)`` over the
    grid T..0 of :meth:`Degradation.sampling_grid`; ``symmetry_noise`` (std, drawn from ``noise``) is added to x_T
    once (0: perfect symmetry)."""
    algorithms = {"alg1": sample_alg1, "alg2": sample_alg2}
    if name not in algorithms:
        raise KakusanError(f"a cold model samples with {' or '.join(algorithms)}, not {name!r}")

    def run(denoise, x, grid, *, noise=None, progress=False, symmetry_noise: float = SYMMETRY_NOISE):
        if symmetry_noise:
            x = x + symmetry_noise * noise(x)
        return algorithms[name](denoise, x, degradation, int(grid[0]), None, progress).clamp(-1, 1)
    return run
