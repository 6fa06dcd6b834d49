"""Checkpoints shipped inside the package, each with a card saying the exact command that made it."""
from __future__ import annotations

from pathlib import Path

from ..utils.io import resolve_folder

ZOO_DIR = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A model folder from a path (a run folder means its ``checkpoint/model/``, a checkpoint its ``model/``) or a
    shipped model name (``mnist-s``)."""
    path = Path(name_or_path)
    if path.exists():
        checkpoint = resolve_folder(path / "checkpoint")
        for inner in (checkpoint / "model", path / "model", checkpoint):  # the last: a kakusan 0.1 run
            if not (path / "config.json").exists() and (inner / "config.json").exists():
                return inner
        return path
    if (ZOO_DIR / str(name_or_path)).is_dir():
        return ZOO_DIR / str(name_or_path)
    from .. import KakusanError
    shipped = ", ".join(available()) or "none yet"
    raise KakusanError(f"no model folder at {name_or_path!r} (shipped models: {shipped})")
