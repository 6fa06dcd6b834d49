"""``kakusan distill ...``: one-step distillation (Diffusion2GAN) — parse options, call :mod:`kakusan.distill`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import _pair, _run


distill_app = typer.Typer(help="One-step distillation (Diffusion2GAN): ODE pairs, perceptual net, student training.",
                          no_args_is_help=True)


@distill_app.command("pairs")
def distill_pairs(
    out: Path = typer.Option(..., "--out", "-o", help="Pair-set folder (created, or finished / extended)."),
    teacher: str = typer.Option("mnist-s", help="Teacher: model folder, run folder or shipped name."),
    n: int = typer.Option(..., "--n", "-n", help="Number of pairs (seeds seed .. seed + n - 1)."),
    seed: int = typer.Option(0, help="First seed [0]."),
    sampler: str = typer.Option("heun", help="Teacher's sampler [heun]."),
    nfe: int = typer.Option(35, help="Teacher's network evaluations per image (before guidance) [35]."),
    ema: str = typer.Option("auto", help="Teacher's EMA length, 'raw' or 'auto' [auto]."),
    guide: Optional[str] = typer.Option(None, help="Guide model (autoguidance) or 'uncond' (CFG) [none]."),
    guidance: float = typer.Option(1.0, help="Guidance weight w [1 = none]."),
    interval: Optional[str] = typer.Option(None, help="Guidance interval LO,HI in sigma [everywhere]."),
    guide_ema: str = typer.Option("auto", help="EMA length of the guide [auto]."),
    shard_size: int = typer.Option(256, help="Pairs per shard (the unit of resumption) [256]."),
    batch_size: int = typer.Option(64, help="Teacher batch [64]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Write ODE pairs (z, c, x0 = teacher(z, c)) as safetensors shards + manifest.json; rerun to resume."""
    from ..distill import generate_pairs

    _run(lambda: typer.echo(json.dumps(generate_pairs(
        teacher, out, n=n, seed=seed, sampler=sampler, nfe=nfe, ema=ema, guide=guide, guidance=guidance,
        interval=_pair(interval, "--interval"), guide_ema=guide_ema, shard_size=shard_size, batch_size=batch_size,
        progress=progress))))


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
def distill_train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; or resumed with --resume)."),
    pairs: Optional[Path] = typer.Option(None, help="Pair set from `kakusan distill pairs` (names its teacher)."),
    loss: Optional[str] = typer.Option(None, help="Reconstruction loss: perceptual (ensembled) | mse [perceptual]."),
    l1: Optional[float] = typer.Option(None, help="Weight of an L1 term beside the perceptual loss [0]."),
    gan_weight: Optional[float] = typer.Option(None, help="Weight of the conditional GAN loss; 0 = no discriminator "
                                               "[0.05]."),
    r1_gamma: Optional[float] = typer.Option(None, help="R1 weight on real pairs, 0 = off [0.1]."),
    mix_and_match: Optional[bool] = typer.Option(None, "--mix-and-match/--no-mix-and-match",
                                                 help="Wrong-z and wrong-c negatives for the discriminator [on]."),
    disc_z: Optional[bool] = typer.Option(None, "--disc-z/--no-disc-z", help="The discriminator sees z [on]."),
    kimg: Optional[float] = typer.Option(None, help="Training length in thousands of pairs seen [20]."),
    minutes: Optional[float] = typer.Option(None, help="Wall-clock budget [none]."),
    batch_size: Optional[int] = typer.Option(None, help="Pairs per step [32]."),
    lr: Optional[float] = typer.Option(None, help="Student learning rate [2e-5]."),
    lr_disc: Optional[float] = typer.Option(None, help="Discriminator learning rate [2e-4]."),
    lr_decay_kimg: Optional[float] = typer.Option(None, help="Inverse-sqrt decay of both rates after N kimg "
                                                  "[none: constant]."),
    init: Optional[Path] = typer.Option(None, help="Start the student from this student's weights (same teacher), "
                                        "e.g. a perceptual-only run before adding the GAN [the teacher's]."),
    seed: Optional[int] = typer.Option(None, help="Seed of the pair order and augmentations [0]."),
    sample_kimg: Optional[float] = typer.Option(None, help="Teacher / student grid every N kimg [2]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train a one-step student G(z, c) on ODE pairs: reconstruction (perceptual or MSE) + conditional GAN."""
    from ..distill.train import DistillConfig, resume_student, train_student

    given = {k: v for k, v in dict(
        pairs=str(pairs) if pairs else None, loss=loss, l1=l1, gan_weight=gan_weight, r1_gamma=r1_gamma,
        mix_and_match=mix_and_match, disc_z=disc_z, kimg=kimg, minutes=minutes, batch_size=batch_size, lr=lr,
        lr_disc=lr_disc, lr_decay_kimg=lr_decay_kimg, init=str(init) if init else None, seed=seed,
        sample_kimg=sample_kimg).items() if v is not None}

    def go():
        if resume:
            return resume_student(out, progress=progress, **given)
        return train_student(DistillConfig(**given), out, progress=progress)

    _run(lambda: typer.echo(json.dumps(go())))
