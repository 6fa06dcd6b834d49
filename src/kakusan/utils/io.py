"""Atomic, pickle-free persistence: safetensors for tensors, JSON for everything else.

A file is written to a temporary name in the same folder, flushed to disk and renamed over the target, so a crash
never leaves a half-written file in place of a good one. A folder (a checkpoint) is written beside its target and
swapped in with two renames; :func:`resolve_folder` recovers the previous folder if a crash fell between them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; this never unpickles anything."""
    return load_file(str(path), device=str(device))


def write_json(obj, path: str | Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
    _atomic_replace(Path(path), write)


def read_json(path: str | Path):
    with open(path) as f:
        return json.load(f)


def write_bytes(data: bytes, path: str | Path) -> None:
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def write_text(text: str, path: str | Path) -> None:
    write_bytes(text.encode(), path)


def require_empty_output(out: str | Path) -> Path:
    """``out`` as a Path, if it is new or an empty folder; otherwise a clear error (and nothing is touched)."""
    from .. import KakusanError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KakusanError(f"output {out} already exists and is not empty; choose another output folder "
                           "(nothing was touched)")
    return out


def resolve_folder(path: str | Path) -> Path:
    """The folder at ``path``, or its previous version if a :func:`swap_folder` was cut between its two renames."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        return old
    return path


def swap_folder(staging: Path, target: Path) -> None:
    """Replace ``target`` by the fully written ``staging`` folder: target -> target.old, staging -> target, rm old."""
    staging, target = Path(staging), Path(target)
    old = target.with_name(target.name + ".old")
    if old.exists() and target.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


def staging_folder(target: Path) -> Path:
    """A fresh, empty folder beside ``target`` to write a new version into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
