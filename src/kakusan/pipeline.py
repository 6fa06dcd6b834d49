"""High-level tasks shared by the CLI and Python users: sample a model into a folder, describe a checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import KakusanError
from .cold import Degradation, generate_cold, restorer
from .data import tokens_for_labels
from .diffusion.denoiser import Denoiser
from .diffusion.generate import generate
from .diffusion.samplers import SAMPLERS, steps_for_nfe
from .guidance import guide_from_spec
from .report import save_grid, save_pngs
from .utils import io
from .zoo import resolve_model


def model_folder(path: str | Path) -> Path:
    """Accept a model folder, a run folder (uses its checkpoint/) or a shipped model name."""
    return io.resolve_folder(resolve_model(path))


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


def sample_to_folder(model: str | Path, out: str | Path, *, n: int = 64, sampler: str = "heun", steps: int | None = None,
                     nfe: int = 35, schedule: str = "auto", eta: float = 0.0, churn: float = 0.0, seed: int = 0,
                     labels=None, ema="auto", batch_size: int = 64, progress: bool = True,
                     guide: str | Path | None = None, guidance: float = 1.0, interval: tuple[float, float] | None = None,
                     guide_ema="auto", symmetry_noise: float = 0.002) -> dict:
    """Sample ``model`` (optionally guided by ``guide``: a model, or ``'uncond'`` for classifier-free guidance)
    into ``out``: grid.png, images/NNNNNN.png and samples.npz. A cold model generates from its degraded prior by
    Algorithm 2 (``symmetry_noise`` added once to x_T)."""
    out = io.require_empty_output(out)
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
    if isinstance(den.process, Degradation):
        if guide is not None:
            raise KakusanError("guidance is not defined for cold (deterministic-degradation) models")
        if y is not None:
            raise KakusanError("sampling a class-conditional cold model is not supported; train it with --cond none")
        cfg = den.net_config
        sampler, steps = "cold-alg2", den.process.steps
        images = generate_cold(restorer(den), den.process, seeds,
                               (cfg.channels, cfg.image_size, cfg.image_size), symmetry_noise=symmetry_noise,
                               batch_size=batch_size, progress=progress)
    else:
        make_denoise = guide_from_spec(den, guide, guidance, interval, guide_ema)
        images = generate(den, seeds, cond=condition(den, y), sampler=sampler, steps=steps, schedule=schedule,
                          batch_size=batch_size, progress=progress, make_denoise=make_denoise, **kwargs)
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
            "guide": str(guide) if guide else None, "guidance": guidance, "interval": interval,
            "nfe": 2 * steps - 1 if sampler == "heun" else steps, "weights": den.info.get("weights"),
            "seconds": round(seconds, 2), "img_s": round(n / seconds, 2)}


def describe(model: str | Path) -> dict:
    folder = model_folder(model)
    if not (folder / "config.json").exists():
        raise KakusanError(f"{model} is not a kakusan model or run folder")
    config = io.read_json(folder / "config.json")
    weights = io.load_tensors(next(folder.glob("*.safetensors")))
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


def evaluate_samples(samples: str | Path, ref: str = "mnist", *, n: int | None = None, feature_net: str = "mnist",
                     weights: str | Path | None = None, seed: int = 0) -> dict:
    """FD, KID, precision/recall (and class accuracy when the samples carry labels) against ``ref`` (a built-in data
    set or an image folder / .npz), with the real-vs-real floor at the same sample count."""
    from .data import load_dataset, load_image_set
    from .metrics import evaluate, load_featurenet
    from .metrics.inception import InceptionFeatures

    if feature_net == "mnist":
        net, channels = load_featurenet(weights), 1
    elif feature_net == "inception":
        net, channels = InceptionFeatures(weights), 3
    else:
        raise KakusanError(f"unknown feature net {feature_net!r}: choose mnist or inception")
    images, labels = load_image_set(samples, channels)
    if ref in ("mnist", "digits"):
        real = load_dataset(ref, image_size=images.shape[-1], channels=channels).images
    else:
        real, _ = load_image_set(ref, channels)
    result = evaluate(net, images, real, labels, n=n, seed=seed)
    return {"samples": str(samples), "ref": str(ref), "feature_net": feature_net, **result}


def sample_report(model: str | Path, out: str | Path, *, n: int = 200, nfe: int = 35, seed: int = 0,
                  ema="auto", progress: bool = True) -> dict:
    """Sample ``n`` class-cycled images, score them with the shipped evaluation network, write report.html."""
    from .report import write_report

    out = Path(out)
    sampled = sample_to_folder(model, out, n=n, nfe=nfe, seed=seed, ema=ema, progress=progress)
    metrics = evaluate_samples(out / "samples.npz", "mnist", n=n, seed=seed)
    details = {"model": str(model), "weights": sampled["weights"], "sampler": f"heun, {sampled['nfe']} NFE",
               "samples": n, "sampling seconds": sampled["seconds"], "seeds": f"{seed}..{seed + n - 1}"}
    report = write_report(out / "report.html", f"kakusan — samples of {Path(str(model)).name}", out / "grid.png",
                          metrics, details)
    return {**sampled, "report": str(report), "metrics": metrics}


def export_model(src: str | Path, dst: str | Path, *, emas: list[float] | None = None, card: dict | None = None) -> Path:
    """Copy a model's config and chosen EMA weights (not the raw weights or optimizer) into a compact, shippable
    folder, with ``card.json`` describing how it was made."""
    import shutil

    from .diffusion.denoiser import CONFIG_FILE, ema_file

    src, dst = model_folder(src), Path(dst)
    if dst.exists():
        raise KakusanError(f"{dst} already exists; remove it first or choose another --out (nothing was touched)")
    config = io.read_json(src / CONFIG_FILE)
    stored = config.get("ema_stds", [])
    emas = stored if emas is None else emas
    missing = [e for e in emas if not any(abs(e - s) < 1e-9 for s in stored)]
    if missing or not emas:
        raise KakusanError(f"{src} has EMA lengths {stored}; cannot export {missing or 'none'}")
    staging = io.staging_folder(dst)
    for e in emas:
        shutil.copyfile(src / ema_file(e), staging / ema_file(e))
    io.write_json({**config, "ema_stds": sorted(emas)}, staging / CONFIG_FILE)
    run = next((p for p in (src.parent, src.parent.parent) if (p / "metrics.jsonl").is_file()), None)
    wall = training_minutes(run / "metrics.jsonl", config.get("images_seen") or 0) if run else None
    io.write_json({**(card or {}), "images_seen": config.get("images_seen"), "train_minutes": wall,
                   "seed": config.get("train_config", {}).get("seed"), "ema_stds": sorted(emas)},
                  staging / "card.json")
    io.swap_folder(staging, dst)
    return dst


def training_minutes(metrics_jsonl: Path, up_to_images: int) -> float | None:
    """Wall-clock training time up to ``up_to_images``, summed over resumed segments (wall_s restarts at resume)."""
    import json

    total, last = 0.0, 0.0
    for line in Path(metrics_jsonl).read_text().splitlines():
        row = json.loads(line)
        if row["kimg"] * 1000 > up_to_images:
            break
        if row["wall_s"] < last:  # a new segment after --resume
            total += last
        last = row["wall_s"]
    return round((total + last) / 60, 1)
