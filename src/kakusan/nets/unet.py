"""diffusers UNets behind one signature ``F(x, c_noise, cond)``.

* ``cond_type='none'``   — ``UNet2DModel``, unconditional.
* ``cond_type='class'``  — ``UNet2DModel`` with a class-embedding table of ``num_classes + 1`` rows; the last row is the
  *null* label used for label dropout and classifier-free guidance.
* ``cond_type='tokens'`` — ``UNet2DConditionModel``: ``cond`` is a (B, L) sequence of token ids, embedded by a learned
  table and read by cross-attention (id 0 is the null token).

Presets scale one architecture so that "a smaller version of the same model" is one flag (``--preset xs``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from .. import KakusanError

# name -> (block_out_channels, layers_per_block); attention sits at the lowest resolution.
PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "xs": ((16, 32, 32), 1),
    "s": ((32, 64, 64), 2),
    "m": ((64, 128, 128), 2),
    "l": ((64, 128, 256), 2),
}

# --time-conditioning name -> diffusers' resnet_time_scale_shift: how the (time + class) embedding enters each residual
# block — "add": a bias (DDPM); "scale-shift": a per-channel scale and shift after the group norm (ADM's AdaGN;
# Dhariwal & Nichol 2021, sec. 3).
TIME_CONDITIONINGS = {"add": "default", "scale-shift": "scale_shift"}


@dataclass
class NetConfig:
    preset: str = "s"
    image_size: int = 32
    channels: int = 1
    cond_type: str = "none"  # none | class | tokens
    num_classes: int = 0  # class conditioning: number of real classes
    vocab_size: int = 0  # token conditioning: number of token ids (0 = null)
    token_dim: int = 64
    block_out_channels: tuple[int, ...] | None = None  # None: from the preset (stored so a folder is self-describing)
    layers_per_block: int | None = None
    # diffusers' sinusoidal time embedding expects DDPM-like step indices (0..1000); EDM's c_noise = ln(sigma)/4 spans
    # only about [-1.6, 1.1], so it is stretched by this factor (DDPM models, fed step indices, use 1).
    c_noise_scale: float = 250.0
    time_conditioning: str = "add"  # a key of TIME_CONDITIONINGS

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise KakusanError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.cond_type not in ("none", "class", "tokens"):
            raise KakusanError(f"unknown conditioning {self.cond_type!r}; choose none, class or tokens")
        if self.time_conditioning not in TIME_CONDITIONINGS:
            raise KakusanError(f"unknown time conditioning {self.time_conditioning!r}; choose "
                               f"{' or '.join(TIME_CONDITIONINGS)}")
        if self.cond_type == "class" and self.num_classes < 1:
            raise KakusanError("class conditioning needs a data set with labels (num_classes >= 1)")
        channels, layers = PRESETS[self.preset]
        self.block_out_channels = tuple(self.block_out_channels or channels)
        self.layers_per_block = self.layers_per_block or layers
        levels = len(self.block_out_channels)
        if self.image_size % 2 ** (levels - 1):
            raise KakusanError(f"image_size must be divisible by {2 ** (levels - 1)} for preset {self.preset!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class UNetNet(nn.Module):
    """F(x, c_noise, cond) for the three conditioning types."""

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        channels, layers = config.block_out_channels, config.layers_per_block
        common = dict(sample_size=config.image_size, in_channels=config.channels, out_channels=config.channels,
                      block_out_channels=channels, layers_per_block=layers, norm_num_groups=8,
                      resnet_time_scale_shift=TIME_CONDITIONINGS[config.time_conditioning])
        n = len(channels)
        if config.cond_type == "tokens":
            self.token_embedding = nn.Embedding(config.vocab_size, config.token_dim)
            self.unet = UNet2DConditionModel(
                **common, cross_attention_dim=config.token_dim, attention_head_dim=4,
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                mid_block_type="UNetMidBlock2DCrossAttn")
        else:
            self.unet = UNet2DModel(
                **common, attention_head_dim=None,
                down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
                up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
                num_class_embeds=config.num_classes + 1 if config.cond_type == "class" else None)

    def null_cond(self, batch: int, device=None, seq_len: int = 2) -> torch.Tensor | None:
        """The condition that means "no condition" (label dropout, classifier-free guidance): the extra class row,
        or a sequence of null tokens (id 0)."""
        if self.config.cond_type == "class":
            return torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)
        if self.config.cond_type == "tokens":
            return torch.zeros(batch, seq_len, dtype=torch.long, device=device)
        return None

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        t = c_noise * self.config.c_noise_scale
        if cond is None:
            cond = self.null_cond(x.shape[0], x.device)
        if self.config.cond_type == "tokens":
            return self.unet(x, t, encoder_hidden_states=self.token_embedding(cond)).sample
        if self.config.cond_type == "class":
            return self.unet(x, t, class_labels=cond).sample
        return self.unet(x, t).sample


def build_net(config: NetConfig) -> UNetNet:
    return UNetNet(config)
