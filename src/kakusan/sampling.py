"""Sampling a model into a folder: grid.png, images/NNNNNN.png and samples.npz (images in [-1, 1], labels, seeds) —
the task behind ``kakusan sample``, for Gaussian and cold models alike, with optional guidance."""
from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import torch

from . import KakusanError
from .diffusion.denoiser import Denoiser
from .diffusion.generate import generate
from .diffusion.samplers import nfe_of, steps_for_nfe
from .guidance import guide_from_spec
from .models import model_folder
from .utils import io
from .utils.images import save_grid, save_pngs



def parse_labels(model: Denoiser, labels: str | list | None, n: int) -> torch.Tensor | None:
    """Per-sample labels: None cycles through all classes; names or indices otherwise."""
    names = model.info.get("class_names", [])
    if model.cond_type == "none" or not names:
        if labels is not None:
            raise KakusanError("this model is unconditional; it takes no labels")
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


def sentence(words: str, model: Denoiser) -> torch.Tensor:
    """A token model's sentence from class names, e.g. "3 7" -> [<bos>, word(3), word(7)], padded with the null token
    to the length the model was trained with (``info["sentence_length"]``; a label's sentence otherwise)."""
    from .data.datasets import BOS_TOKEN, NULL_TOKEN, TOKENS_PER_LABEL

    if model.cond_type != "tokens":
        raise KakusanError("tokens: this model is not token-conditioned (kakusan train --cond tokens)")
    names = list(model.info.get("class_names") or [])
    ids = [BOS_TOKEN]
    for w in words.split():
        if w not in names:
            raise KakusanError(f"tokens: unknown word {w!r}; the model knows {' '.join(names)}")
        ids.append(names.index(w) + 2)
    length = int(model.info.get("sentence_length", TOKENS_PER_LABEL))
    if len(ids) > length:
        raise KakusanError(f"tokens: {words!r} has {len(ids) - 1} words; the model was trained on at most {length - 1}")
    return torch.tensor(ids + [NULL_TOKEN] * (length - len(ids)))


def parse_sentences(model: Denoiser, sentences: str, n: int) -> torch.Tensor:
    """(n, L) token ids of comma-separated sentences, e.g. "3 7,1 2 5", cycled over the n samples."""
    rows = torch.stack([sentence(s, model) for s in sentences.split(",")])
    return rows[torch.arange(n) % len(rows)]


def check_finite(images: torch.Tensor, model) -> None:
    """Refuse samples with NaN or infinite values before anything is written (damaged weights, a diverged run)."""
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise KakusanError(f"{model}: {bad} of {len(images)} samples hold NaN or infinite values (damaged or diverged "
                           "weights?); nothing was written")


def sampler_options(name: str, run, given: dict) -> dict:
    """The options given (not None) that sampler ``run`` takes, read from its signature; any other is an error."""
    takes = {p.name for p in inspect.signature(run).parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name not in ("noise", "progress", "callback")}
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - takes)
    if unknown:
        raise KakusanError(f"sampler {name!r} takes no {', '.join(unknown)} (it takes: {', '.join(sorted(takes))})")
    return given


def sample_to_folder(model: str | Path, out: str | Path, *, n: int = 64, sampler: str | None = None,
                     steps: int | None = None, nfe: int = 35, schedule: str = "auto", seed: int = 0, labels=None, tokens=None,
                     ema="auto", batch_size: int = 64, progress: bool = True, guide: str | Path | None = None,
                     guidance: float = 1.0, interval: tuple[float, float] | None = None, guide_ema="auto",
                     **options) -> dict:
    """Sample ``model`` (optionally guided by ``guide``: a model, or ``'uncond'`` for classifier-free guidance)
    into ``out``. ``tokens``: comma-separated sentences for a token model (e.g. "3 7,1 2 5"), instead of labels.
    ``options``: sampler options (eta for ddim, churn for euler/heun, symmetry_noise for a cold model's
    alg1/alg2). Images are clamped to [-1, 1] before they are written."""
    out = io.require_empty_output(out)
    if n < 1:
        raise KakusanError("n must be >= 1")
    den = Denoiser.from_pretrained(model_folder(model), ema=ema)
    sampler = sampler or den.process.default_sampler
    options = sampler_options(sampler, den.process.sampler(sampler), options)  # fails before any work
    steps = steps or steps_for_nfe(sampler, nfe)
    if tokens is not None and labels is not None:
        raise KakusanError("give labels or tokens, not both")
    y = parse_labels(den, labels, n) if tokens is None else None
    cond = parse_sentences(den, tokens, n) if tokens is not None else den.cond_from_labels(y)
    seeds = list(range(seed, seed + n))
    make_denoise = guide_from_spec(den, guide, guidance, interval, guide_ema)
    t0 = time.time()
    images = generate(den, seeds, cond=cond, sampler=sampler, steps=steps, schedule=schedule,
                      batch_size=batch_size, progress=progress, make_denoise=make_denoise,
                      **options)
    seconds = time.time() - t0
    check_finite(images, model)
    images = images.clamp(-1, 1)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{s:06d}" for s in seeds]
    nrow = len(den.info.get("class_names", [])) if labels is None and y is not None else None
    save_grid(images, out / "grid.png", nrow=nrow or None)
    save_pngs(images, out / "images", names)
    arrays = {"images": images.numpy(), "seeds": np.array(seeds)}
    if y is not None:
        arrays["labels"] = y.numpy()
    if tokens is not None:
        arrays["tokens"] = cond.numpy()
    np.savez_compressed(out / "samples.npz", **arrays)
    grid_len = len(den.process.sampling_grid(sampler, steps, schedule)) - 1
    return {"out": str(out), "grid": str(out / "grid.png"), "n": n, "sampler": sampler, "steps": grid_len,
            "guide": str(guide) if guide else None, "guidance": guidance, "interval": interval,
            "nfe": nfe_of(sampler, grid_len), "weights": den.info.get("weights"),
            "seconds": round(seconds, 2), "img_s": round(n / seconds, 2)}
