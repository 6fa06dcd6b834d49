"""``kakusan segment``: image files in, label maps (PNG + .npy) and overlay pictures out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import KakusanError
from ..data import center_square, read_image_file
from ..sampling import sentence
from ..utils import io
from ..utils.images import save_array_png
from .emerdiff import segment_image
from .settings import EmerDiffSettings

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
                    [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]], dtype=np.uint8)


def colour(labels: torch.Tensor) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, one colour per id (the palette repeats after 16)."""
    return PALETTE[labels.cpu().numpy() % len(PALETTE)]


def load_subject(model: str | None, sd: str | None, prompt: str = "", device: str = "cpu", dtype: str = "float32"):
    """(denoiser, codec or None, condition or None, null condition or None, image side, channels) of a kakusan model
    or an SD folder, on ``device`` with weights in ``dtype``."""
    from .sd import DTYPES

    if dtype not in DTYPES:
        raise KakusanError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as e:
        raise KakusanError(f"device {device!r} is not available here ({str(e).splitlines()[0]})") from None
    if (model is None) == (sd is None):
        raise KakusanError("give either --model (a kakusan token-conditioned model) or --sd (a Stable Diffusion folder)")
    if sd is not None:
        from .sd import load_sd

        denoiser, codec, cond, null = load_sd(sd, prompt, device, dtype)
        return denoiser, codec, cond, null, denoiser.net.config.image_size * codec.factor, codec.channels
    from ..diffusion import Denoiser
    from ..models import model_folder

    denoiser = Denoiser.from_pretrained(model_folder(model))
    if denoiser.net.cond_type != "tokens":
        raise KakusanError(f"{model} has no cross-attention (cond_type {denoiser.net.cond_type!r}); EmerDiff needs a "
                           "token-conditioned model (kakusan train --cond tokens)")
    c, side = denoiser.image_shape[0], denoiser.image_shape[-1]
    denoiser.net.to(device, DTYPES[dtype])
    return denoiser.to(device), None, None, None, side, c


def read_image(path: Path, side: int, channels: int) -> torch.Tensor:
    """(C, side, side) in [-1, 1]: shorter side resized to ``side``, centre-cropped."""
    if not path.is_file():
        raise KakusanError(f"no such image: {path}")
    x = torch.from_numpy(read_image_file(path, channels) / 127.5 - 1).float()
    return center_square(x, side).clamp(-1, 1)


def overlay_figure(image: torch.Tensor, result: dict, path: Path, title: str = "") -> None:
    """image | low-resolution k-means | its naive bilinear upsampling | EmerDiff, each panel titled."""
    from ..utils.plots import plt

    img = ((image.permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
    img = img[..., 0] if img.shape[-1] == 1 else img
    panels = [("image", img, None), (f"k-means on queries ({result['kmeans'].shape[0]}x{result['kmeans'].shape[1]})",
                                     colour(result["kmeans"]), None),
              ("naive bilinear upsampling", colour(result["naive"]), img),
              ("EmerDiff (modulated denoising)", colour(result["labels"]), img)]
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), dpi=100)
    for ax, (name, arr, under) in zip(axes, panels):
        if under is not None:
            ax.imshow(under, cmap="gray", interpolation="nearest")
            ax.imshow(arr, alpha=0.55, interpolation="nearest")
        else:
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    io.write_figure(fig, path)
    plt.close(fig)


def segment_files(images: list[str | Path], out: str | Path, *, model: str | None = None, sd: str | None = None,
                  prompt: str = "", tokens: str | None = None, settings: EmerDiffSettings | None = None,
                  precision: str = "auto", device: str = "cpu", dtype: str = "float32", progress: bool = True) -> dict:
    """Segment each image file; writes ``NAME.labels.png`` (colours), ``NAME.labels.npy`` (ids), ``NAME.overlay.png``
    and ``segment.json`` (the settings) into ``out``. The models sit on ``device`` with weights in ``dtype``; the UNet
    runs in ``precision`` (auto: bf16 autocast where the hardware has it)."""
    from tqdm.auto import tqdm

    settings = (settings or EmerDiffSettings()).validate()
    paths = [Path(p) for p in images]
    if not paths:
        raise KakusanError("no images given")
    for p in paths:
        if not p.is_file():
            raise KakusanError(f"no such image: {p}")
    out = io.require_empty_output(out)
    denoiser, codec, cond, null, side, channels = load_subject(model, sd, prompt, device, dtype)
    precision = denoiser.set_precision(precision)
    if tokens is not None:
        cond = sentence(tokens, denoiser)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in tqdm(paths, desc="segment", unit="image", disable=not progress, dynamic_ncols=True):
        image = read_image(p, side, channels)
        result = segment_image(denoiser, image, cond, settings, codec, null)
        save_array_png(colour(result["labels"]), out / f"{p.stem}.labels.png")
        io.write_bytes(_npy(result["labels"].cpu().numpy().astype(np.int16)), out / f"{p.stem}.labels.npy")
        overlay_figure(image, result, out / f"{p.stem}.overlay.png", title=p.name)
        written.append(p.stem)
    summary = {"images": written, "out": str(out), "settings": settings.to_dict(), "precision": precision,
               "device": device, "dtype": dtype, "feature_layer": result["feature_layer"], "mod_layer": result["mod_layer"]}
    io.write_json(summary, out / "segment.json")
    return summary


def _npy(arr: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
