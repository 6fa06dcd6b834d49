"""``kakusan guidance-sweep``: the guide search of :mod:`kakusan.guidance.sweep`."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from .. import KakusanError
from .common import _floats, _pair, _run

SPREAD_HELP = ("What the FD's bootstrap resamples: 'samples' (the seed-to-seed spread against a fixed reference), "
               "'both' (the real images too: the reference's own finite size), 'auto' (both against 'all').")


def guidance_sweep(
    model: str = typer.Option("mnist-s", help="Main model."),
    guide: list[str] = typer.Option(["autoguidance=mnist-xs-guide", "cfg=uncond"],
                                    help="NAME=GUIDE (a model, or 'uncond' for CFG); repeat for several guides."),
    w: str = typer.Option("1,1.5,2,2.5,3", help="Guidance weights (1 = unguided, sampled once)."),
    n: int = typer.Option(1000, help="Samples per row (class-cycled labels, seeds SEED..SEED+n-1)."),
    sampling: list[str] = typer.Option(["heun:35"], help="'default' (the model's own) or SAMPLER:NFE[:SCHEDULE]; "
                                       "repeat for several."),
    ema: str = typer.Option("auto", help="Main-model EMA lengths to try, comma-separated (or auto / raw)."),
    guide_ema: str = typer.Option("auto", help="Guide EMA lengths to try, comma-separated (or auto / raw)."),
    interval: list[str] = typer.Option(["none"], help="'none' or LO,HI in sigma; repeat for several."),
    seed: int = typer.Option(0),
    bootstrap: int = typer.Option(100, help="Bootstrap resamplings for the FD spread."),
    reference: str = typer.Option("split", help="Score against 'split' (n real images disjoint from the floor's "
                                  "other n) or 'all' (every real image, as FID does; the floor at up to half)."),
    spread: str = typer.Option("auto", help=SPREAD_HELP),
    out: Path = typer.Option(Path("out/guidance-sweep"), "--out", "-o",
                             help="Output folder (created; must be empty unless --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted sweep in --out (same options), "
                                "keeping every part already sampled."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """FD (with its bootstrap spread), precision, recall and class accuracy against w for every guide x guide EMA x
    main EMA x interval, on each sampler setting: sweep.csv, sweep.png (best w starred); last line one JSON object
    {setting: [{w, fd, fd_std, precision, recall, class_acc}]} per sampler setting."""
    from ..guidance.sweep import guidance_sweep as sweep, settings_product

    def go():
        guides = {}
        for spec in guide:
            if "=" not in spec:
                raise KakusanError(f"--guide takes NAME=GUIDE (got {spec!r})")
            name, g = spec.split("=", 1)
            guides[name] = g
        intervals = [None if v == "none" else _pair(v, "--interval") for v in interval]
        settings = settings_product(guides, _emas(guide_ema), _emas(ema), intervals)
        r = sweep(model, settings, _floats(w), out, n=n, samplings=sampling, seed=seed, bootstrap=bootstrap,
                  reference=reference, spread=spread, resume=resume, progress=progress)
        _report(r)
        typer.echo(f"same seeds side by side: {r['compare']}")
        typer.echo(_last_line(r))

    _run(go)


def _emas(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values:
        if v not in ("auto", "raw"):
            _floats(v)  # a clear error for anything else
    return values or ["auto"]


def guidance_rescore(
    runs: list[Path] = typer.Argument(..., help="Finished guidance-sweep folders (same seeds and n); RUN+RUN2 pools "
                                          "runs of the same rows sampled on disjoint seed ranges into one sample set."),
    reference: str = typer.Option("all", help="'all' (every real image, as FID does) or 'split' (the sweep's "
                                  "class-stratified half: reproduces a sweep of this version)."),
    bootstrap: int = typer.Option(100, help="Bootstrap resamplings for the FD spread."),
    spread: str = typer.Option("auto", help=SPREAD_HELP),
    out: Path = typer.Option(Path("out/guidance-rescore"), "--out", "-o"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Score finished sweeps again from their stored features, no sampling: against another reference, and several
    runs side by side with paired spreads (settings named RUN/SETTING). Same outputs and last line as the sweep."""
    from ..guidance.rescore import rescore

    def go():
        r = rescore(runs, out, reference=reference, bootstrap=bootstrap, spread=spread, progress=progress)
        _report(r)
        typer.echo(_last_line(r))

    _run(go)


def _report(r: dict) -> None:
    """Each setting's best w, FD, ratio to its own unguided row and gap to the leader, with paired spreads."""
    for spec, by in r["rows"].items():
        typer.echo(f"== {spec}" + (f" -> {r['samplings'][spec]}" if "samplings" in r else ""))
        for name in by:
            b = r["paired"][spec][name]
            vs = (f"; {b['ratio_to_unguided']:.3f} +- {b['ratio_std']:.3f} x unguided" if "ratio_to_unguided" in b
                  else "")
            gap = (f"; {b['gap_to_leader']:+.4f} +- {b['gap_std']:.4f} vs {b['leader']}" if b["leader"] != name
                   else "; leader")
            typer.echo(f"{name}: best w {b['w']:g}, FD {b['fd']:.4f} +- {b['fd_std']:.4f}{vs}{gap} (paired)")
    typer.echo(f"csv: {r['csv']}\nplot: {r['plot']}")


def _last_line(r: dict) -> str:
    """{sampling: {setting: [{w, fd, fd_std, precision, recall, class_acc}]}} as one JSON line."""
    from ..guidance.sweep import FIELDS

    return json.dumps({spec: {name: [{k: round(row[k], 5) for k in FIELDS} for row in rows]
                              for name, rows in by.items()} for spec, by in r["rows"].items()})
