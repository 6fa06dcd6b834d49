"""The ``kakusan`` command line: a thin layer that parses options and calls the Python API."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .. import KakusanError

from .common import PRECISION_HELP, _floats, _pair, _run, app
from .distill import distill_app
from .ema import ema
from .grid import grid
from .guidance import guidance_rescore, guidance_sweep
from .metrics import compare, eval_, metrics_app
from .segment import segment
from .train import train

app.command("train")(train)  # first in --help


@app.command()
def sample(
    model: str = typer.Argument(..., help="Model folder (a run's checkpoint/ or snapshot) or shipped model name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; must be empty or new)."),
    n: int = typer.Option(64, "--n", "-n", help="Number of images."),
    sampler: Optional[str] = typer.Option(None, help="heun | euler | dpmpp2m | dpmpp3m | ddim | ddpm | unipc; cold "
                                          "models: alg2 | alg1 [the model's own default, see `kakusan info`]."),
    scheduler: Optional[str] = typer.Option(None, help="Any diffusers scheduler class instead of --sampler, e.g. "
                                            "DEISMultistepScheduler."),
    steps: Optional[int] = typer.Option(None, help="Sampler steps [from --nfe]."),
    nfe: Optional[int] = typer.Option(None, help="Network evaluations, if --steps is not given (Heun: steps = "
                                      "(nfe+1)/2) [the model's default, else 35]."),
    schedule: str = typer.Option("auto", help="auto | karras | uniform (DDPM discrete steps) | optimized (the "
                                 "model's stored grid) | exponential (diffusers schedulers)."),
    eta: Optional[float] = typer.Option(None, help="DDIM eta (0 deterministic, 1 ancestral) [0]."),
    churn: Optional[float] = typer.Option(None, help="EDM S_churn for euler/heun [0]."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    label: Optional[str] = typer.Option(None, help="Class(es) to draw, comma-separated; default: cycle all classes."),
    tokens: Optional[str] = typer.Option(None, help="Token models: sentences of class names, comma-separated and "
                                         "cycled, e.g. '3 7,1 2 5' (digit-scenes-s draws those digits)."),
    ema: str = typer.Option("auto", help="EMA length to load (e.g. 0.1), 'raw' or 'auto' (longest)."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    chunk: int = typer.Option(1000, help="Seeds per chunk: each is written when done, so memory stays flat in n."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in --out (same options)."),
    guide: Optional[str] = typer.Option(None, help="Guide model (autoguidance) or 'uncond' (classifier-free)."),
    guidance: float = typer.Option(1.0, help="Guidance weight w (1 = no guidance)."),
    interval: Optional[str] = typer.Option(None, help="Guidance interval in sigma: LO,HI (guide only in (LO, HI])."),
    guide_ema: str = typer.Option("auto", help="EMA length of the guide model."),
    autoguidance: bool = typer.Option(False, "--autoguidance", help="The model's tuned autoguidance (guide, w, "
                                      "interval and EMAs from its guidance.json; `kakusan info` shows it)."),
    symmetry_noise: Optional[float] = typer.Option(None, help="Cold models: noise std added once to x_T (0 = "
                                                   "perfect symmetry) [0.002]."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (x1.19 here after ~47 s)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Channels-last weights (x1.08 here)."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Draw samples; writes grid.png, images/NNNNNN.png and samples.npz (images, labels, seeds), chunk by chunk
    (resumable with --resume; several processes with accelerate launch). Cold models (blur --to-mean, mix, noise)
    generate from their degraded prior by Algorithm 2."""
    from ..sampling import sample_to_folder

    def go():
        if scheduler and sampler:
            raise KakusanError("give --sampler or --scheduler, not both")
        g = dict(guide=guide, guidance=guidance, interval=_pair(interval, "--interval"), guide_ema=guide_ema, ema=ema)
        if autoguidance:
            from ..guidance.guided import autoguidance_options

            g = autoguidance_options(model, sampler=sampler, nfe=nfe, **g)
            note = g.pop("note")
            if note:
                typer.echo(f"note: {note}", err=True)
        typer.echo(json.dumps(sample_to_folder(
            model, out, n=n, sampler=f"diffusers:{scheduler}" if scheduler else sampler, steps=steps, nfe=nfe,
            schedule=schedule, eta=eta, churn=churn,
            seed=seed, labels=label, tokens=tokens, batch_size=batch_size, chunk=chunk, resume=resume,
            progress=progress, **g, symmetry_noise=symmetry_noise, compile=compile, channels_last=channels_last,
            precision=precision)))

    _run(go)


@app.command()
def restore(
    model: str = typer.Argument(..., help="A cold model: run folder or model folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; must be empty or new)."),
    data: str = typer.Option("mnist-heldout", help="Clean images to degrade: a built-in data set or a folder."),
    n: int = typer.Option(8, "--n", "-n", help="Number of images (the first n of --data)."),
    t: Optional[int] = typer.Option(None, help="Severity to degrade to [T, the model's last step]."),
    seed: int = typer.Option(0, help="Seed of the degradation's random part (mask centres, snow, mixed image)."),
    ema: str = typer.Option("auto", help="EMA length to load, 'raw' or 'auto' (longest)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Degrade clean images and restore them by each method; writes strip.png (rows: clean / degraded / direct /
    Algorithm 1 / Algorithm 2) and restored.npz."""
    from ..cold.restore import restore_to_folder

    _run(lambda: typer.echo(json.dumps(restore_to_folder(model, out, data=data, n=n, t=t, seed=seed, ema=ema,
                                                          progress=progress))))


@app.command()
def info(model: str = typer.Argument(..., help="Model folder, run folder or shipped model name.")):
    """Show a checkpoint's configuration, images seen, EMA lengths and size."""
    from ..models import describe

    _run(lambda: typer.echo(json.dumps(describe(model), indent=2)))


@app.command()
def export(
    model: str = typer.Argument(..., help="Model folder, run folder or snapshot."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the compact model (config + EMA weights + card)."),
    ema: Optional[str] = typer.Option(None, help="EMA lengths to keep, comma-separated, and/or 'raw' for the raw "
                                      "weights [all stored EMAs]."),
    command: Optional[str] = typer.Option(None, help="The command that trained the model, for the card."),
    note: Optional[str] = typer.Option(None, help="Free text for the card (e.g. measured metrics)."),
):
    """Write a compact, shippable copy of a model: config.json, the chosen EMA weights and card.json."""
    from ..models import export_model

    def go():
        card = {k: v for k, v in {"command": command, "note": note}.items() if v}
        items = [x.strip() for x in ema.split(",")] if ema else None
        raw = bool(items) and "raw" in items
        emas = _floats(",".join(x for x in items if x != "raw")) if items else None
        typer.echo(str(export_model(model, out, emas=[] if raw and not emas else emas, raw=raw, card=card)))

    _run(go)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="A model folder written by kakusan 0.1 (config.json + model.safetensors)."),
    dst: Path = typer.Argument(..., help="New folder for the same model in the current layout."),
):
    """Rewrite a kakusan 0.1 model folder in the current layout (diffusers' unet/ sub-folder); same samples."""
    from ..models import convert_legacy

    _run(lambda: typer.echo(str(convert_legacy(src, dst))))


@app.command()
def report(
    model: str = typer.Argument("mnist-s", help="Model folder or shipped model name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; must be empty or new)."),
    n: int = typer.Option(200, help="Number of samples (classes cycle)."),
    nfe: Optional[int] = typer.Option(None, help="Network evaluations [the model's default sampling: see `kakusan "
                                      "info`]."),
    seed: int = typer.Option(0),
    ema: str = typer.Option("auto", help="EMA length, 'raw' or 'auto'."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Sample a class-conditional grid and write a one-page HTML report with metrics beside the real-vs-real floor."""
    from ..report.sample_report import sample_report

    def go():
        r = sample_report(model, out, n=n, nfe=nfe, seed=seed, ema=ema, progress=progress)
        typer.echo(f"grid: {r['grid']}\nreport: {r['report']}")
        typer.echo(json.dumps({k: v for k, v in r.items() if k != "metrics"} | {"metrics": r["metrics"]}))

    _run(go)


@app.command()
def toy(
    out: Path = typer.Option(Path("out/toy"), "--out", "-o", help="Folder for toy.png, samples_*.npz, metrics.json."),
    w: str = typer.Option("1.5,2,2.5,3", help="Guidance weights to test."),
    n: int = typer.Option(16384, help="Samples per method."),
    seed: int = typer.Option(0),
    main_iters: int = typer.Option(4096, help="Training iterations of the main model (guides: 1/8)."),
    tree: str = typer.Option("paper", help="paper (the reference implementation's tree) | kakusan (kakusan's first "
                             "reading of the paper)."),
    batch: int = typer.Option(4096, help="Training batch of all three toy models (the reference code's; was 2048)."),
    lr: float = typer.Option(1e-2, help="Peak learning rate (the reference code's; was 5e-3)."),
    ema_std: float = typer.Option(0.01, "--ema", help="EMA length sigma_rel of all three models (reference: 0.01)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Reproduce the 2-D fractal-tree toy of the autoguidance paper (Fig. 1): CFG vs autoguidance, exact metrics."""
    from ..guidance.toy import run_toy

    def go():
        ws = _floats(w)
        result = run_toy(out, ws=ws, n=n, seed=seed, main_iters=main_iters, guide_iters=max(1, main_iters // 8),
                         fig_w=ws[-1], tree=tree, batch=batch, lr=lr, ema_std=ema_std, progress=progress)
        rows = [("exact", result["exact"]), ("none", result["none"])]
        rows += [(f"{m} w={r['w']:g}", r) for m in ("cfg", "autoguidance") for r in result[m]]
        typer.echo(f"{'method':22}{'outliers':>10}{'cover TV':>10}{'missed':>8}")
        for name, r in rows:
            typer.echo(f"{name:22}{r['outlier_rate']:10.4f}{r['coverage_tv']:10.4f}{r['branches_missed']:8d}")
        typer.echo(f"figure: {result['figure']}")
        typer.echo(json.dumps({k: result[k] for k in ("exact", "none", "cfg", "autoguidance")}))

    _run(go)


app.add_typer(distill_app, name="distill")

app.command("segment")(segment)
app.command("grid")(grid)
app.command("ema")(ema)
app.command("eval")(eval_)
app.command("compare")(compare)
app.add_typer(metrics_app, name="metrics")
app.command("guidance-sweep")(guidance_sweep)
app.command("guidance-rescore")(guidance_rescore)


def main():  # pragma: no cover
    app(prog_name="kakusan")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
