"""Checkpoints shipped inside the package, each with a card saying the exact command that made it."""
from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A path as given, or the folder of a shipped model when ``name_or_path`` is a zoo name such as ``mnist-s``."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if (ZOO_DIR / str(name_or_path)).is_dir():
        return ZOO_DIR / str(name_or_path)
    from .. import KakusanError
    shipped = ", ".join(available()) or "none yet"
    raise KakusanError(f"no model folder at {name_or_path!r} (shipped models: {shipped})")
