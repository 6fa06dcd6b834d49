"""``kakusan train``: every option is a field of :class:`~kakusan.diffusion.train_config.TrainConfig` or of a
process's options; this file only adds the run folder, ``--config``, ``--resume`` and the progress bar."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import KakusanError
from ..diffusion.process import PANEL
from ..diffusion.train_config import MODEL, SPEED, TrainConfig, process_option_classes
from ..train.config import BOOKS, OPTIMISE
from ..utils.options import with_options
from .common import _run


@with_options(TrainConfig, *process_option_classes(), panels=(MODEL, PANEL, OPTIMISE, SPEED, BOOKS))
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; must not hold a run unless --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A JSON file of options (the keys of a run's "
                                          "train_config.json); flags given beside it win."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped (options "
                                "given again must equal the run's; only --kimg and --minutes may change)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    given: dict = None,
):
    """Train a denoiser; writes checkpoint/, snapshots/, samples/, metrics.jsonl and loss.png into the run folder."""
    from ..diffusion.training import Trainer
    from ..utils import io

    def go():
        if resume:
            if config is not None:
                raise KakusanError("--config starts a run; a resumed run reads its own train_config.json")
            trainer = Trainer.resume(out, progress=progress, **given)
        else:
            base = io.read_json(config) if config is not None else None
            trainer = Trainer(TrainConfig.from_options(given, base), out, progress=progress)
        typer.echo(json.dumps(trainer.train()))

    _run(go)
