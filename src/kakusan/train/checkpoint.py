"""Resumable training checkpoints: a model folder (config + raw + EMA weights) plus the optimizer state and the
trainer's counters, all safetensors/JSON and swapped in atomically as one folder."""
from __future__ import annotations

from pathlib import Path

import torch

from ..diffusion.denoiser import MODEL_FILE, Denoiser, ema_file
from ..utils import io

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors and a JSON-able remainder."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, model: Denoiser, ema_weights: dict, optimizer: torch.optim.Optimizer,
                    state: dict) -> None:
    staging = io.staging_folder(folder)
    model.write_into(staging, ema_weights)
    tensors, meta = optimizer_tensors(optimizer)
    io.save_tensors(tensors, staging / OPTIMIZER_FILE)
    io.write_json({**state, "optimizer": meta}, staging / STATE_FILE)
    io.swap_folder(staging, folder)


def load_checkpoint(folder: Path, model: Denoiser, ema, optimizer: torch.optim.Optimizer) -> dict:
    """Restore raw weights, every EMA, the optimizer; return the trainer counters."""
    folder = io.resolve_folder(folder)
    model.net.load_state_dict(io.load_tensors(folder / MODEL_FILE))
    ema.load({s: io.load_tensors(folder / ema_file(s)) for s in ema.stds})
    state = io.read_json(folder / STATE_FILE)
    load_optimizer(optimizer, io.load_tensors(folder / OPTIMIZER_FILE), state.pop("optimizer"))
    return state


def has_checkpoint(folder: Path) -> bool:
    folder = io.resolve_folder(folder)
    return (folder / STATE_FILE).is_file()
