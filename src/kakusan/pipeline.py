"""High-level tasks shared by the CLI and Python users: sample a model into a folder, describe a checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import KakusanError
from .data import tokens_for_labels
from .diffusion.denoiser import Denoiser
from .diffusion.generate import generate
from .diffusion.samplers import SAMPLERS, steps_for_nfe
from .report import save_grid, save_pngs
from .utils import io
from .zoo import resolve_model


def model_folder(path: str | Path) -> Path:
    """Accept a model folder, a run folder (uses its checkpoint/) or a shipped model name."""
    path = resolve_model(path)
    if not (path / "config.json").exists() and (path / "checkpoint").exists():
        path = path / "checkpoint"
    return io.resolve_folder(path)


def parse_labels(model: Denoiser, labels: str | list | None, n: int) -> torch.Tensor | None:
    """Per-sample labels: None cycles through all classes; names or indices otherwise."""
    names = model.info.get("class_names", [])
    if model.net_config.cond_type == "none":
        if labels is not None:
            raise KakusanError("this model is unconditional; it takes no --label")
        return None
    if labels is None:
        return torch.arange(n) % len(names)
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = []
    for item in items:
        item = str(item).strip()
        if item in names:
            out.append(names.index(item))
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
            out.append(int(item))
        else:
            raise KakusanError(f"unknown class {item!r}; this model knows {names}")
    return torch.tensor(out)[torch.arange(n) % len(out)]


def condition(model: Denoiser, labels: torch.Tensor | None) -> torch.Tensor | None:
    if labels is None:
        return None
    return tokens_for_labels(labels) if model.net_config.cond_type == "tokens" else labels


def _empty_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KakusanError(f"output {out} already exists and is not empty; choose another --out (nothing was touched)")


def sample_to_folder(model: str | Path, out: str | Path, *, n: int = 64, sampler: str = "heun", steps: int | None = None,
                     nfe: int = 35, schedule: str = "auto", eta: float = 0.0, churn: float = 0.0, seed: int = 0,
                     labels=None, ema="auto", batch_size: int = 64, progress: bool = True) -> dict:
    out = Path(out)
    _empty_out(out)
    if sampler not in SAMPLERS:
        raise KakusanError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if n < 1:
        raise KakusanError("--n must be >= 1")
    den = Denoiser.from_pretrained(model_folder(model), ema=ema)
    steps = steps or steps_for_nfe(sampler, nfe)
    y = parse_labels(den, labels, n)
    seeds = list(range(seed, seed + n))
    kwargs = {"eta": eta} if sampler == "ddim" else {"churn": churn} if sampler in ("euler", "heun") else {}
    t0 = time.time()
    images = generate(den, seeds, cond=condition(den, y), sampler=sampler, steps=steps, schedule=schedule,
                      batch_size=batch_size, progress=progress, **kwargs)
    seconds = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{s:06d}" for s in seeds]
    nrow = len(den.info.get("class_names", [])) if labels is None and y is not None else None
    save_grid(images, out / "grid.png", nrow=nrow or None)
    save_pngs(images, out / "images", names)
    arrays = {"images": images.numpy(), "seeds": np.array(seeds)}
    if y is not None:
        arrays["labels"] = y.numpy()
    np.savez_compressed(out / "samples.npz", **arrays)
    return {"out": str(out), "grid": str(out / "grid.png"), "n": n, "sampler": sampler, "steps": steps,
            "nfe": 2 * steps - 1 if sampler == "heun" else steps, "weights": den.info.get("weights"),
            "seconds": round(seconds, 2), "img_s": round(n / seconds, 2)}


def describe(model: str | Path) -> dict:
    folder = model_folder(model)
    if not (folder / "config.json").exists():
        raise KakusanError(f"{model} is not a kakusan model or run folder")
    config = io.read_json(folder / "config.json")
    weights = io.load_tensors(folder / "model.safetensors")
    train_cfg = config.get("train_config", {})
    state = folder / "train_state.json"
    return {
        "folder": str(folder),
        "net": config["net"],
        "process": config["process"],
        "data": config.get("data"),
        "classes": config.get("class_names", []),
        "images_seen": config.get("images_seen"),
        "kimg": (config.get("images_seen") or 0) / 1000,
        "ema_stds": config.get("ema_stds", []),
        "parameters": int(sum(v.numel() for v in weights.values())),
        "size_mb": round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20, 2),
        "resumable": state.exists(),
        "train_config": train_cfg,
    }
