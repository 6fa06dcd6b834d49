"""The feature networks of the judge panel besides the shipped classifier (:mod:`.featurenet`).

An FD is only as meaningful as the feature space it is measured in (Kynkäänniemi et al. 2023, "The role of ImageNet
classes in Fréchet Inception Distance": FID can be moved by matching the classifier's class histogram without better
images). So the panel holds networks of different *kinds*, each exposing ``features(x)`` for (N, 1, 32, 32) images in
[-1, 1]:

* :class:`ResNetJudge` — a supervised classifier of another design than FeatureNet (residual blocks, GroupNorm
  instead of BatchNorm, SiLU, strided downsampling instead of max-pooling), trained on another split and seed;
  features: the pooled 96-d vector before its linear head.
* :class:`AutoencoderJudge` — never trained to classify: a convolutional autoencoder trained to reconstruct the
  digits; features: its 64-d bottleneck (what it must keep to redraw a digit, strokes included).
* :class:`RandomConvJudge` — a convolutional network never trained at all (seeded Kaiming weights, shipped so that
  every machine has the same ones): a sanity floor that sees local edge statistics, not digits.
* :class:`PixelJudge` — the pixels themselves, average-pooled to 16×16 (256-d): the crudest floor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x))))))  (pre-activation residual block, He et al. 2016b)."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        conv = lambda: nn.Conv2d(channels, channels, 3, padding=1)  # noqa: E731
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), conv(),
                                  nn.GroupNorm(groups, channels), nn.SiLU(), conv())

    def forward(self, x):
        return x + self.body(x)


class ResNetJudge(nn.Module):
    """32² → 16² → 8² → 4² with a residual block at each size; 96-d pooled features, a linear classifier."""

    num_features = 96

    def __init__(self, num_classes: int = 10, widths=(32, 64, 96)):
        super().__init__()
        layers = [nn.Conv2d(1, widths[0], 3, padding=1), ResidualBlock(widths[0])]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), ResidualBlock(cout)]
        layers += [nn.Conv2d(widths[-1], widths[-1], 3, stride=2, padding=1), ResidualBlock(widths[-1]),
                   nn.GroupNorm(8, widths[-1]), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class AutoencoderJudge(nn.Module):
    """Encoder 32² → 4² (three stride-2 convolutions) → 64-d code; decoder the mirror image back to the pixels."""

    num_features = 64

    def __init__(self, code: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(128 * 16, code))
        self.decoder = nn.Sequential(
            nn.Linear(code, 128 * 16), nn.SiLU(), nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1))  # linear output: a tanh here stalls at the mean image

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class RandomConvJudge(nn.Module):
    """Three stride-2 ReLU convolutions with Kaiming-normal weights from ``seed``, pooled to 2×2: 256-d features."""

    num_features = 256

    def __init__(self, seed: int = 0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
                    m.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PixelJudge(nn.Module):
    """The image average-pooled to ``size``² and flattened (no weights)."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.size = size
        self.num_features = size * size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.mean(1, keepdim=True), self.size).flatten(1)
