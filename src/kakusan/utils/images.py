"""Images in [-1, 1] to PNG files (grids and individual images), written atomically."""
from __future__ import annotations

import io as _io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .io import write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = arr[i]
    return grid


def _pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _write_png(img: Image.Image, path: Path) -> None:
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes(buf.getvalue(), path)


def save_array_png(arr: np.ndarray, path: str | Path) -> Path:
    """An (H, W) or (H, W, 3) uint8 array as a PNG, written atomically."""
    _write_png(Image.fromarray(arr), Path(path))
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2,
              row_labels: list[str] | None = None, col_labels: list[str] | None = None) -> Path:
    """A grid of images (``nrow`` per row), upscaled ``scale``x with nearest neighbours so small images stay crisp;
    ``row_labels`` / ``col_labels`` name each row in a left margin / each column in a top margin (so the picture reads
    without the docs)."""
    img = _pil(grid_array(images, nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if row_labels:
        img = _label_rows(img.convert("RGB"), row_labels)
    if col_labels:
        img = _label_columns(img.convert("RGB"), col_labels, left=img.width - _grid_width(images, nrow, scale))
    _write_png(img, Path(path))
    return Path(path)


def _grid_width(images: torch.Tensor, nrow: int | None, scale: int) -> int:
    n, w = images.shape[0], images.shape[-1]
    nrow = nrow or math.ceil(math.sqrt(n))
    return (nrow * (w + 2) + 2) * max(scale, 1)


def _label_columns(img: Image.Image, labels: list[str], left: int = 0, size: int = 14) -> Image.Image:
    font = ImageFont.load_default(size)
    out = Image.new("RGB", (img.width, img.height + size + 10), "white")
    out.paste(img, (0, size + 10))
    draw, width = ImageDraw.Draw(out), (img.width - left) / len(labels)
    for i, text in enumerate(labels):
        draw.text((left + (i + 0.5) * width, (size + 10) / 2), text, fill="black", font=font, anchor="mm")
    return out


def _label_rows(img: Image.Image, labels: list[str], size: int = 14) -> Image.Image:
    font = ImageFont.load_default(size)
    draw = ImageDraw.Draw(img)
    margin = 12 + max(int(draw.textlength(text, font=font)) for text in labels)
    out = Image.new("RGB", (img.width + margin, img.height), "white")
    out.paste(img, (margin, 0))
    draw, row_height = ImageDraw.Draw(out), img.height / len(labels)
    for i, text in enumerate(labels):
        draw.text((6, (i + 0.5) * row_height), text, fill="black", font=font, anchor="lm")
    return out


def save_pngs(images: torch.Tensor, folder: str | Path, names: list[str]) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arr, name in zip(to_uint8(images), names):
        _write_png(_pil(arr), folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths
