"""diffusers schedulers over kakusan denoisers, and kakusan's own multistep solvers checked against them."""
import pytest
import torch

from kakusan import KakusanError
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.process import DDPMProcess, EDMProcess
from kakusan.diffusion.samplers import PerSampleNoise, sample_dpmpp_2m, sample_dpmpp_3m
from kakusan.diffusion.schedulers import make_scheduler, sample_scheduler, scheduler_grid
from kakusan.nets.unet import UNetConfig

from test_samplers import GAUSS, MIXTURE, moments, moments_match

EDM = EDMProcess()


def bridge(process, name, steps, schedule, data, n=4000, **config):
    """Samples of ``data`` from its exact denoiser, driven by a diffusers scheduler through the bridge."""
    grid = process.sampling_grid(name, steps, schedule)
    make = lambda: make_scheduler(process, name, steps, schedule, **config)  # noqa: E731
    x = float(grid[0]) * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sample_scheduler(data.denoise, x, grid, make=make), grid


@pytest.mark.parametrize("name,steps,schedule", [
    ("unipc", 30, "karras"), ("unipc", 30, "auto"), ("diffusers:DPMSolverMultistepScheduler", 30, "exponential"),
    ("diffusers:EulerDiscreteScheduler", 150, "karras"), ("diffusers:HeunDiscreteScheduler", 40, "karras"),
    ("diffusers:DDIMScheduler", 150, "uniform")])
@pytest.mark.parametrize("process", [EDM, DDPMProcess()], ids=["edm", "ddpm"])
def test_diffusers_schedulers_reproduce_the_mixture(process, name, steps, schedule):
    x, grid = bridge(process, name, steps, schedule, MIXTURE)
    assert moments_match(MIXTURE, x.float().double()), moments(x)
    share = MIXTURE.responsibilities(x.double()).argmax(1).bincount(minlength=2).double() / len(x)
    assert torch.allclose(share, MIXTURE.weights, atol=0.03)
    assert grid[-1] == 0 and bool((grid[:-1] > 0).all())


@pytest.mark.parametrize("order,ours", [(2, sample_dpmpp_2m), (3, sample_dpmpp_3m)])
def test_dpmpp_multistep_equals_diffusers_step_for_step(order, ours):
    """kakusan's DPM-Solver++(2M)/(3M) on the scheduler's own grid equals diffusers' DPMSolverMultistepScheduler
    (no lower-order steps before the last) driven by the same exact denoiser, after every step."""
    steps = 8
    config = {"solver_order": order, "lower_order_final": False}
    name = "diffusers:DPMSolverMultistepScheduler"
    grid = EDM.sampling_grid(name, steps, "karras")
    make = lambda: make_scheduler(EDM, name, steps, "karras", **config)  # noqa: E731
    x = float(grid[0]) * torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theirs, mine = [], []
    sample_scheduler(GAUSS.denoise, x, grid, make=make, callback=lambda i, xs, x0, s: theirs.append(xs))
    ours(GAUSS.denoise, x, grid, callback=lambda i, xi, x0, s: mine.append(xi))
    sigmas = grid.tolist()[1:]
    for s, a, b in zip(sigmas, theirs, mine):  # diffusers holds x_VP = x / sqrt(1 + sigma^2)
        assert torch.allclose(a * (1 + s**2) ** 0.5, b, rtol=1e-3, atol=1e-4), s  # diffusers computes in float32


def test_dpmpp_3m_beats_2m_on_the_exact_flow():
    """On Gaussian data, whose probability-flow ODE is solved in closed form, DPM-Solver++(3M) is more accurate than
    (2M) at equal NFE and its error falls faster than second order."""
    var = torch.tensor([0.25, 0.04], dtype=torch.float64)
    from kakusan.diffusion.exact import GaussianMixture
    from kakusan.diffusion import schedules
    data = GaussianMixture([1.0], [[0.3, -0.2]], [torch.diag(var).tolist()])
    x_T = 80 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = data.mean + (var / (var + 80**2)).sqrt() * (x_T - data.mean)
    err = {f.__name__: [float((f(data.denoise, x_T, schedules.karras_sigmas(n, 0.002, 80)) - exact).abs().max())
                        for n in (12, 24)] for f in (sample_dpmpp_2m, sample_dpmpp_3m)}
    assert all(a < b for a, b in zip(err["sample_dpmpp_3m"], err["sample_dpmpp_2m"])), err
    assert err["sample_dpmpp_3m"][0] / err["sample_dpmpp_3m"][1] > 5, err


@pytest.mark.parametrize("cls", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "EulerDiscreteScheduler"])
def test_ddpm_model_with_a_scheduler_equals_the_diffusers_pipeline_loop(cls):
    """A DDPM-process kakusan model sampled through ``generate(sampler='diffusers:<cls>')`` equals the scheduler
    configured with the model's betas driving the raw eps-network, as a diffusers pipeline writes the loop."""
    import diffusers

    torch.manual_seed(0)
    model = Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3),
                            DDPMProcess()).eval()
    seeds, labels, steps = [3, 4, 5], torch.tensor([0, 1, 2]), 6
    ours = generate(model, seeds, cond=labels, sampler=f"diffusers:{cls}", steps=steps, progress=False)

    sched = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                    beta_end=0.02, **({"timestep_spacing": "trailing"}))
    sched.set_timesteps(steps)
    x = PerSampleNoise(seeds)(torch.empty(3, 1, 16, 16)) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            eps = model.net(sched.scale_model_input(x, t), t.float().expand(3), labels)
            x = sched.step(eps, t, x).prev_sample
    assert torch.allclose(ours, x, atol=2e-3), (ours - x).abs().max()


def test_bad_scheduler_names_and_spacings_are_refused():
    with pytest.raises(KakusanError, match="not a diffusers scheduler"):
        EDM.sampler("diffusers:UNet2DModel", 4)
    with pytest.raises(KakusanError, match="not a diffusers scheduler"):
        EDM.sampling_grid("diffusers:NoSuchScheduler", 4)
    with pytest.raises(KakusanError, match="has no karras spacing"):
        EDM.sampling_grid("diffusers:DDIMScheduler", 4, "karras")
    with pytest.raises(KakusanError, match="unknown schedule"):
        EDM.sampling_grid("unipc", 4, "optimised")


def test_grid_of_a_scheduler_counts_its_network_calls():
    heun = scheduler_grid(make_scheduler(EDM, "diffusers:HeunDiscreteScheduler", 5, "karras"))
    assert len(heun) - 1 == 9  # two calls per step but the last
    assert len(scheduler_grid(make_scheduler(EDM, "unipc", 5))) - 1 == 5
