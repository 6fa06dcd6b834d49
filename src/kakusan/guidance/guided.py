"""One guidance mechanism in denoiser (x0) space.

    D_w(x; sigma, c) = D_guide(x; sigma, c_g) + w (D_main(x; sigma, c) - D_guide(x; sigma, c_g))

Since the score is (D - x) / sigma^2, this is the score of p_guide (p_main / p_guide)^w (Karras et al. 2024, eq. 1).
* classifier-free guidance (Ho & Salimans 2022): the guide is the main model with the null condition, c_g = null;
* autoguidance (Karras et al. 2024): the guide is a smaller and/or shorter-trained model with the same condition;
* guidance interval (Kynkäänniemi et al. 2024): guidance only for sigma in (sigma_lo, sigma_hi], plain D_main elsewhere.
Every network evaluation of every sampler goes through :func:`make_guided`'s denoiser.
"""
from __future__ import annotations

import math

from typing import Callable

import torch

from .. import KakusanError


def guide_denoisers(d_main: torch.Tensor, d_guide: torch.Tensor, w: float) -> torch.Tensor:
    """D_w = D_guide + w (D_main - D_guide)."""
    return d_guide + w * (d_main - d_guide)


def in_interval(sigma: float, interval: tuple[float, float] | None) -> bool:
    """Is sigma in the half-open guidance interval (lo, hi]? No interval: always."""
    return interval is None or interval[0] < sigma <= interval[1]


def make_guided(main: Callable, guide: Callable | None, w: float, interval: tuple[float, float] | None = None,
                null_cond: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable:
    """``make(cond) -> denoise(x, sigma)`` for :func:`kakusan.diffusion.generation`'s ``make_denoise`` hook.

    ``guide=None`` means classifier-free guidance with ``main`` itself under ``null_cond(cond)``, the null condition
    shaped like ``cond`` (both halves are then evaluated in one batched call); otherwise the guide is called with the
    same condition as the main model."""
    if guide is None and null_cond is None:
        raise KakusanError("classifier-free guidance needs null_cond (the model's 'no condition')")

    def make(cond):
        def denoise(x, sigma):
            if w == 1 or not in_interval(float(sigma), interval):
                return main(x, sigma, cond)
            if guide is None:  # CFG: one call on [x; x] with [c; null]
                null = null_cond(cond) if cond is not None else None
                both = main(torch.cat([x, x]), sigma, torch.cat([cond, null]) if cond is not None else None)
                d_main, d_guide = both.chunk(2)
            else:
                d_main, d_guide = main(x, sigma, cond), guide(x, sigma, cond)
            return guide_denoisers(d_main, d_guide, w)
        return denoise
    return make


def guide_from_spec(main, guide, w: float, interval=None, guide_ema="auto"):
    """The ``make_denoise`` hook for :func:`kakusan.diffusion.generation` from user-level options: None without
    guidance; classifier-free guidance for ``guide='uncond'``; otherwise ``guide`` is a model folder or shipped name
    (autoguidance), which must share the main model's conditioning, image shape and classes."""
    if not math.isfinite(w):
        raise KakusanError(f"the guidance weight must be a finite number (got {w})")
    if guide is None:
        if w != 1:
            raise KakusanError("a guidance weight other than 1 needs a guide (a guide model, or 'uncond' for "
                               "classifier-free guidance)")
        return None
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] < interval[1]):
        raise KakusanError(f"the guidance interval must be (lo, hi) with 0 <= lo < hi (got {interval})")
    if not main.process.score_based:
        raise KakusanError(f"guidance is not defined for a {main.process.kind} model (its denoiser is no score)")
    if str(guide) == "uncond":
        if main.cond_type == "none":
            raise KakusanError("classifier-free guidance needs a conditional model")
        return make_guided(main, None, w, interval, null_cond=main.null_like)
    return make_guided(main, load_guide(main, guide, guide_ema), w, interval)


def load_guide(main, guide, guide_ema="auto"):
    """An autoguidance guide model, checked to share the main model's conditioning, image shape and classes."""
    from ..diffusion.denoiser import Denoiser

    g = Denoiser.from_pretrained(guide, ema=guide_ema)
    g.precision = main.precision  # both networks of a guided step run in one precision
    key = lambda m: (m.cond_type, m.image_shape, m.num_classes)  # noqa: E731
    if key(main) != key(g):
        raise KakusanError(f"guide {guide} does not match the main model: conditioning, image shape, classes "
                           f"{key(g)} vs {key(main)}")
    return g.to(next(main.parameters()).device)


GUIDANCE_FILE = "guidance.json"  # optional in a model folder: its tuned guidance, e.g. {"autoguidance": {...}}


def tuned_guidance(model, kind: str = "autoguidance", sampling: str | None = None) -> dict:
    """The guidance a model folder ships with (``guidance.json``: ``{kind: {guide, w, interval, ema, guide_ema, note,
    by_sampling}}``, written by whoever tuned it, with how it was chosen); ``guide`` is a folder relative to the
    model's folder or a shipped model name. ``w`` and ``interval`` are tuned for the model's default sampler; the
    optimum moves with the sampler, so ``by_sampling`` may hold other settings' own, e.g. ``{"heun:35": {"w": 2}}``,
    used when ``sampling`` ('SAMPLER:NFE') names one of them. ``tuned_for`` says which was used."""
    from ..utils import io
    from ..zoo import resolve_model

    folder = io.resolve_folder(resolve_model(model))
    path = folder / GUIDANCE_FILE
    stored = io.read_json(path) if path.is_file() else {}
    if not isinstance(stored, dict) or not isinstance(stored.get(kind), dict):
        raise KakusanError(f"{model} has no tuned {kind} ({GUIDANCE_FILE}); give --guide MODEL --guidance W instead")
    t = dict(stored[kind])
    by = t.pop("by_sampling", None) or {}
    tuned_for = "default"
    if sampling is not None and isinstance(by.get(sampling), dict):
        t, tuned_for = t | by[sampling], sampling
    try:
        w, guide = float(t["w"]), str(t["guide"])
    except (KeyError, TypeError, ValueError) as e:
        raise KakusanError(f"{path}: {kind} needs a guide and a number w ({e})") from None
    local = folder / guide
    interval = t.get("interval")
    return {"guide": str(local) if local.is_dir() else guide, "w": w,
            "interval": tuple(interval) if interval else None, "ema": str(t.get("ema", "auto")),
            "guide_ema": str(t.get("guide_ema", "auto")), "note": str(t.get("note", "")), "tuned_for": tuned_for,
            "tuned_samplings": ["default", *by]}


def autoguidance_options(model, *, sampler: str | None = None, nfe: int | None = None, ema: str = "auto",
                         guide_ema: str = "auto", guide=None, guidance: float = 1.0, interval=None) -> dict:
    """The sampling options of a model's tuned autoguidance (``kakusan sample --autoguidance``): guide, w, interval
    and EMAs from its ``guidance.json``, for ``sampler:nfe`` where one is tuned for it (else the model's default
    sampler's, with a ``note`` saying so). An EMA the user chose explicitly wins; a guide, w or interval is refused,
    as the tuned setting is their choice."""
    if guide is not None or guidance != 1 or interval is not None:
        raise KakusanError("--autoguidance sets the guide, w and interval itself: drop --guide, --guidance and "
                           "--interval")
    asked = f"{sampler}:{nfe}" if sampler and nfe else None
    t = tuned_guidance(model, sampling=asked)
    note = (f"no autoguidance tuned for {asked}; using the one tuned for the model's default sampler (tuned: "
            f"{', '.join(t['tuned_samplings'])})") if asked and t["tuned_for"] != asked else None
    return {"guide": t["guide"], "guidance": t["w"], "interval": t["interval"],
            "guide_ema": t["guide_ema"] if guide_ema == "auto" else guide_ema,
            "ema": t["ema"] if ema == "auto" else ema, "note": note}
