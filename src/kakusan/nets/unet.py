"""diffusers UNets behind one signature ``F(x, c_noise, cond)``.

* ``cond_type='none'``   — ``UNet2DModel``, unconditional.
* ``cond_type='class'``  — ``UNet2DModel`` with a class-embedding table of ``num_classes + 1`` rows; the last row is the
  *null* label used for label dropout and classifier-free guidance.
* ``cond_type='tokens'`` — ``UNet2DConditionModel`` read by cross-attention. ``cond`` is either a (B, L) sequence of
  token ids, embedded by a learned table (id 0 is the null token), or (B, L, token_dim) token *embeddings* as a text
  encoder produces them, passed to cross-attention as they are.

``c_noise`` arrives in the units of diffusers' sinusoidal time embedding; the forward process chose them
(:meth:`kakusan.diffusion.process.ForwardProcess.precondition`). Presets scale one architecture so that "a smaller
version of the same model" is one flag (``--preset xs``). The UNet itself is stored in diffusers' layout
(``unet/config.json`` + ``diffusion_pytorch_model.safetensors``), so ``UNet2DModel.from_pretrained(folder,
subfolder="unet")`` opens it without kakusan.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from .. import KakusanError
from ..data import TOKENS_PER_LABEL, tokens_for_labels

# name -> (block_out_channels, layers_per_block); attention sits at the lowest resolution.
PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "xs": ((16, 32, 32), 1),
    "s": ((32, 64, 64), 2),
    "m": ((64, 128, 128), 2),
    "l": ((64, 128, 256), 2),
}

# time_conditioning name -> diffusers' resnet_time_scale_shift: how the (time + class) embedding enters each residual
# block — "add": a bias (DDPM); "scale-shift": a per-channel scale and shift after the group norm (ADM's AdaGN;
# Dhariwal & Nichol 2021, sec. 3).
TIME_CONDITIONINGS = {"add": "default", "scale-shift": "scale_shift"}
COND_TYPES = ("none", "class", "tokens")
NORM_GROUPS = 8  # group-norm groups: the narrowest preset has 16 channels, so 8 groups of 2 channels at least


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise KakusanError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def check_time_conditioning(name: str) -> None:
    if name not in TIME_CONDITIONINGS:
        raise KakusanError(f"unknown time conditioning {name!r}; choose {' or '.join(TIME_CONDITIONINGS)}")


@dataclass
class UNetConfig:
    preset: str = "s"
    image_size: int = 32
    channels: int = 1
    cond_type: str = "none"  # none | class | tokens
    num_classes: int = 0  # class conditioning: number of real classes
    vocab_size: int = 0  # token conditioning: number of token ids (0 = null)
    token_dim: int = 64
    block_out_channels: tuple[int, ...] | None = None  # None: from the preset (stored so a folder is self-describing)
    layers_per_block: int | None = None
    time_conditioning: str = "add"  # a key of TIME_CONDITIONINGS
    kind: ClassVar[str] = "unet"

    def __post_init__(self):
        check_preset(self.preset)
        check_time_conditioning(self.time_conditioning)
        if self.cond_type not in COND_TYPES:
            raise KakusanError(f"unknown conditioning {self.cond_type!r}; choose {', '.join(COND_TYPES)}")
        if self.cond_type == "class" and self.num_classes < 1:
            raise KakusanError("class conditioning needs a data set with labels (num_classes >= 1)")
        channels, layers = PRESETS[self.preset]
        self.block_out_channels = tuple(self.block_out_channels or channels)
        self.layers_per_block = self.layers_per_block or layers
        levels = len(self.block_out_channels)
        if self.image_size % 2 ** (levels - 1):
            raise KakusanError(f"image_size must be divisible by {2 ** (levels - 1)} for preset {self.preset!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def diffusers_kwargs(self) -> dict:
        """The full diffusers constructor arguments of this UNet."""
        channels, n = self.block_out_channels, len(self.block_out_channels)
        common = dict(sample_size=self.image_size, in_channels=self.channels, out_channels=self.channels,
                      block_out_channels=channels, layers_per_block=self.layers_per_block,
                      norm_num_groups=NORM_GROUPS,
                      resnet_time_scale_shift=TIME_CONDITIONINGS[self.time_conditioning])
        if self.cond_type == "tokens":
            return dict(**common, cross_attention_dim=self.token_dim, attention_head_dim=4,
                        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                        mid_block_type="UNetMidBlock2DCrossAttn")
        return dict(**common, attention_head_dim=None,
                    down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
                    up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
                    num_class_embeds=self.num_classes + 1 if self.cond_type == "class" else None)


class UNetNet(nn.Module):
    """F(x, c_noise, cond) for the three conditioning types."""

    def __init__(self, config: UNetConfig, unet: nn.Module | None = None):
        super().__init__()
        self.config = config
        if config.cond_type == "tokens":
            self.token_embedding = nn.Embedding(config.vocab_size, config.token_dim)
        self.unet = unet if unet is not None else self.unet_class(config)(**config.diffusers_kwargs())

    @staticmethod
    def unet_class(config: UNetConfig) -> type:
        return UNet2DConditionModel if config.cond_type == "tokens" else UNet2DModel

    @classmethod
    def from_folder(cls, config: UNetConfig, folder: Path) -> "UNetNet":
        """The architecture as stored in the folder's diffusers config (``unet/config.json``)."""
        unet_cls = cls.unet_class(config)
        return cls(config, unet_cls.from_config(unet_cls.load_config(Path(folder) / "unet")))

    # --- what the net says about itself --------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @property
    def cond_type(self) -> str:
        return self.config.cond_type

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def diffusers_parts(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def cond_from_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The network's condition for class labels: the labels, their token sentence, or None."""
        if labels is None or self.cond_type == "none":
            return None
        return tokens_for_labels(labels) if self.cond_type == "tokens" else labels

    def null_cond(self, batch: int, device=None) -> torch.Tensor | None:
        """The condition that means "no condition" (label dropout, classifier-free guidance): the extra class row,
        or a sentence of null tokens (id 0) as long as a label's sentence."""
        if self.cond_type == "class":
            return torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)
        if self.cond_type == "tokens":
            return torch.zeros(batch, TOKENS_PER_LABEL, dtype=torch.long, device=device)
        return None

    def null_like(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """The null condition in the shape of ``cond``: a sequence of null tokens as long as ``cond``, given as ids or
        as the embedding of the null token (what the net was trained with as "no condition")."""
        if cond is None:
            return None
        if self.cond_type != "tokens":
            return self.null_cond(cond.shape[0], cond.device)
        null_ids = torch.zeros(cond.shape[:2], dtype=torch.long, device=cond.device)
        return self.token_embedding(null_ids).to(cond.dtype) if cond.is_floating_point() else null_ids

    # --- evaluation ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            cond = self.null_cond(x.shape[0], x.device)
        dtype = self.unet.dtype  # weights held in half precision (kakusan segment --dtype) take inputs in theirs
        if dtype != torch.float32:
            x = x.to(dtype)
        if self.cond_type == "tokens":
            states = cond if cond.is_floating_point() else self.token_embedding(cond)
            out = self.unet(x, c_noise, encoder_hidden_states=states.to(x.dtype)).sample
        elif self.cond_type == "class":
            out = self.unet(x, c_noise, class_labels=cond).sample
        else:
            out = self.unet(x, c_noise).sample
        return out if dtype == torch.float32 else out.float()

    def feature_modules(self, places: str = "stages") -> dict[str, nn.Module]:
        """Named places whose outputs are features. ``stages``: each down block, the middle block, each up block
        (lowest resolution first); ``blocks``: the middle block and every residual block of every up block (several
        places per decoder scale); ``last``: the last up block alone."""
        up_blocks = self.unet.up_blocks
        if places == "last":
            return {f"up.{len(up_blocks) - 1}": up_blocks[-1]}
        if places == "blocks":
            return {"mid": self.unet.mid_block, **{f"up.{i}.{j}": r for i, block in enumerate(up_blocks)
                                                   for j, r in enumerate(block.resnets)}}
        if places != "stages":
            raise KakusanError(f"unknown feature places {places!r}; choose stages, blocks or last")
        down = {f"down.{i}": block for i, block in enumerate(self.unet.down_blocks)}
        up = {f"up.{i}": block for i, block in enumerate(up_blocks)}
        return {**down, "mid": self.unet.mid_block, **up}

    def encoder_entries(self) -> list[tuple[nn.Module, int]]:
        """(down block, the channels of its input) of every down block but the first (which sees the image through
        ``conv_in``): where an input resized to the block's resolution can enter."""
        widths = self.unet.config.block_out_channels
        return [(block, widths[i - 1]) for i, block in enumerate(self.unet.down_blocks) if i > 0]

    @contextmanager
    def capture(self, names=None, places: str = "stages"):
        """Within the block, every forward call records the outputs of the named places into the yielded dict."""
        found: dict[str, torch.Tensor] = {}
        modules = self.feature_modules(places)
        unknown = set(names or ()) - set(modules)
        if unknown:
            raise KakusanError(f"unknown feature stages {sorted(unknown)}; known: {', '.join(modules)}")

        def hook(name):
            def record(module, inputs, output):
                found[name] = output[0] if isinstance(output, tuple) else output
            return record
        handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if names is None or n in names]
        try:
            yield found
        finally:
            for h in handles:
                h.remove()

    def features(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None,
                 names=None, places: str = "stages") -> dict[str, torch.Tensor]:
        """Activations {place: (B, C, H, W)} of one forward pass (for a discriminator's heads); ``names``: a subset;
        ``places``: see :meth:`feature_modules`."""
        with self.capture(names, places) as found:
            self(x, c_noise, cond)
        return dict(found)
