"""The ensembled perceptual loss of Diffusion2GAN (Kang et al. 2024, sec. 3.2: E-LPIPS, Kettunen et al. 2019), in pixel
space at MNIST scale, on a feature network of kakusan's own:

    d(x, y) = E_T [ sum_l mean_hw || u(f_l(T x)) - u(f_l(T y)) ||^2 ]  +  lambda_1 mean |x - y|

f_l: the activations of :class:`PerceptualNet` after each of its stages; u: each pixel's channel vector scaled to unit
length (LPIPS, Zhang et al. 2018, eq. 1, without learned channel weights); T: one random *differentiable*
augmentation per call, the same draw for both images (translation, isotropic and anisotropic scale, rotation — E-LPIPS'
geometric group — and cutout, its dropout-like group), so the expectation over calls is an ensemble of metrics that no
single adversarial direction fools. The network is not the evaluation network (other architecture, split and seed:
a loss must not be the judge).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import KakusanError

SHIPPED = Path(__file__).resolve().parent.parent / "zoo" / "perceptual-mnist"
WEIGHTS_FILE = "perceptual.safetensors"
SPLIT_SEED = 1  # the evaluation network is trained on mnist_split(0)


class PerceptualNet(nn.Module):
    """Three stages of (conv 3x3, SiLU) x 2 + 2x2 average pooling, 24 / 48 / 96 channels, and a linear head on the
    global average (for training it as a classifier). Input (N, 1, 32, 32) in [-1, 1]."""

    widths = (24, 48, 96)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        chans = (1, *self.widths)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.SiLU(), nn.Conv2d(b, b, 3, padding=1), nn.SiLU())
            for a, b in zip(chans[:-1], chans[1:]))
        self.head = nn.Linear(self.widths[-1], num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.avg_pool2d(x, 2))
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1].mean(dim=(2, 3)))


def load_perceptual(path: str | Path | None = None) -> PerceptualNet:
    """The shipped perceptual network (or one at ``path``), frozen, in eval mode."""
    from ..metrics.featurenet import load_trained

    return load_trained(PerceptualNet(), Path(path) if path else SHIPPED, WEIGHTS_FILE,
                        "kakusan distill train-perceptual").requires_grad_(False)


def random_transform(n: int, generator: torch.Generator | None, *, translate: float = 0.125, scale: float = 0.2,
                     aniso: float = 0.15, rotate: float = math.radians(15), cutout: float = 0.3) -> dict:
    """One draw of the augmentation for n image pairs: an affine map (translation up to ``translate`` of the width,
    log-uniform isotropic scale within 1 +- ``scale``, anisotropic factor within 1 +- ``aniso``, rotation within
    +- ``rotate``) and a square cutout of side ``cutout`` (in units of the width) at a random place."""
    u = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731  U(-1, 1)
    s = torch.exp(u(n) * math.log1p(scale))
    a = torch.exp(u(n) * math.log1p(aniso))
    angle = u(n) * rotate
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = s * a, s / a
    theta = torch.stack([torch.stack([cos / sx, -sin / sx, u(n) * 2 * translate], 1),
                         torch.stack([sin / sy, cos / sy, u(n) * 2 * translate], 1)], 1)
    return {"theta": theta, "cut_centre": u(n, 2), "cut_half": cutout}


def apply_transform(x: torch.Tensor, t: dict) -> torch.Tensor:
    """The drawn augmentation applied to x (differentiable in x); outside the image and in the cutout: background -1."""
    theta = t["theta"].to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros")
    H, W = x.shape[-2:]
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)[None, :, None]
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)[None, None, :]
    c = t["cut_centre"].to(device=x.device, dtype=x.dtype)
    inside = ((ys - c[:, 1, None, None]).abs() < t["cut_half"]) & ((xs - c[:, 0, None, None]).abs() < t["cut_half"])
    return y * (~inside)[:, None].to(x.dtype) - 1


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True) + eps).sqrt()


class EnsembledPerceptualLoss(nn.Module):
    """Per-sample d(x, y) (shape (B,)). ``augment=False`` gives plain (un-ensembled) normalised-feature distance."""

    def __init__(self, net: PerceptualNet | None = None, *, l1: float = 0.0, augment: bool = True):
        super().__init__()
        self.net = net if net is not None else load_perceptual()
        self.l1, self.augment = l1, augment

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape != y.shape:
            raise KakusanError(f"perceptual loss of images of different shapes {tuple(x.shape)} and {tuple(y.shape)}")
        l1 = self.l1 * (x - y).abs().flatten(1).mean(1) if self.l1 else 0.0
        if self.augment:
            t = random_transform(x.shape[0], generator)  # None: the global generator
            x, y = apply_transform(x, t), apply_transform(y, t)
        both = self.net.features(torch.cat([x, y]))
        d = sum((_unit(fx) - _unit(fy)).pow(2).sum(1).flatten(1).mean(1) for fx, fy in (f.chunk(2) for f in both))
        return d + l1


def train_perceptual(out: str | Path, *, seed: int = SPLIT_SEED, epochs: int = 20, progress: bool = True) -> dict:
    """Train :class:`PerceptualNet` as a digit classifier on ``mnist_split(seed)`` (not the evaluation network's
    split) on the generic loop; write ``perceptual.safetensors`` + card into ``out``."""
    from ..metrics.featurenet import train_classifier

    return train_classifier(PerceptualNet, out, weights_file=WEIGHTS_FILE, seed=seed, epochs=epochs,
                            progress=progress,
                            command=f"kakusan distill train-perceptual --out {out} --seed {seed} --epochs {epochs}")
