"""``kakusan ema``: choose EMA lengths after training, from a run's snapshots (:mod:`kakusan.train.phema`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import _floats, _run


def ema(
    run: Path = typer.Argument(..., help="Run folder trained with --snapshot-every-kimg (its snapshots/ are read)."),
    std: str = typer.Option(..., help="EMA lengths sigma_rel to reconstruct, comma-separated, e.g. 0.03,0.08."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="New model folder [RUN/posthoc-<kimg>]."),
    at_kimg: Optional[float] = typer.Option(None, help="Reconstruct at the newest snapshot at or before this kimg "
                                            "[the newest]."),
):
    """Post-hoc EMA (Karras et al. 2024, EDM2 Sec. 3.2): least-squares combinations of the stored power-function
    EMAs that match the profile of each requested length; written as ordinary ema-<std> weight sets (use them with
    --ema STD in sample, report, evaluate, guidance)."""
    from ..train.phema import posthoc_ema

    def go():
        typer.echo(json.dumps(posthoc_ema(run, _floats(std), out, at_kimg)))

    _run(go)
