"""Every sampler, given the exact denoiser of Gaussian and Gaussian-mixture data, reproduces that data's moments."""
import pytest
import torch

from kakusan.diffusion import schedules
from kakusan.diffusion.exact import GaussianMixture
from kakusan.diffusion.process import DDPMProcess
from kakusan.diffusion.samplers import PerSampleNoise, sample_ddim, sample_ddpm, sample_euler, sample_heun

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
    "ddpm": (sample_ddpm, lambda: schedules.spaced_sigmas(DDPM.sigmas, 1000), {}),
}


def run(data: GaussianMixture, case: str) -> torch.Tensor:
    sampler, make_sigmas, kwargs = CASES[case]
    sigmas = make_sigmas()
    g = torch.Generator().manual_seed(0)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)  # noqa: E731
    x = float(sigmas[0]) * noise(torch.empty(N, 2, dtype=torch.float64))
    return sampler(data.denoise, x, sigmas, noise=noise, **kwargs)


@pytest.mark.parametrize("case", list(CASES))
def test_gaussian_moments(case):
    x = run(GAUSS, case)
    assert torch.allclose(x.mean(0), GAUSS.mean, atol=0.03)
    assert torch.allclose(torch.cov(x.T), GAUSS.cov, atol=0.02, rtol=0.08)


@pytest.mark.parametrize("case", list(CASES))
def test_mixture_moments_and_mode_weights(case):
    x = run(MIXTURE, case)
    assert torch.allclose(x.mean(0), MIXTURE.mean, atol=0.03)
    assert torch.allclose(torch.cov(x.T), MIXTURE.cov, atol=0.02, rtol=0.08)
    share = MIXTURE.responsibilities(x).argmax(1).bincount(minlength=2).double() / N
    assert torch.allclose(share, MIXTURE.weights, atol=0.03)


def test_a_wrong_denoiser_fails_the_moment_check():
    """The tolerance above is tight enough to catch a sampler bug such as a missing Heun correction on a bad grid."""
    sigmas = schedules.karras_sigmas(4, 0.002, 80)
    noise = PerSampleNoise(range(N))
    x = float(sigmas[0]) * noise(torch.empty(N, 2, dtype=torch.float64))
    shrunk = lambda x, s: 0.8 * GAUSS.denoise(x, s)  # noqa: E731
    out = sample_heun(shrunk, x, sigmas, noise=noise)
    assert not torch.allclose(torch.cov(out.T), GAUSS.cov, atol=0.02, rtol=0.08)


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
