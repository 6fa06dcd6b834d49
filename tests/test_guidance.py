"""Guidance: w = 1 is the main model, the interval switches guidance off, and exact guided scores are tilted scores."""
import torch

from kakusan.diffusion.exact import GaussianMixture
from kakusan.guidance import make_guided

MAIN = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.2]], [[[0.05, 0], [0, 0.05]]] * 2)
GUIDE = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.2]], [[[0.3, 0.1], [0.1, 0.3]]] * 2)  # a blurrier model


def as_model(mix):
    return lambda x, sigma, cond: mix.denoise(x, sigma)


def test_w_one_returns_the_main_output_exactly():
    x = torch.randn(64, 2, dtype=torch.float64)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    d = make_guided(as_model(MAIN), as_model(GUIDE), 1.0)(None)(x, sigma)
    assert torch.equal(d, MAIN.denoise(x, sigma))


def test_guidance_is_off_outside_the_interval():
    x = torch.randn(64, 2, dtype=torch.float64)
    make = make_guided(as_model(MAIN), as_model(GUIDE), 3.0, interval=(0.2, 1.0))
    den = make(None)
    for s in [0.1, 0.2, 1.5]:  # outside (0.2, 1.0]
        s = torch.tensor(s, dtype=torch.float64)
        assert torch.equal(den(x, s), MAIN.denoise(x, s))
    for s in [0.21, 1.0]:  # inside
        s = torch.tensor(s, dtype=torch.float64)
        assert not torch.allclose(den(x, s), MAIN.denoise(x, s))


def test_exact_guidance_equals_the_tilted_score():
    """score of D_w == grad log [p_main (p_main / p_guide)^(w - 1)], computed by autograd on the exact densities."""
    x = torch.randn(200, 2, dtype=torch.float64, requires_grad=True)
    for w in [1.5, 2.0, 3.0]:
        for sigma in [0.05, 0.4, 2.0]:
            log_tilted = MAIN.log_prob(x, sigma) + (w - 1) * (MAIN.log_prob(x, sigma) - GUIDE.log_prob(x, sigma))
            (grad,) = torch.autograd.grad(log_tilted.sum(), x)
            d_w = make_guided(as_model(MAIN), as_model(GUIDE), w)(None)(x.detach(), torch.tensor(sigma))
            assert torch.allclose((d_w - x.detach()) / sigma**2, grad, rtol=1e-6, atol=1e-6)


def test_cfg_batches_both_halves_into_one_call_and_matches_two_calls():
    from kakusan.diffusion.denoiser import Denoiser
    from kakusan.diffusion.process import EDMProcess
    from kakusan.nets import NetConfig

    torch.manual_seed(0)
    model = Denoiser.create(NetConfig(preset="xs", image_size=16, cond_type="class", num_classes=10), EDMProcess()).eval()
    calls = []
    counted = lambda x, s, c: calls.append(x.shape[0]) or model(x, s, c)  # noqa: E731
    x, cond, sigma = torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3]), torch.tensor(1.3)
    with torch.no_grad():
        batched = make_guided(counted, None, 2.5, null_cond=model.null_cond)(cond)(x, sigma)
        d_main, d_null = model(x, sigma, cond), model(x, sigma, model.null_cond(3))
    assert calls == [6]
    assert torch.allclose(batched, d_null + 2.5 * (d_main - d_null), atol=1e-5)
