"""A Stable Diffusion 1.x folder in diffusers' layout, opened offline, as a kakusan denoiser plus a VAE codec.

The folder holds ``unet/`` (``UNet2DConditionModel``, eps-prediction), ``vae/`` (``AutoencoderKL``), optionally
``scheduler/scheduler_config.json`` (its beta schedule; SD 1.x's scaled-linear 0.00085..0.012 otherwise) and the
condition: ``text_encoder/`` + ``tokenizer/`` (CLIP; ``pip install kakusan[sd]`` brings ``transformers``), whose
output on the prompt is the condition — the "empty prompt" is CLIP(""), as in the paper — or, without them, a stored
``prompt_embeds.safetensors`` (key ``prompt_embeds``, shape (1, L, D)). Weight files of the ``fp16`` variant
(``*.fp16.safetensors``) are loaded where the plain ones are absent. SD 2.x (v-prediction, linear projections, 1024-d
text) and SDXL UNets are refused. Nothing is downloaded: every file is read from the folder.
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
        self.dtype = next(vae.parameters()).dtype
        self.scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.in_channels

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.to(self.dtype)).latent_dist.mean.float() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((latents / self.scale).to(self.dtype)).sample.float()


def _scheduler(folder: Path) -> DDPMProcess:
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg = io.read_json(cfg_file) if cfg_file.is_file() else {}
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise KakusanError(f"{folder}: only eps-prediction models are supported "
                           f"(prediction_type {cfg['prediction_type']!r})")
    return DDPMProcess(schedule=cfg.get("beta_schedule", "scaled_linear"),
                       num_steps=int(cfg.get("num_train_timesteps", 1000)),
                       beta_start=float(cfg.get("beta_start", 0.00085)), beta_end=float(cfg.get("beta_end", 0.012)))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _variant(sub: Path, stem: str) -> str | None:
    """``"fp16"`` where ``sub`` holds only the fp16 variant of its weights."""
    plain = any((sub / f"{stem}{ext}").is_file() for ext in (".safetensors", ".bin"))
    return "fp16" if not plain and (sub / f"{stem}.fp16.safetensors").is_file() else None


def check_unet_config(folder: Path) -> dict:
    """The UNet's config, refusing what is not SD 1.x (before any weight is read)."""
    cfg = io.read_json(folder / "unet" / "config.json")
    if cfg.get("addition_embed_type") or cfg.get("cross_attention_dim") == 2048:
        raise KakusanError(f"{folder}: an SDXL-style UNet (addition_embed_type {cfg.get('addition_embed_type')!r}); "
                           "only Stable Diffusion 1.x folders are supported")
    if cfg.get("use_linear_projection") or cfg.get("cross_attention_dim") == 1024:
        raise KakusanError(f"{folder}: an SD 2.x UNet (linear projections / 1024-d text); only Stable Diffusion 1.x "
                           "folders are supported")
    return cfg


def prompt_embedding(folder: Path, prompts: list[str], dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(prompts), L, D) text conditions: the folder's CLIP text encoder on each prompt ("" is CLIP(""), the empty
    prompt), else — for empty prompts only — a stored ``prompt_embeds.safetensors``."""
    has_encoder, has_tokenizer = (folder / "text_encoder").is_dir(), (folder / "tokenizer").is_dir()
    if has_encoder != has_tokenizer:
        missing = "tokenizer/" if has_encoder else "text_encoder/"
        raise KakusanError(f"{folder} has {'text_encoder/' if has_encoder else 'tokenizer/'} but no {missing}; "
                           "both are needed to read a prompt")
    if has_encoder:
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            raise KakusanError("reading the folder's text encoder needs transformers: "
                               "pip install 'kakusan[sd]'") from None
        tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        enc = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=dtype,
                                            variant=_variant(folder / "text_encoder", "model")).eval()
        if enc.config.hidden_size != dim:
            raise KakusanError(f"{folder}: the text encoder gives {enc.config.hidden_size}-d tokens, the UNet "
                               f"attends to {dim}-d ones")
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            return enc(ids)[0].float()
    if any(prompts):
        raise KakusanError(f"{folder} has no text_encoder/ and tokenizer/; a prompt cannot be read without them")
    if (folder / "prompt_embeds.safetensors").is_file():
        stored = io.load_tensors(folder / "prompt_embeds.safetensors")["prompt_embeds"].float()
        return stored.expand(len(prompts), *stored.shape[1:])
    raise KakusanError(f"{folder} has no text_encoder/ + tokenizer/ (for the empty prompt CLIP(\"\")) and no "
                       "prompt_embeds.safetensors")


def load_sd(path: str | Path, prompt: str = "", device: str = "cpu",
            dtype: str = "float32") -> tuple[Denoiser, VaeCodec, torch.Tensor, torch.Tensor]:
    """(denoiser over latents, VAE codec, condition (L, D) of ``prompt``, the empty prompt's (L, D)) of an SD 1.x
    folder, on ``device`` with weights in ``dtype`` (float32 | bfloat16 | float16)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(path)
    missing = [p for p in ("unet", "vae") if not (folder / p / "config.json").is_file()]
    if missing:
        raise KakusanError(f"{folder} is not a Stable Diffusion folder in diffusers' layout "
                           f"(no {' or '.join(m + '/config.json' for m in missing)})")
    if dtype not in DTYPES:
        raise KakusanError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    c = check_unet_config(folder)
    process = _scheduler(folder)
    cond, null = prompt_embedding(folder, [prompt, ""], c["cross_attention_dim"], DTYPES[dtype])
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True,
                                                torch_dtype=DTYPES[dtype],
                                                variant=_variant(folder / "unet", "diffusion_pytorch_model"))
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True, torch_dtype=DTYPES[dtype],
                                        variant=_variant(folder / "vae", "diffusion_pytorch_model"))
    c = unet.config
    config = UNetConfig(image_size=c.sample_size, channels=c.in_channels, cond_type="tokens", vocab_size=1,
                        token_dim=c.cross_attention_dim, block_out_channels=tuple(c.block_out_channels),
                        layers_per_block=c.layers_per_block)
    model = Denoiser(UNetNet(config, unet), process, {"data": f"stable diffusion: {folder}"}).eval().to(device)
    return model, VaeCodec(vae.to(device)), cond.to(device), null.to(device)


def write_toy_tokenizer(folder: Path) -> int:
    """Write a CLIP tokenizer of single letters into ``folder`` (for random-weight SD folders built by tests and
    benches: the real CLIP vocabulary is a download); returns its vocabulary size."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["<|startoftext|>", "<|endoftext|>", "<unk>"] + [c + e for e in ("", "</w>")
                                                               for c in "abcdefghijklmnopqrstuvwxyz"]
    io.write_json({t: i for i, t in enumerate(vocab)}, folder / "vocab.json")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77).save_pretrained(folder)
    return len(vocab)
