"""The preconditioned denoiser D(x; sigma, c) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), c)
(Karras et al. 2022, eq. 7) — the single meeting point of training, sampling and guidance.

A model folder (``save_pretrained`` / ``from_pretrained``) holds ``config.json`` and safetensors weights: the raw
weights ``model.safetensors`` and one ``ema-<std>.safetensors`` per EMA length.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import KakusanError
from ..nets import NetConfig, build_net
from ..utils import io
from .process import ForwardProcess, per_sample, process_from_config

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def ema_file(std: float) -> str:
    return f"ema-{std:.3f}.safetensors"


def preconditioned(process: ForwardProcess, net, x: torch.Tensor, sigma: torch.Tensor, cond=None,
                   autocast: torch.dtype | None = None) -> torch.Tensor:
    """D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c) for a per-sample sigma (B,); ``net`` may be wrapped
    (DDP, compiled) and run under autocast, while the skip connection stays in x's precision."""
    c_skip, c_out, c_in, c_noise = process.precondition(sigma)
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        F = net(per_sample(c_in, x) * x, c_noise, cond)
    return per_sample(c_skip, x) * x + per_sample(c_out, x) * F.to(x.dtype)


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, process: ForwardProcess, info: dict | None = None):
        super().__init__()
        self.net = net
        self.process = process
        self.info = dict(info or {})  # class_names, data set, images seen, EMA lengths, ...

    @classmethod
    def create(cls, net_config: NetConfig, process: ForwardProcess, info: dict | None = None) -> "Denoiser":
        return cls(build_net(net_config), process, info)

    @property
    def net_config(self) -> NetConfig:
        return self.net.config

    def null_cond(self, batch: int, device=None):
        return self.net.null_cond(batch, device)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        return preconditioned(self.process, self.net, x, sigma, cond)

    # --- persistence -------------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        from .. import __version__
        return {"kakusan_version": __version__, "net": self.net_config.to_dict(),
                "process": self.process.to_config(), **self.info}

    def save_pretrained(self, folder: str | Path, ema_weights: dict[float, dict[str, torch.Tensor]] | None = None) -> None:
        """Write config + raw weights (+ EMA weights) into ``folder`` atomically (the folder is swapped in whole)."""
        folder = Path(folder)
        staging = io.staging_folder(folder)
        self.write_into(staging, ema_weights)
        io.swap_folder(staging, folder)

    def write_into(self, folder: Path, ema_weights: dict[float, dict[str, torch.Tensor]] | None = None) -> None:
        config = self.config_dict()
        config["ema_stds"] = sorted(ema_weights) if ema_weights else []
        io.save_tensors(self.net.state_dict(), folder / MODEL_FILE)
        for std, weights in (ema_weights or {}).items():
            io.save_tensors(weights, folder / ema_file(std))
        io.write_json(config, folder / CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path, ema: float | str | None = "auto", device="cpu") -> "Denoiser":
        """Load a model folder. ``ema``: an EMA std (e.g. 0.1), ``'raw'`` for the raw weights, or ``'auto'`` (the
        longest stored EMA, else raw)."""
        from ..zoo import resolve_model

        folder = io.resolve_folder(resolve_model(folder))
        if not (folder / CONFIG_FILE).is_file():
            raise KakusanError(f"{folder} is not a kakusan model folder (no {CONFIG_FILE})")
        config = io.read_json(folder / CONFIG_FILE)
        info = {k: v for k, v in config.items() if k not in ("net", "process", "kakusan_version")}
        model = cls.create(NetConfig(**config["net"]), process_from_config(config["process"]), info)
        stds = config.get("ema_stds", [])
        if ema == "auto":
            ema = max(stds) if stds else "raw"
        if ema == "raw" or ema is None:
            path = folder / MODEL_FILE
        else:
            matches = [s for s in stds if abs(s - float(ema)) < 1e-9]
            if not matches:
                raise KakusanError(f"{folder} has no EMA of length {ema}; stored: {stds or 'none'}")
            path = folder / ema_file(matches[0])
        if not path.is_file():
            raise KakusanError(f"{folder} has no {path.name} (stored EMA lengths: {stds or 'none'})")
        model.net.load_state_dict(io.load_tensors(path))
        model.info["weights"] = path.name
        return model.to(device).eval()
