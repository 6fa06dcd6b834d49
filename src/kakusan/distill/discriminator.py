"""The conditional diffusion discriminator of Diffusion2GAN (Kang et al. 2024, sec. 3.3) and its losses.

D(x0, c, z): a copy of the teacher's UNet — encoder *and* decoder, initialised from the teacher's weights — run at one
fixed noise level sigma_d on x0 plus a zero-initialised 1x1-convolution of the noise z (so the pairing of image and z
enters without disturbing the initial network), conditioned on c through the UNet's own conditioning; 1x1-conv
real/fake heads, each averaged over space, summed: on the decoder's last block, on every stage, or (the paper's
multi-scale D) on every residual block of the decoder with the input resized into every encoder block too
(:class:`Discriminator`'s ``scales``).

Losses (non-saturating, Goodfellow et al. 2014), with switches for the paper's ablation:
* discriminator: softplus(-D(x0, c, z)) + softplus(D(G(z, c), c, z)); mix-and-match negatives score the *right image
  with the wrong z or the wrong c* as fake too (0.5 each); R1 (Mescheder et al. 2018) gamma / 2 ||grad_x D(x0)||^2 on
  one real sample, every ``r1_every`` steps and scaled by it (lazy regularisation, Karras et al. 2020);
* generator: softplus(-D(G(z, c), c, z)).

Switches beyond the paper, from later work, each off by default so the ablation can be rerun: D's inputs noised at a
sigma drawn from the teacher's training distribution, the same (sigma, noise) for the real and the fake of a pair
(``sigma`` / ``noise`` arguments; diffusion-GAN style instance noise); a frozen backbone with trainable heads
(``frozen``); mix-and-match on a fraction of the batch; R1 as a step of its own (:func:`r1_penalty`).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import KakusanError
from ..diffusion.denoiser import Denoiser
from ..diffusion.process import per_sample
from .config import SCALES


def zero_conv(a: int, b: int) -> nn.Conv2d:
    """A 1x1 convolution that starts as zero: a branch that joins without disturbing the initial network."""
    conv = nn.Conv2d(a, b, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Discriminator(nn.Module):
    """``scales``: ``one`` — a single real/fake head on the decoder's last block; ``stages`` — a head on every
    encoder, middle and decoder stage; ``paper`` — Diffusion2GAN's multi-scale D: the input, resized to each encoder
    block's resolution, also enters that block (through a zero-initialised 1x1 convolution), and a head reads the
    middle block and every residual block of the decoder (several outputs per scale)."""

    def __init__(self, teacher: Denoiser, *, sigma: float = 0.5, use_z: bool = True, frozen: bool = False,
                 scales: str = "stages"):
        super().__init__()
        if scales not in SCALES:
            raise KakusanError(f"unknown discriminator scales {scales!r}; choose {' | '.join(SCALES)}")
        self.places, pyramid = SCALES[scales]
        if scales != "stages" and not hasattr(teacher.net, "encoder_entries"):
            raise KakusanError(f"--disc-scales {scales} needs a UNet teacher")
        self.net = copy.deepcopy(teacher.net).train().requires_grad_(not frozen)  # frozen: only the branches and
        self.process = teacher.process                                            # the heads learn
        self.sigma, self.use_z = sigma, use_z
        channels = teacher.image_shape[0]
        self.z_in = zero_conv(channels, channels)
        entries = self.net.encoder_entries() if pyramid else []
        self.pyramid = nn.ModuleList(zero_conv(channels, width) for _, width in entries)
        with torch.no_grad():  # the channels of every place, from one probe
            probe = self.stages(torch.zeros(1, *teacher.image_shape), teacher.null_cond(1))
        self.heads = nn.ModuleDict({name.replace(".", "_"): nn.Conv2d(f.shape[1], 1, 1) for name, f in probe.items()})

    @contextmanager
    def resized_input(self, x: torch.Tensor):
        """While open, each encoder block's input gets its 1x1 branch of x resized (area) to its resolution."""
        def hook(conv):
            def add(module, args, kwargs):
                h = kwargs["hidden_states"]
                kwargs["hidden_states"] = h + conv(F.interpolate(x, size=h.shape[-2:], mode="area")).to(h.dtype)
                return args, kwargs
            return add
        blocks = [block for block, _ in self.net.encoder_entries()] if len(self.pyramid) else []
        handles = [b.register_forward_pre_hook(hook(c), with_kwargs=True) for b, c in zip(blocks, self.pyramid)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def stages(self, x0: torch.Tensor, cond, z: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The backbone's features of x0 (+ the z branch) at the fixed sigma_d, or noised to x0 + sigma * noise at a
        per-sample ``sigma`` (B,)."""
        x = x0 + self.z_in(z) if (self.use_z and z is not None) else x0
        if sigma is None:
            sigma = torch.full((x.shape[0],), self.sigma, device=x.device)
        else:
            x = x + per_sample(sigma, x) * noise
        _, _, c_in, c_noise = self.process.precondition(sigma)
        x = per_sample(c_in, x) * x
        with self.resized_input(x):
            return self.net.features(x, c_noise, cond, places=self.places)

    def forward(self, x0: torch.Tensor, cond, z: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logits, shape (B,)."""
        feats = self.stages(x0, cond, z, sigma, noise)
        return sum(self.heads[name.replace(".", "_")](f).mean(dim=(1, 2, 3)) for name, f in feats.items())


def wrong_condition(cond: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Another class for every sample (class labels), else the batch's conditions rolled by one."""
    if num_classes > 1 and cond.dim() == 1:
        shift = torch.randint(1, num_classes, cond.shape, generator=generator).to(cond.device)
        return (cond + shift) % num_classes
    return cond.roll(1, 0)


def discriminator_loss(D: Callable, real: torch.Tensor, fake: torch.Tensor, cond, z: torch.Tensor, *,
                       mix_and_match: float, num_classes: int, generator: torch.Generator,
                       r1_gamma: float = 0.0, r1_every: int = 1, step: int = 0) -> tuple[torch.Tensor, dict]:
    """(loss, parts) of one discriminator step; see the module docstring. ``mix_and_match``: the fraction of the
    batch whose wrong-z and wrong-c negatives are scored (0: none)."""
    parts = {"d_real": F.softplus(-D(real, cond, z)).mean(), "d_fake": F.softplus(D(fake.detach(), cond, z)).mean()}
    k = round(float(mix_and_match) * len(real))
    if k:
        r, c, zk = real[:k], cond[:k], z[:k]
        parts["d_wrong_z"] = 0.5 * F.softplus(D(r, c, z.roll(1, 0)[:k])).mean()
        parts["d_wrong_c"] = 0.5 * F.softplus(D(r, wrong_condition(c, num_classes, generator), zk)).mean()
    if r1_gamma > 0 and step % r1_every == 0:
        parts["r1"] = r1_penalty(D, real, cond, z, r1_gamma) * r1_every
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}


def r1_penalty(D: Callable, real: torch.Tensor, cond, z: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): gamma / 2 ||grad_x D(x0, c, z)||^2 on one real sample."""
    x = real[:1].detach().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative on the CPU
        (grad,) = torch.autograd.grad(D(x, cond[:1], z[:1]).sum(), x, create_graph=True)
    return gamma / 2 * grad.pow(2).sum()


def generator_gan_loss(D: Callable, fake: torch.Tensor, cond, z: torch.Tensor) -> torch.Tensor:
    return F.softplus(-D(fake, cond, z)).mean()


def same_class_indices(labels: torch.Tensor, pool_labels: torch.Tensor, generator: torch.Generator,
                       exclude: torch.Tensor | None = None) -> torch.Tensor:
    """For each sample, a random index into the pool whose label is the sample's; with ``exclude`` (the samples' own
    pool indices) never the sample's own."""
    groups = {int(c): (pool_labels == c).nonzero().flatten() for c in pool_labels.unique()}
    out = torch.empty(len(labels), dtype=torch.long)
    for i, c in enumerate(labels.tolist()):
        group = groups.get(int(c))
        if group is None or len(group) < (2 if exclude is not None else 1):
            raise KakusanError(f"no other real of class {int(c)} to draw from")
        j = group[int(torch.randint(len(group) - (exclude is not None), (1,), generator=generator))]
        out[i] = group[-1] if exclude is not None and j == exclude[i] else j
    return out


def noised(D: Callable, sigma: torch.Tensor | None, noise: torch.Tensor | None, augment: bool,
           generator: torch.Generator) -> Callable:
    """D(x, c, z) for one step: inputs noised with the step's (sigma, noise) of each pair (the same for its real and
    its fake: the first len(x) of them), and augmented with a fresh draw per call."""
    from .perceptual import apply_transform, random_transform

    def run(x, cond, z):
        if augment:
            x = apply_transform(x, random_transform(len(x), generator))
        if sigma is None:
            return D(x, cond, z)
        return D(x, cond, z, sigma[:len(x)].to(x.device), noise[:len(x)].to(x.device))
    return run
