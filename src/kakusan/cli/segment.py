"""``kakusan segment``: training-free segmentation (EmerDiff) — parse options, call :mod:`kakusan.segment`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..segment.settings import EmerDiffSettings
from ..utils.options import with_options
from .common import PRECISION_HELP, _run


@with_options(EmerDiffSettings)
def segment(
    images: List[Path] = typer.Argument(..., help="Image files to segment."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new or empty)."),
    model: Optional[str] = typer.Option(None, help="A kakusan token-conditioned model (folder, run or shipped name)."),
    sd: Optional[Path] = typer.Option(None, help="A Stable Diffusion 1.x folder in diffusers' layout (offline)."),
    prompt: str = typer.Option("", help="SD: the prompt (needs text_encoder/ + tokenizer/) [empty]."),
    tokens: Optional[str] = typer.Option(None, help="kakusan model: the sentence, e.g. '3 7' [null condition]."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    device: str = typer.Option("cpu", help="Torch device of the models, e.g. cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("float32", help="Weights' dtype: float32 | bfloat16 | float16."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    given: dict = None,
):
    """Segment images without training (EmerDiff): label maps (PNG + .npy) and overlays
    (image | k-means | naive upsampling | EmerDiff)."""
    from ..segment.run import segment_files

    settings = EmerDiffSettings(**given)
    _run(lambda: typer.echo(json.dumps(segment_files(images, out, model=model, sd=str(sd) if sd else None,
                                                     prompt=prompt, tokens=tokens, settings=settings,
                                                     precision=precision, device=device, dtype=dtype,
                                                     progress=progress))))
