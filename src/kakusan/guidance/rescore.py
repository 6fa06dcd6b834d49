"""Score finished guidance sweeps again from their stored evaluation features, without sampling anything.

A sweep (:mod:`kakusan.guidance.sweep`) keeps every row's evaluation features (``features.safetensors``). Here they
are scored against another reference — ``all``: every real image, the usual practice for FID (the statistics of the
whole data set; less finite-sample bias than the disjoint half a sweep uses by default, and the bootstrap resamples
the real images too) or ``split``: the class-stratified half a sweep uses, which reproduces the numbers of a sweep
made by this version — and several runs are set side by side. Runs sampled on the same seeds and n are paired sample
for sample, so every row is resampled on the same indices and a gap between rows of different runs gets its paired
spread (:func:`.sweep.paired_summary`).
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import KakusanError
from ..data import load_dataset
from ..metrics import load_featurenet
from ..metrics.scores import reference_sets, score_features
from ..utils import io
from .sweep import CSV_FIELDS, best_rows, paired_summary, plot_sweep


def read_run(run: str | Path) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """(sweep.csv lines, features by row key 'sampling|setting|w=W', sweep.json or {} for runs older than it)."""
    run = Path(run)
    for name in ("sweep.csv", "features.safetensors"):
        if not (run / name).is_file():
            raise KakusanError(f"{run} is not a finished guidance sweep (no {name})")
    with open(run / "sweep.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    features = load_file(str(run / "features.safetensors"))
    meta = io.read_json(run / "sweep.json") if (run / "sweep.json").is_file() else {}
    for line in lines:
        if row_key(line) not in features:
            raise KakusanError(f"{run}: no stored features for row {row_key(line)!r}")
    return lines, features, meta


def row_key(line: dict) -> str:
    return f"{line['sampling']}|{line['setting']}|w={float(line['w']):g}"


def rescore(runs: list[str | Path], out: str | Path, *, reference: str = "all", bootstrap: int = 100,
            spread: str = "auto", progress: bool = True) -> dict:
    """Every row of every run scored against ``reference``; settings are named RUN/SETTING when there are several
    runs. ``spread``: what the bootstrap resamples (:func:`~kakusan.metrics.scores.reference_sets`). Writes
    sweep.csv, sweep.png, bootstrap.safetensors and sweep.json to ``out`` (never into a run)."""
    runs, out = [Path(r) for r in runs], Path(out)
    if not runs:
        raise KakusanError("give at least one sweep folder")
    if bootstrap < 2:
        raise KakusanError(f"the FD spread needs at least 2 bootstrap resamplings (got {bootstrap})")
    if any(out.resolve() == r.resolve() for r in runs):
        raise KakusanError(f"{out} is one of the runs; write the rescored sweep to a folder of its own")
    if len({r.name for r in runs}) < len(runs):
        raise KakusanError("the runs' folder names name their settings: give runs distinct folder names")
    loaded = {r: read_run(r) for r in runs}
    sizes = {len(f) for _, features, _ in loaded.values() for f in features.values()}
    seeds = {meta.get("seed", 0) for _, _, meta in loaded.values()}  # sweeps older than sweep.json used seed 0
    if len(sizes) != 1 or len(seeds) != 1:
        raise KakusanError(f"the runs were sampled on different n {sorted(sizes)} or seeds {sorted(seeds)}; "
                           "only runs on the same seeds can be set side by side")
    (n,), (seed,) = sizes, seeds
    data = load_dataset("mnist")
    ref = reference_sets(load_featurenet(), data.images, n, seed, reference, data.labels, spread)
    rows: dict[str, dict[str, list]] = {}
    lines_out = []
    jobs = [(r, line) for r, (lines, _, _) in loaded.items() for line in lines]
    for run, line in tqdm(jobs, desc="rescoring", disable=not progress):
        s = score_features(ref, loaded[run][1][row_key(line)], seed, bootstrap)
        name = line["setting"] if len(runs) == 1 else f"{run.name}/{line['setting']}"
        row = {"w": float(line["w"]), "fd": s["fd"], "fd_std": s["fd_std"], "precision": s["precision"],
               "recall": s["recall"], "class_acc": float(line["class_acc"]), "floor_fd": s["floor"]["fd"],
               "fd_boot": s["fd_boot"]}
        rows.setdefault(line["sampling"], {}).setdefault(name, []).append(row)
        lines_out.append({**line, "setting": name, **{k: f"{row[k]:.6g}" for k in ("fd", "fd_std", "precision",
                                                                                  "recall", "floor_fd")}})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(lines_out)
    save_file({f"{spec}|{name}|w={r['w']:g}": r["fd_boot"].to(torch.float32, copy=True)
               for spec, by in rows.items() for name, rs in by.items() for r in rs}, str(out / "bootstrap.safetensors"))
    io.write_json({"runs": [str(r) for r in runs], "n": n, "seed": seed, "reference": reference,
                   "bootstrap": bootstrap, "spread": ref["spread"],
                   "floor": {"fd": ref["floor"]["fd"], "n": ref["floor"]["n"]}},
                  out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", n, reference)
    best = best_rows(rows)
    return {"rows": rows, "best": best, "paired": paired_summary(rows, best), "n": n, "csv": str(out / "sweep.csv"),
            "plot": str(out / "sweep.png")}
