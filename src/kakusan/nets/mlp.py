"""A small MLP F(x, c_noise) on flat vectors, for low-dimensional data such as the 2-D toy of the autoguidance paper
(Karras et al. 2024, Fig. 1): input [c_in x, c_noise] -> 1 + ``layers`` hidden SiLU layers of ``width`` -> output."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .. import KakusanError


@dataclass
class MLPConfig:
    dim: int = 2
    width: int = 64
    layers: int = 4
    kind: ClassVar[str] = "mlp"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


class MLPNet(nn.Module):
    cond_type = "none"
    num_classes = 0

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        dims = [config.dim + 1] + [config.width] * (config.layers + 1)
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*blocks, nn.Linear(config.width, config.dim))

    @classmethod
    def from_folder(cls, config: MLPConfig, folder: Path) -> "MLPNet":
        return cls(config)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (self.config.dim,)

    def diffusers_parts(self) -> dict[str, nn.Module]:
        return {}

    def cond_from_labels(self, labels):
        return None

    def null_cond(self, batch: int, device=None):
        return None

    def null_like(self, cond):
        return None

    def forward(self, x, c_noise, cond=None):
        return self.body(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], dim=1))

    def features(self, x, c_noise, cond=None, names=None, places="stages") -> dict[str, torch.Tensor]:
        if places != "stages":
            raise KakusanError(f"an MLP has only its hidden layers as feature places, not {places!r}")
        h = torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], dim=1)
        out = {}
        for i, layer in enumerate(self.body):
            h = layer(h)
            if isinstance(layer, nn.SiLU):
                out[f"hidden.{i // 2}"] = h
        return out
