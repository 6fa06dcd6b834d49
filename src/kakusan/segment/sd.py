"""A Stable Diffusion 1.x folder in diffusers' layout, opened offline, as a kakusan denoiser plus a VAE codec.

The folder holds ``unet/`` (``UNet2DConditionModel``, eps-prediction), ``vae/`` (``AutoencoderKL``), optionally
``scheduler/scheduler_config.json`` (its beta schedule; SD 1.x's scaled-linear 0.00085..0.012 otherwise) and optionally
``text_encoder/`` + ``tokenizer/`` (CLIP, needs ``transformers``) for a prompt; without them the condition is
``prompt_embeds.safetensors`` (key ``prompt_embeds``, shape (1, L, D)) if present, else zeros (1, 77, D) — an
"empty prompt" stand-in. Nothing is downloaded: every file is read from the folder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import KakusanError
from ..diffusion.denoiser import Denoiser
from ..diffusion.process import DDPMProcess
from ..nets.unet import UNetConfig, UNetNet
from ..utils import io


class VaeCodec:
    """Images in [-1, 1] <-> latents scaled to unit variance (``scaling_factor`` of the VAE's config)."""

    def __init__(self, vae):
        self.vae = vae.eval()
        self.scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.in_channels

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mean * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scale).sample


def _scheduler(folder: Path) -> DDPMProcess:
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg = io.read_json(cfg_file) if cfg_file.is_file() else {}
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise KakusanError(f"{folder}: only eps-prediction models are supported "
                           f"(prediction_type {cfg['prediction_type']!r})")
    return DDPMProcess(schedule=cfg.get("beta_schedule", "scaled_linear"),
                       num_steps=int(cfg.get("num_train_timesteps", 1000)),
                       beta_start=float(cfg.get("beta_start", 0.00085)), beta_end=float(cfg.get("beta_end", 0.012)))


def prompt_embedding(folder: Path, prompt: str, dim: int) -> torch.Tensor:
    """(1, L, D) text condition: the folder's CLIP text encoder on ``prompt``, else a stored or zero embedding."""
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            raise KakusanError("the folder has a text encoder; reading it needs `pip install transformers`") from None
        tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        enc = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval()
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            return enc(ids)[0]
    if prompt:
        raise KakusanError(f"{folder} has no text_encoder/ and tokenizer/; a prompt cannot be read without them")
    if (folder / "prompt_embeds.safetensors").is_file():
        return io.load_tensors(folder / "prompt_embeds.safetensors")["prompt_embeds"]
    return torch.zeros(1, 77, dim)


def load_sd(path: str | Path, prompt: str = "") -> tuple[Denoiser, VaeCodec, torch.Tensor]:
    """(denoiser over latents, VAE codec, condition (L, D)) of an SD 1.x folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(path)
    missing = [p for p in ("unet", "vae") if not (folder / p / "config.json").is_file()]
    if missing:
        raise KakusanError(f"{folder} is not a Stable Diffusion folder in diffusers' layout "
                           f"(no {' or '.join(m + '/config.json' for m in missing)})")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    c = unet.config
    config = UNetConfig(image_size=c.sample_size, channels=c.in_channels, cond_type="tokens", vocab_size=1,
                        token_dim=c.cross_attention_dim, block_out_channels=tuple(c.block_out_channels),
                        layers_per_block=c.layers_per_block)
    model = Denoiser(UNetNet(config, unet), _scheduler(folder), {"data": f"stable diffusion: {folder}"}).eval()
    return model, VaeCodec(vae), prompt_embedding(folder, prompt, c.cross_attention_dim)[0]
