"""Resumable training checkpoints, for any objective, swapped in atomically as one folder:

    model/                        the objective's model folder (its raw weights and every EMA)
    <module>.safetensors          the raw weights of each other module (a discriminator, ...)
    optimizer-<name>.safetensors  the tensors of each optimizer
    train_state.json              counters, optimizers' scalar state, the objective's own state

All safetensors / JSON: loading a checkpoint never unpickles anything."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import KakusanError
from ..utils import io

MODEL_FOLDER = "model"
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


def save_checkpoint(folder: Path, objective, ema_weights: dict | None, state: dict, info: dict) -> None:
    staging = io.staging_folder(folder)
    objective.write_model(staging / MODEL_FOLDER, ema_weights, raw=True, info=info)
    for name, module in objective.modules.items():
        if name != MODEL_FOLDER:
            io.save_tensors(module.state_dict(), staging / f"{name}.safetensors")
    optimizers = {}
    for name, optimizer in objective.optimizers.items():
        tensors, optimizers[name] = optimizer_tensors(optimizer)
        io.save_tensors(tensors, staging / f"optimizer-{name}.safetensors")
    io.write_json({**state, "optimizers": optimizers}, staging / STATE_FILE)
    io.swap_folder(staging, folder)


def load_checkpoint(folder: Path, objective, ema) -> dict:
    """Restore every module's raw weights, every EMA and every optimizer; return the loop's counters."""
    folder = io.resolve_folder(folder)
    model_folder = folder / MODEL_FOLDER
    if not model_folder.is_dir():
        raise KakusanError(f"{folder} is a kakusan 0.1 checkpoint, which 0.2 cannot resume; convert its weights for "
                           f"sampling (kakusan convert {folder} NEW_FOLDER) or start a new run")
    objective.model_target().load_state_dict(objective.read_model_weights(model_folder, "raw"))
    if ema is not None:
        ema.load({s: objective.read_model_weights(model_folder, s) for s in ema.stds})
    for name, module in objective.modules.items():
        if name != MODEL_FOLDER:
            module.load_state_dict(io.load_tensors(folder / f"{name}.safetensors"))
    state = io.read_json(folder / STATE_FILE)
    for name, meta in state.pop("optimizers").items():
        load_optimizer(objective.optimizers[name], io.load_tensors(folder / f"optimizer-{name}.safetensors"), meta)
    return state


def has_checkpoint(folder: Path) -> bool:
    return (io.resolve_folder(folder) / STATE_FILE).is_file()
