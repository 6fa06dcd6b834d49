"""Forward processes: closed forms against the Markov chain, the DDPM <-> sigma map, preconditioning identities."""
import math

import pytest
import torch

from kakusan.diffusion import schedules
from kakusan.diffusion.process import DDPMProcess, EDMProcess, process_from_config


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_closed_form_q_xt_x0_matches_iterated_markov_chain(schedule):
    """x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) n, iterated, has the moments of N(sqrt(abar_t) x0, (1-abar_t) I)."""
    betas = schedules.ddpm_betas(schedule, 1000)
    abar = schedules.alphas_cumprod(betas)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.7, 0.2], dtype=torch.float64)
    x = x0.expand(20000, 3).clone()
    for t in range(400):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    mean, var = x.mean(0), x.var(0)
    assert torch.allclose(mean, abar[399].sqrt() * x0, atol=0.03)
    assert torch.allclose(var, (1 - abar[399]).expand(3), rtol=0.05)


def test_ddpm_sigma_mapping_round_trips():
    abar = schedules.alphas_cumprod(schedules.ddpm_betas("linear"))
    sigma = schedules.sigma_from_alpha_bar(abar)
    assert torch.allclose(schedules.alpha_bar_from_sigma(sigma), abar, rtol=1e-12)
    assert torch.all(sigma[1:] > sigma[:-1])  # increasing in t
    # x_VP = sqrt(abar) (x0 + sigma n) is exactly sqrt(abar) x0 + sqrt(1 - abar) n
    assert torch.allclose(abar.sqrt() * sigma, (1 - abar).sqrt(), rtol=1e-12)


def test_ddpm_sigma_to_index_inverts_the_discrete_schedule():
    p = DDPMProcess()
    idx = torch.tensor([0, 1, 250, 999])
    assert torch.allclose(p.sigma_to_index(p.sigmas[idx].float()), idx.float(), atol=1e-3)
    mid = (p.sigmas[10].log() + p.sigmas[11].log()) / 2
    assert abs(float(p.sigma_to_index(mid.exp().float().reshape(1))) - 10.5) < 1e-3


def test_ddpm_weighted_loss_equals_l_simple():
    """lambda(sigma) ||D - x0||^2 with D = x - sigma eps_theta is ||eps - eps_theta||^2 (Ho et al. eq. 14)."""
    p = DDPMProcess()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 1, 4, 4, generator=g)
    sigma = p.sample_t(8, g)
    eps = torch.randn(x0.shape, generator=g)
    eps_theta = torch.randn(x0.shape, generator=g)
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    c_skip, c_out, c_in, _ = (v.view(-1, 1, 1, 1) for v in p.precondition(sigma))
    D = c_skip * x + c_out * eps_theta
    lhs = p.loss_weight(sigma).view(-1, 1, 1, 1) * (D - x0) ** 2
    assert torch.allclose(lhs, (eps - eps_theta) ** 2, rtol=1e-3, atol=1e-4)
    # and the network input c_in x is exactly the VP sample sqrt(abar) x0 + sqrt(1 - abar) eps
    abar = schedules.alpha_bar_from_sigma(sigma).view(-1, 1, 1, 1)
    assert torch.allclose(c_in * x, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-5)


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    """Karras et al. eq. 7-8: Var(c_in x) = 1 and the effective target (x0 - c_skip x)/c_out has unit variance."""
    p = EDMProcess()
    g = torch.Generator().manual_seed(2)
    for s in [0.01, 0.5, 3.0, 50.0]:
        x0 = p.sigma_data * torch.randn(200000, generator=g)
        n = torch.randn(200000, generator=g)
        sigma = torch.tensor(s)
        x = x0 + sigma * n
        c_skip, c_out, c_in, _ = (v.reshape(()) for v in p.precondition(sigma.reshape(1)))
        assert abs(float((c_in * x).var()) - 1) < 0.02
        assert abs(float(((x0 - c_skip * x) / c_out).var()) - 1) < 0.02
        assert math.isclose(float(p.loss_weight(sigma) * c_out**2), 1.0, rel_tol=1e-5)


def test_process_config_round_trip():
    for p in [EDMProcess(p_mean=-1.0), DDPMProcess(schedule="cosine")]:
        q = process_from_config(p.to_config())
        assert type(q) is type(p) and q.to_config() == p.to_config()


def test_karras_sigmas_endpoints_and_order():
    s = schedules.karras_sigmas(18, 0.002, 80)
    assert len(s) == 19 and s[-1] == 0
    assert math.isclose(float(s[0]), 80) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-9)
    assert torch.all(s[1:] < s[:-1])
