"""``kakusan distill ...``: one-step distillation (Diffusion2GAN) — parse options, call :mod:`kakusan.distill`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..distill.config import GAN, DistillConfig
from ..train.config import BOOKS, OPTIMISE
from ..utils.options import with_options
from .common import PRECISION_HELP, _pair, _run


distill_app = typer.Typer(help="One-step distillation (Diffusion2GAN): ODE pairs, perceptual net, student training.",
                          no_args_is_help=True)


@distill_app.command("pairs")
def distill_pairs(
    out: Path = typer.Option(..., "--out", "-o", help="Pair-set folder (created, or finished / extended)."),
    teacher: str = typer.Option("mnist-s", help="Teacher: model folder, run folder or shipped name."),
    n: int = typer.Option(..., "--n", "-n", help="Number of pairs (seeds seed .. seed + n - 1)."),
    seed: int = typer.Option(0, help="First seed [0]."),
    sampler: Optional[str] = typer.Option(None, help="Teacher's sampler [the model's default sampling, as "
                                          "`kakusan info` shows it]."),
    nfe: Optional[int] = typer.Option(None, help="Teacher's network evaluations per image (before guidance) [the "
                                      "model's default, else 35]."),
    schedule: str = typer.Option("auto", help="auto | karras | uniform | optimized (the model's stored grid for the "
                                 "sampler and NFE)."),
    ema: str = typer.Option("auto", help="Teacher's EMA length, 'raw' or 'auto' [auto]."),
    guide: Optional[str] = typer.Option(None, help="Guide model (autoguidance) or 'uncond' (CFG) [none]."),
    guidance: float = typer.Option(1.0, help="Guidance weight w [1 = none]."),
    interval: Optional[str] = typer.Option(None, help="Guidance interval LO,HI in sigma [everywhere]."),
    guide_ema: str = typer.Option("auto", help="EMA length of the guide [auto]."),
    autoguidance: bool = typer.Option(False, "--autoguidance", help="The teacher's tuned autoguidance (guide, w, "
                                      "interval and EMAs from its guidance.json) for this sampler."),
    shard_size: int = typer.Option(256, help="Pairs per shard (the unit of resumption) [256]."),
    batch_size: int = typer.Option(64, help="Teacher batch [64]."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Write ODE pairs (z, c, x0 = teacher(z, c)) as safetensors shards + manifest.json; rerun to resume."""
    from ..distill import generate_pairs

    _run(lambda: typer.echo(json.dumps(generate_pairs(
        teacher, out, n=n, seed=seed, sampler=sampler, nfe=nfe, schedule=schedule, ema=ema, guide=guide,
        guidance=guidance, autoguidance=autoguidance,
        interval=_pair(interval, "--interval"), guide_ema=guide_ema, shard_size=shard_size, batch_size=batch_size,
        precision=precision, progress=progress))))


@distill_app.command("train-perceptual")
def distill_train_perceptual(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for perceptual.safetensors and card.json."),
    seed: int = typer.Option(1, help="Seed of the split, the weights and the augmentation [1; the evaluation net: 0]."),
    epochs: int = typer.Option(20, help="Passes over the 4,000 training images [20]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train the feature network of the ensembled perceptual loss (not the evaluation network)."""
    from ..distill.perceptual import train_perceptual

    _run(lambda: typer.echo(json.dumps(train_perceptual(out, seed=seed, epochs=epochs, progress=progress))))


@distill_app.command("train")
@with_options(DistillConfig, panels=(GAN, OPTIMISE, BOOKS))
def distill_train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; or resumed with --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped (options "
                                "given again must equal the run's; only --kimg and --minutes may change)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    given: dict = None,
):
    """Train a one-step student G(z, c) on ODE pairs: reconstruction (perceptual or MSE) + conditional GAN."""
    from ..distill.train import resume_student, train_student

    def go():
        if resume:
            return resume_student(out, progress=progress, **given)
        return train_student(DistillConfig.from_dict(given), out, progress=progress)

    _run(lambda: typer.echo(json.dumps(go())))
