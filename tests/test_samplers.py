"""Every sampler, given the exact denoiser of Gaussian and Gaussian-mixture data, reproduces that data's moments."""
import math

import pytest
import torch

from kakusan.diffusion import schedules
from kakusan.diffusion.exact import GaussianMixture
from kakusan.diffusion.process import DDPMProcess
from kakusan.diffusion.samplers import (sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_dpmpp_3m, sample_euler,
                                        sample_heun)

N = 4000
GAUSS = GaussianMixture([1.0], [[0.4, -0.3]], [[[0.25, 0.12], [0.12, 0.16]]])
MIXTURE = GaussianMixture([0.3, 0.7], [[-0.6, 0.3], [0.5, -0.2]],
                          [[[0.02, 0.0], [0.0, 0.05]], [[0.04, 0.01], [0.01, 0.02]]])
DDPM = DDPMProcess()

CASES = {
    "heun": (sample_heun, lambda: schedules.karras_sigmas(18, 0.002, 80), {}),
    "heun_churn": (sample_heun, lambda: schedules.karras_sigmas(40, 0.002, 80), {"churn": 20, "s_tmin": 0.05,
                                                                                    "s_tmax": 10}),
    "euler": (sample_euler, lambda: schedules.karras_sigmas(150, 0.002, 80), {}),
    "ddim": (sample_ddim, lambda: schedules.spaced_sigmas(DDPM.sigmas, 100), {}),
    "ddim_eta": (sample_ddim, lambda: schedules.spaced_sigmas(DDPM.sigmas, 250), {"eta": 0.5}),
    "dpmpp2m": (sample_dpmpp_2m, lambda: schedules.karras_sigmas(30, 0.002, 80), {}),
    "dpmpp3m": (sample_dpmpp_3m, lambda: schedules.karras_sigmas(30, 0.002, 80), {}),
    "ddpm": (sample_ddpm, lambda: schedules.spaced_sigmas(DDPM.sigmas, 1000), {}),
}


def run(data: GaussianMixture, case: str, sampler=None) -> torch.Tensor:
    """Sample ``data`` with the exact denoiser, on the grid and options of ``case`` (by default its own sampler)."""
    case_sampler, make_sigmas, kwargs = CASES[case]
    sigmas = make_sigmas()
    g = torch.Generator().manual_seed(0)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)  # noqa: E731
    x = float(sigmas[0]) * noise(torch.empty(N, 2, dtype=torch.float64))
    return (sampler or case_sampler)(data.denoise, x, sigmas, noise=noise, **kwargs)


def moments_match(data: GaussianMixture, x: torch.Tensor) -> bool:
    """The moment check of every sampler test: mean within 0.03, covariance within 0.02 + 8 %."""
    return (torch.allclose(x.mean(0), data.mean, atol=0.03)
            and torch.allclose(torch.cov(x.T), data.cov, atol=0.02, rtol=0.08))


def moments(x: torch.Tensor) -> str:
    return f"mean {x.mean(0).tolist()}, cov {torch.cov(x.T).tolist()}"


@pytest.mark.parametrize("case", list(CASES))
def test_gaussian_moments(case):
    x = run(GAUSS, case)
    assert moments_match(GAUSS, x), moments(x)


@pytest.mark.parametrize("case", list(CASES))
def test_mixture_moments_and_mode_weights(case):
    x = run(MIXTURE, case)
    assert moments_match(MIXTURE, x), moments(x)
    share = MIXTURE.responsibilities(x).argmax(1).bincount(minlength=2).double() / N
    assert torch.allclose(share, MIXTURE.weights, atol=0.03)


# Deliberately broken samplers, each one bug away from the real one, for the test below.

def heun_without_correction(denoise, x, sigmas, *, noise=None):
    """Bug: Heun's second-order correction left out, i.e. Euler steps where Heun is claimed."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = (x - denoise(x, x.new_tensor(sigma))) / sigma
        x = x + (sigma_next - sigma) * d
    return x


def ddim_with_sigma_for_sigma_next(denoise, x, sigmas, *, noise=None):
    """Bug: the coefficient of eps_hat is the current sigma instead of sigma_next (each step returns its input)."""
    for sigma in sigmas[:-1].tolist():
        x0_hat = denoise(x, x.new_tensor(sigma))
        x = x0_hat + sigma * (x - x0_hat) / sigma
    return x


def ddim_with_vp_coefficient(denoise, x, sigmas, *, noise=None):
    """Bug: eps_hat scaled by the VP-space coefficient sqrt(1 - alpha_bar_next) = sigma_next / sqrt(1 + sigma_next^2)
    in the sigma view, where the division by sqrt(alpha_bar_next) makes it sigma_next."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x0_hat = denoise(x, x.new_tensor(sigma))
        x = x0_hat + sigma_next / math.sqrt(1 + sigma_next**2) * (x - x0_hat) / sigma
    return x


def ddim_eta_without_shrinking(denoise, x, sigmas, *, eta, noise):
    """Bug: fresh noise of std sigma_up is added, but eps_hat keeps the coefficient sigma_next instead of
    sqrt(sigma_next^2 - sigma_up^2), so the variance at each level is too large."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x0_hat = denoise(x, x.new_tensor(sigma))
        sigma_up = eta * sigma_next * math.sqrt(max(1 - sigma_next**2 / sigma**2, 0.0))
        x = x0_hat + sigma_next * (x - x0_hat) / sigma + sigma_up * noise(x)
    return x


BROKEN = {  # bug: (the case whose grid and options it runs on, the broken sampler)
    "heun_without_correction": ("heun", heun_without_correction),
    "ddim_with_sigma_for_sigma_next": ("ddim", ddim_with_sigma_for_sigma_next),
    "ddim_with_vp_coefficient": ("ddim", ddim_with_vp_coefficient),
    "ddim_eta_without_shrinking": ("ddim_eta", ddim_eta_without_shrinking),
}


@pytest.mark.parametrize("data", [GAUSS, MIXTURE], ids=["gauss", "mixture"])
@pytest.mark.parametrize("bug", list(BROKEN))
def test_moment_check_rejects_a_broken_sampler_that_the_real_one_passes_on_the_same_grid(bug, data):
    """The tolerance of the moment check is tight enough to catch a *sampler* bug: with the exact denoiser and on the
    same grid, the real sampler passes it and a sampler one bug away from it fails (e.g. Euler where Heun is claimed on
    the 18-step grid, which is too coarse for Euler)."""
    case, broken = BROKEN[bug]
    real = run(data, case)
    assert moments_match(data, real), moments(real)
    wrong = run(data, case, sampler=broken)
    assert not moments_match(data, wrong), moments(wrong)


def test_ddim_matches_diffusers_scheduler():
    """Our sigma-space DDIM equals diffusers' DDIMScheduler step for step (same eps model, VP coordinates)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    sched.set_timesteps(20)
    abar = DDPM.alphas_cumprod
    sigmas_t = DDPM.sigmas
    timesteps = sched.timesteps.tolist()
    sigmas = torch.cat([sigmas_t[timesteps], torch.zeros(1, dtype=torch.float64)])

    def eps_model(x_vp, t):  # exact eps of the Gaussian data, in VP coordinates
        s = sigmas_t[t]
        x_ve = x_vp / abar[t].sqrt()
        return (x_ve - GAUSS.denoise(x_ve, s)) / s

    g = torch.Generator().manual_seed(0)
    x_vp = torch.randn(256, 2, generator=g, dtype=torch.float64)
    ours = sample_ddim(GAUSS.denoise, x_vp / abar[timesteps[0]].sqrt(), sigmas)
    for t in timesteps:
        x_vp = sched.step(eps_model(x_vp, t), t, x_vp).prev_sample
    assert torch.allclose(ours, x_vp, atol=1e-6)


def test_dpmpp_2m_is_second_order_on_the_exact_probability_flow():
    """For Gaussian data N(mu, diag v) the probability-flow ODE maps x(sigma_0) to mu + sqrt(v / (v + sigma_0^2))
    (x(sigma_0) - mu) at sigma = 0. DPM-Solver++(2M)'s error shrinks about 4x per doubling of the steps (order 2),
    Euler's about 2x, and at equal evaluations DPM-Solver++(2M) is the more accurate."""
    var = torch.tensor([0.25, 0.04], dtype=torch.float64)
    data = GaussianMixture([1.0], [[0.3, -0.2]], [torch.diag(var).tolist()])
    x_T = 80 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = data.mean + (var / (var + 80**2)).sqrt() * (x_T - data.mean)
    err = {name: [float((f(data.denoise, x_T, schedules.karras_sigmas(n, 0.002, 80)) - exact).abs().max())
                  for n in (16, 32, 64)] for name, f in (("dpm", sample_dpmpp_2m), ("euler", sample_euler))}
    assert err["dpm"][1] / err["dpm"][2] > 3 and err["dpm"][0] / err["dpm"][1] > 3, err
    assert err["euler"][1] / err["euler"][2] < 2.5, err
    assert all(d < e for d, e in zip(err["dpm"], err["euler"])), err


def test_ddim_is_euler_in_the_sigma_view():
    """DDIM (eta = 0) and Euler's method on the probability-flow ODE are one update, x_next = x0_hat + sigma_next
    eps_hat, so on the same grid they give the same samples (only the grid tells them apart)."""
    sigmas = schedules.karras_sigmas(12, 0.002, 80)
    x = 80 * torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(sample_ddim(MIXTURE.denoise, x, sigmas), sample_euler(MIXTURE.denoise, x, sigmas),
                          atol=1e-10)
