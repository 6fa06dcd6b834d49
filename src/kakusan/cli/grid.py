"""``kakusan grid``: optimise few-step sampling grids for a model and store them with it
(:mod:`kakusan.diffusion.grids`)."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .common import _floats, _run


def grid(
    model: str = typer.Argument(..., help="Model folder (a run's checkpoint/, an exported model or a shipped name)."),
    sampler: str = typer.Option("dpmpp3m", help="One-call-per-step solver: dpmpp3m | dpmpp2m | euler | ddim."),
    nfe: str = typer.Option("3,4,5,6", help="Network evaluations to optimise a grid for, comma-separated."),
    n: int = typer.Option(64, "--n", "-n", help="Seeds the error is measured on (class-cycled)."),
    max_evals: int = typer.Option(60, help="Solver runs per grid (coarse Karras search + Nelder-Mead)."),
    reference_nfe: int = typer.Option(35, help="Heun NFE of the reference solution."),
    default_nfe: Optional[int] = typer.Option(None, help="Also make SAMPLER at this NFE on its optimized grid the "
                                              "model's default for sample / report."),
    note: str = typer.Option("", help="With --default-nfe: why (shown in reports), e.g. the measured FD."),
    ema: str = typer.Option("auto", help="EMA length to optimise for, 'raw' or 'auto'."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Choose, for each NFE, the noise levels that bring SAMPLER closest to a many-step solution ("Align Your
    Steps"-style), and store them in the model's solver.json; sample with --schedule optimized."""
    from ..diffusion.grids import store_grids

    def go():
        nfes = [int(v) for v in _floats(nfe)]
        typer.echo(json.dumps(store_grids(model, sampler, nfes, n=n, max_evals=max_evals,
                                          reference=("heun", reference_nfe), default_nfe=default_nfe, note=note,
                                          ema=ema, progress=progress)))

    _run(go)
