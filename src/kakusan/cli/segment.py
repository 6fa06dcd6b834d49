"""``kakusan segment``: training-free segmentation (EmerDiff) — parse options, call :mod:`kakusan.segment`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from . import _run


def segment(
    images: List[Path] = typer.Argument(..., help="Image files to segment."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new or empty)."),
    model: Optional[str] = typer.Option(None, help="A kakusan token-conditioned model (folder, run or shipped name)."),
    sd: Optional[Path] = typer.Option(None, help="A Stable Diffusion 1.x folder in diffusers' layout (offline)."),
    prompt: str = typer.Option("", help="SD: the prompt (needs text_encoder/ + tokenizer/) [empty]."),
    tokens: Optional[str] = typer.Option(None, help="kakusan model: the sentence, e.g. '3 7' [null condition]."),
    k: int = typer.Option(6, "--k", help="Number of segments (k-means clusters) [6]."),
    t_f: float = typer.Option(1.0, "--t-f", help="Timestep (of 1000) of the feature pass [1]."),
    t_m: float = typer.Option(281.0, "--t-m", help="Timestep (of 1000) the modulated denoising starts from [281]."),
    lam: float = typer.Option(10.0, "--lambda", help="Modulation strength [10]."),
    layer: str = typer.Option("auto", help="Cross-attention layer of the features: up.B.A or a full name "
                              "[auto: first of the lowest-resolution up block]."),
    mod_layer: str = typer.Option("auto", help="Layer modulated [auto: the third cross-attention layer of the "
                                  "feature layer's block, as in the paper]."),
    replay: bool = typer.Option(True, "--replay/--no-replay", help="Replay the attention maps [on]."),
    steps: int = typer.Option(5, help="DDIM steps from t_m to 0 [5]."),
    smooth: float = typer.Option(1.0, help="Gaussian smoothing of the difference maps, in pixels [1]."),
    seed: int = typer.Option(0, help="Seed of the noise and k-means [0]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Segment images without training (EmerDiff): label maps (PNG + .npy) and overlays
    (image | k-means | naive upsampling | EmerDiff)."""
    from ..segment import EmerDiffSettings, segment_files

    settings = EmerDiffSettings(k=k, t_f=t_f, t_m=t_m, lam=lam, feature_layer=layer, mod_layer=mod_layer,
                                replay=replay, steps=steps, smooth=smooth, seed=seed)
    _run(lambda: typer.echo(json.dumps(segment_files(images, out, model=model, sd=str(sd) if sd else None,
                                                     prompt=prompt, tokens=tokens, settings=settings,
                                                     progress=progress))))
