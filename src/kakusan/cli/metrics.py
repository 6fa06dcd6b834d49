"""``kakusan eval``, ``kakusan compare`` and ``kakusan metrics``: scores under the judge panel
(:mod:`kakusan.metrics.judges`, :mod:`kakusan.metrics.panel`), and the training of the judges."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import KakusanError
from .common import _run

JUDGE_HELP = ("A judge (feature space): featurenet-mnist | resnet-mnist | autoencoder-mnist | random-cnn | pixels | "
              "inception (needs --weights) | a judge folder; repeat for several [the whole panel].")
SPREAD_HELP = ("What the FD's bootstrap resamples: 'samples' (the seed-to-seed spread against a fixed reference), "
               "'both' (the real images too: the reference's own finite size), 'auto' (both against 'all').")
TABLE = ("judge", "kind", "n", "fd", "fd_std", "floor_fd", "floor_n", "fd_over_floor", "kid", "precision", "recall",
         "class_acc")
PAIR_TABLE = ("a", "b", "judge", "fd_a", "fd_b", "ratio", "ratio_std", "gap", "gap_std", "z", "verdict")


def _num(v, width: int = 9, digits: int = 4) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def _write_csv(path: Path | None, fields, rows: list[dict]) -> None:
    if path:
        from ..utils import io

        io.write_csv(fields, [[row.get(k) for k in fields] for row in rows], path)


def eval_(
    samples: Path = typer.Argument(..., help="Samples: a .npz (images [, labels]), a `kakusan sample` folder, or "
                                   "PNGs."),
    ref: str = typer.Option("mnist", help="Reference: mnist | digits | an image folder or .npz of real images."),
    n: Optional[int] = typer.Option(None, help="Number of samples to score [all; at most half the reference "
                                    "with --reference split]."),
    judge: Optional[list[str]] = typer.Option(None, help=JUDGE_HELP),
    weights: Optional[Path] = typer.Option(None, help="Weights of a single --judge (a judge folder, or the FID "
                                           "Inception weights file for inception)."),
    seed: int = typer.Option(0, help="Seed of the real-set split, the bootstrap and the KID subsets."),
    reference: str = typer.Option("split", help="Score against 'split' (n real images, the floor's other n "
                                  "disjoint) or 'all' (every real image, as FID does; the floor at up to half)."),
    bootstrap: int = typer.Option(100, help="Bootstrap resamplings for each FD's spread (0: none)."),
    spread: str = typer.Option("auto", help=SPREAD_HELP),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the rows to this CSV file."),
):
    """Score samples under every judge of the panel: one row per judge with FD ± spread, the judge's own
    real-vs-real floor at the same n, FD / floor, KID, precision/recall and class accuracy (classifier judges).
    Last line: one JSON object."""
    from ..metrics.sample_sets import panel_samples

    def go():
        rows = panel_samples(samples, ref, judges=judge, weights=weights, n=n, seed=seed, reference=reference,
                             bootstrap=bootstrap, spread=spread)
        _write_csv(csv, TABLE, rows)  # first: a failed write is the command's only output
        against = "all of " if reference == "all" else f"{rows[0]['n']} of "
        typer.echo(f"{rows[0]['n']} samples vs {against}{ref}; each judge's floor: its own real vs real at the same n")
        typer.echo(f"{'judge':20}{'kind':13}{'FD':>9}{'± spread':>10}{'floor':>9}{'FD/floor':>9}{'KID':>9}"
                   f"{'prec':>8}{'recall':>8}{'class acc':>10}")
        for r in rows:
            typer.echo(f"{r['judge']:20}{r['kind']:13}{_num(r['fd'])}{_num(r['fd_std'], 10)}{_num(r['floor_fd'])}"
                       f"{_num(r['fd_over_floor'], 9, 2)}{_num(r['kid'])}{_num(r['precision'], 8, 3)}"
                       f"{_num(r['recall'], 8, 3)}{_num(r['class_acc'], 10, 3)}")
        if any(r["kid"] < 0 for r in rows):
            typer.echo("note: KID is an unbiased estimate, so it can fall below 0 when two sets are closer than its "
                       "sampling noise; read a negative KID as 0.")
        typer.echo(json.dumps({"samples": str(samples), "ref": ref, "reference": reference, "rows": rows}))

    _run(go)


def _named(specs: list[str]) -> dict[str, str]:
    named = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not name or not path:
            raise KakusanError(f"a sample set is NAME=PATH or PATH (got {spec!r})")
        if name in named:
            raise KakusanError(f"two sample sets are named {name!r}: name them NAME=PATH")
        named[name] = path
    return named


def compare(
    sets: list[str] = typer.Argument(..., help="Sample sets NAME=PATH (or PATH: named by its folder), at least two, "
                                     "of the same size and seeds; the first is A of every pair it is in."),
    ref: str = typer.Option("mnist", help="Reference: mnist | digits | an image folder or .npz of real images."),
    n: Optional[int] = typer.Option(None, help="Compare the first n samples of each set [all]."),
    judge: Optional[list[str]] = typer.Option(None, help=JUDGE_HELP),
    reference: str = typer.Option("all", help="'all' (every real image) or 'split' (a disjoint half)."),
    spread: str = typer.Option("both", help=SPREAD_HELP),
    bootstrap: int = typer.Option(100, help="Paired bootstrap resamplings."),
    beyond: float = typer.Option(1.0, help="A judge separates two sets when the gap exceeds this many paired spreads."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and the floor's split."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for compare.csv and compare.json."),
):
    """Paired comparison of sample sets under every judge: for each pair A, B the FD ratio A / B and the gap
    FD_B − FD_A with their paired bootstrap spreads, per judge, and the panel's verdict on "A beats B" — 'holds'
    only if every judge agrees beyond the spread, else 'depends on the judge' (or 'reversed', 'inside the
    spread')."""
    from ..metrics.sample_sets import compare_samples
    from ..utils import io

    def go():
        r = compare_samples(_named(sets), ref, judges=judge, n=n, seed=seed, bootstrap=bootstrap,
                            reference=reference, spread=spread, beyond=beyond)
        typer.echo(f"n = {r['n']} per set against {r['reference']} of {ref}; spread: {r['spread']} resampled, "
                   f"{r['bootstrap']} paired resamplings; a judge separates A and B beyond {beyond:g} spreads")
        lines = []
        for p in r["pairs"]:
            typer.echo(f"\n{p['a']} vs {p['b']}: \"{p['a']} beats {p['b']}\" {p['verdict']}")
            typer.echo(f"  {'judge':20}{'FD A':>9}{'FD B':>9}{'A / B':>9}{'±':>7}{'B − A':>9}{'±':>7}{'z':>7}")
            for row in p["rows"]:
                typer.echo(f"  {row['judge']:20}{_num(row['fd_a'])}{_num(row['fd_b'])}{_num(row['ratio'], 9, 3)}"
                           f"{_num(row['ratio_std'], 7, 3)}{_num(row['gap'])}{_num(row['gap_std'], 7, 3)}"
                           f"{_num(row['z'], 7, 2)}")
                lines.append(row | {"verdict": p["verdict"]})
        scores = {name: [{k: v for k, v in row.items() if k != "fd_boot"} for row in rows]
                  for name, rows in r["scores"].items()}
        summary = {k: r[k] for k in ("n", "reference", "spread", "bootstrap", "beyond")} | {
            "sets": _named(sets), "scores": scores,
            "pairs": [{"a": p["a"], "b": p["b"], "verdict": p["verdict"], "rows": p["rows"]} for p in r["pairs"]]}
        if out:
            out.mkdir(parents=True, exist_ok=True)
            _write_csv(out / "compare.csv", PAIR_TABLE, lines)
            io.write_json(summary, out / "compare.json")
        typer.echo(json.dumps(summary))

    _run(go)


metrics_app = typer.Typer(help="The judge panel's networks and their training.", no_args_is_help=True)


@metrics_app.command("train-judge")
def train_judge(
    name: str = typer.Argument(..., help="featurenet-mnist | resnet-mnist | autoencoder-mnist | random-cnn | pixels."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the judge (card.json and its weights)."),
    epochs: Optional[int] = typer.Option(None, help="Passes over its 4,000 training images [the recipe's: 20-30]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Make a judge of the panel by its recipe (its own split and seed); prints its card."""
    from ..metrics.judges import train_judge as make

    _run(lambda: typer.echo(json.dumps(make(name, out, epochs=epochs, progress=progress))))


@metrics_app.command("judges")
def judges():
    """List the panel's judges with their cards (kind, data, split, seed, accuracy or reconstruction error)."""
    from ..metrics.judges import PANEL, judge_folder
    from ..utils import io

    def go():
        cards = {name: io.read_json(judge_folder(name) / "card.json") for name in PANEL}
        for name, card in cards.items():
            quality = card.get("held_out_accuracy") or card.get("held_out_reconstruction_mse")
            what = "held-out accuracy" if "held_out_accuracy" in card else "held-out reconstruction MSE"
            typer.echo(f"{name:20}{card['kind']:13}{card.get('features', '?'):>5}-d  "
                       + (f"{card.get('split', '')}; {what} {quality}" if quality is not None else "not trained"))
        typer.echo(json.dumps(cards))

    _run(go)
