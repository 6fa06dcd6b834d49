"""Model folders as things a user handles: resolve, describe, export a compact copy, convert an older layout."""
from __future__ import annotations

import json
from pathlib import Path

from . import KakusanError
from .diffusion.denoiser import CONFIG_FILE, RAW, SOLVER_FILE, Denoiser, ema_variant
from .diffusion.process import TIME_UNITS
from .guidance.guided import GUIDANCE_FILE
from .utils import io
from .zoo import resolve_model


def model_folder(path: str | Path) -> Path:
    """Accept a model folder, a run folder (uses its checkpoint), a checkpoint or a shipped model name."""
    return io.resolve_folder(resolve_model(path))


def describe(model: str | Path) -> dict:
    """Configuration, images seen, EMA lengths, weight sets, parameters and size of a model (or run) folder."""
    folder, config = Denoiser.read_config(model)
    den = Denoiser.from_pretrained(folder)
    run = folder.parent.parent if folder.parent.name == "checkpoint" else None
    return {
        "folder": str(folder),
        "net": config["net"],
        "process": config["process"],
        "data": config.get("data"),
        "classes": config.get("class_names", []),
        "images_seen": config.get("images_seen"),
        "kimg": (config.get("images_seen") or 0) / 1000,
        "ema_stds": config.get("ema_stds", []),
        "weights": config["weights"],
        "parameters": int(sum(p.numel() for p in den.net.parameters())),
        "size_mb": round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 2),
        "resumable": run is not None and (folder.parent / "train_state.json").is_file(),
        "train_config": config.get("train_config", {}),
        "default_sampling": den.default_sampling(),
        "optimized_grids": {k: sorted(v, key=int) for k, v in den.solver.get("grids", {}).items()},
        "tuned_guidance": io.read_json(folder / GUIDANCE_FILE) if (folder / GUIDANCE_FILE).is_file() else {},
    }


def export_model(src: str | Path, dst: str | Path, *, emas: list[float] | None = None, raw: bool = False,
                 card: dict | None = None) -> Path:
    """A compact, shippable copy of a model: config and the chosen EMA weight sets (``raw``: the raw weights as well,
    or alone with ``emas=[]``; never an optimizer), with ``card.json`` describing how it was made."""
    dst = Path(dst)
    if dst.exists():
        raise KakusanError(f"{dst} already exists; remove it first or choose another output (nothing was touched)")
    folder, config = Denoiser.read_config(src)
    stored = config.get("ema_stds", [])
    emas = stored if emas is None else emas
    missing = [e for e in emas if not any(abs(e - s) < 1e-9 for s in stored)]
    if missing or not (emas or raw):
        raise KakusanError(f"{folder} has EMA lengths {stored}; cannot export {missing or 'none'}")
    if raw and RAW not in config["weights"]["sets"]:
        raise KakusanError(f"{folder} holds no raw weights (it has {', '.join(config['weights']['sets'])})")
    model = Denoiser.from_pretrained(folder)
    default = config["weights"]["default"]
    sets = {ema_variant(e): model.read_weights(folder, ema_variant(e), default) for e in emas}
    if raw:
        sets[RAW] = model.read_weights(folder, RAW, default)
    staging = io.staging_folder(dst)
    model.write_weight_sets(staging, sets)
    run = next((p for p in folder.parents if (p / "metrics.jsonl").is_file()), None)
    wall = training_minutes(run / "metrics.jsonl", config.get("images_seen") or 0) if run else None
    io.write_json({**(card or {}), "images_seen": config.get("images_seen"), "train_minutes": wall,
                   "seed": config.get("train_config", {}).get("seed"),
                   "train_precision": config.get("train_config", {}).get("precision"), "ema_stds": sorted(emas),
                   "raw_weights": raw},
                  staging / "card.json")
    if model.solver:  # optimised grids and default sampling travel with the weights
        io.write_json(model.solver, staging / SOLVER_FILE)
    io.swap_folder(staging, dst)
    return dst


def training_minutes(metrics_jsonl: Path, up_to_images: int) -> float | None:
    """Wall-clock training time up to ``up_to_images``, summed over resumed segments (wall_s restarts at resume)."""
    total, last = 0.0, 0.0
    for line in Path(metrics_jsonl).read_text().splitlines():
        row = json.loads(line)
        if row["kimg"] * 1000 > up_to_images:
            break
        if row["wall_s"] < last:  # a new segment after a resume
            total += last
        last = row["wall_s"]
    return round((total + last) / 60, 1)


# --- kakusan 0.1 model folders (config.json + model.safetensors + ema-<std>.safetensors) ---------------------------
def legacy_config(old: dict) -> dict:
    """The 0.1 config rewritten for 0.2: the net's c_noise scale moves to the process that defines it."""
    net = {k: v for k, v in old["net"].items() if k != "c_noise_scale"}
    scale = old["net"].get("c_noise_scale", 1.0)
    process = dict(old["process"])
    if process["kind"] == "edm":
        process["sigma_min"], process["sigma_max"] = process.pop("sigma_lo"), process.pop("sigma_hi")
        process["c_noise_scale"] = scale
    elif scale != (1.0 if process["kind"] == "ddpm" else TIME_UNITS):  # DDPM step indices; cold t / T in 1000ths
        raise KakusanError(f"cannot convert: a {process['kind']} model with c_noise scale {scale} has no 0.2 form")
    if "prior" in process:
        process["prior_fit"] = process.pop("prior")
    keep = {k: v for k, v in old.items() if k not in ("net", "process", "kakusan_version", "ema_stds", "weights")}
    return {**keep, "net": {"kind": "unet", **net}, "process": process}


def convert_legacy(src: str | Path, dst: str | Path) -> Path:
    """Rewrite a kakusan 0.1 model folder in the 0.2 layout (same weights, same samples) into a new folder ``dst``;
    ``src`` is only read. For a 0.1 run folder pass its ``checkpoint`` (training cannot be resumed across layouts)."""
    src, dst = io.resolve_folder(Path(src)), Path(dst)
    if dst.exists():
        raise KakusanError(f"{dst} already exists; choose a new output folder (nothing was touched)")
    if not (src / CONFIG_FILE).is_file():
        raise KakusanError(f"{src} is not a model folder (no {CONFIG_FILE})")
    old = io.read_json(src / CONFIG_FILE)
    if "weights" in old:
        raise KakusanError(f"{src} is already in the current layout")
    config = legacy_config(old)
    from .diffusion.process import process_from_config
    from .nets import build_net

    model = Denoiser(build_net(config["net"]), process_from_config(config["process"]),
                     {k: v for k, v in config.items() if k not in ("net", "process")})
    # 0.1 weight files hold the net's own keys (unet.*, token_embedding.*), as 0.2 does
    sets = {ema_variant(s): io.load_tensors(src / f"ema-{s:.3f}.safetensors") for s in old.get("ema_stds", [])}
    if (src / "model.safetensors").is_file():
        sets[RAW] = io.load_tensors(src / "model.safetensors")
    for state in sets.values():
        model.net.load_state_dict(state)  # checks every key and shape before anything is written
    staging = io.staging_folder(dst)
    model.write_weight_sets(staging, sets)
    if (src / "card.json").is_file():
        card = io.read_json(src / "card.json")
        io.write_json({**card, "layout": "converted from the kakusan 0.1 layout by `kakusan convert`"},
                      staging / "card.json")
    if model.solver:  # optimised grids and default sampling travel with the weights
        io.write_json(model.solver, staging / SOLVER_FILE)
    io.swap_folder(staging, dst)
    return dst
