"""Score finished guidance sweeps again from their stored evaluation features, without sampling anything.

A sweep (:mod:`kakusan.guidance.sweep`) keeps every row's evaluation features (``features.safetensors``). Here they
are scored against another reference — ``all``: every real image, the usual practice for FID (the statistics of the
whole data set; less finite-sample bias than the disjoint half a sweep uses by default, and the bootstrap resamples
the real images too) or ``split``: the class-stratified half a sweep uses, which reproduces the numbers of a sweep
made by this version — and several runs are set side by side. Runs sampled on the same seeds and n are paired sample
for sample, so every row is resampled on the same indices and a gap between rows of different runs gets its paired
spread (:func:`.sweep.paired_summary`). Runs of the same rows sampled on disjoint seed ranges pool into one larger
sample set (``RUN+RUN2``): a large n can be sampled in parts, one session at a time.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from ..data import load_dataset
from ..metrics import load_featurenet
from ..metrics.scores import reference_sets, score_features
from ..utils import io
from .sweep import PARTS
from .sweep_rows import CSV_FIELDS, Row, plot_sweep, save_rows, summarize, write_table


def read_run(run: str | Path) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """(sweep.csv lines, features by row key 'sampling|setting|w=W', sweep.json or {} for runs older than it)."""
    run = Path(run)
    for name in ("sweep.csv", "features.safetensors"):
        if not (run / name).is_file():
            raise KakusanError(f"{run} is not a finished guidance sweep (no {name})")
    with open(run / "sweep.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    features = io.load_tensors(run / "features.safetensors")
    meta = io.read_json(run / "sweep.json") if (run / "sweep.json").is_file() else {}
    for line in lines:
        if row_key(line) not in features:
            raise KakusanError(f"{run}: no stored features for row {row_key(line)!r}")
    return lines, features, meta


def row_key(line: dict) -> str:
    return f"{line['sampling']}|{line['setting']}|w={float(line['w']):g}"


def pool_parts(spec: str | Path) -> list[Path]:
    """The sweep folders of one argument: a folder, or several joined by '+' (a path that exists is one folder)."""
    return [Path(spec)] if Path(spec).exists() or "+" not in str(spec) else [Path(p) for p in str(spec).split("+")]


def read_pool(parts: list[Path]) -> tuple[list[dict], dict[str, torch.Tensor], list[tuple[int, int]]]:
    """Runs of the same rows sampled on disjoint seed ranges, pooled into one sample set per row: (lines with the
    pooled class accuracy, concatenated features, the (first seed, n) of each part)."""
    loaded = sorted((read_run(p) for p in parts), key=lambda run: run[2].get("seed", 0))  # any order of the parts
    ranges = [(meta.get("seed", 0), len(next(iter(f.values())))) for _, f, meta in loaded]  # pre-sweep.json: seed 0
    if any(set(f) != set(loaded[0][1]) for _, f, _ in loaded):
        raise KakusanError(f"{'+'.join(map(str, parts))}: only runs of the same rows can be pooled")
    if any(a + n > b for (a, n), (b, _) in zip(ranges, ranges[1:])):
        raise KakusanError(f"{'+'.join(map(str, parts))}: pooled runs need disjoint seed ranges (got {ranges})")
    features = {k: torch.cat([f[k] for _, f, _ in loaded]) for k in loaded[0][1]}
    acc = {row_key(line): 0.0 for line in loaded[0][0]}
    for (lines, _, _), (_, n) in zip(loaded, ranges):
        for line in lines:
            acc[row_key(line)] += float(line["class_acc"]) * n / sum(n for _, n in ranges)
    lines = [{**line, "class_acc": f"{acc[row_key(line)]:.6g}"} for line in loaded[0][0]]
    return lines, features, ranges


def rescore(runs: list[str | Path], out: str | Path, *, reference: str = "all", bootstrap: int = 100,
            spread: str = "auto", progress: bool = True) -> dict:
    """Every row of every run scored against ``reference``; settings are named RUN/SETTING when there are several
    runs. ``spread``: what the bootstrap resamples (:func:`~kakusan.metrics.scores.reference_sets`). Writes
    sweep.csv, sweep.png, bootstrap.safetensors and sweep.json to ``out`` (never into a run)."""
    pools, out = [pool_parts(r) for r in runs], Path(out)
    if not pools:
        raise KakusanError("give at least one sweep folder")
    if bootstrap < 2:
        raise KakusanError(f"the FD spread needs at least 2 bootstrap resamplings (got {bootstrap})")
    if any(out.resolve() == p.resolve() for parts in pools for p in parts):
        raise KakusanError(f"{out} is one of the runs; write the rescored sweep to a folder of its own")
    if (out / "features.safetensors").exists() or (out / PARTS).exists():
        raise KakusanError(f"{out} holds a sampled sweep (its scores must stay those of its own samples); write the "
                           "rescored sweep to a folder of its own (nothing was touched)")
    names = ["+".join(p.name for p in parts) for parts in pools]
    if len(set(names)) < len(names):
        raise KakusanError("the runs' folder names name their settings: give runs distinct folder names")
    loaded = {name: read_pool(parts) for name, parts in zip(names, pools)}
    seeds = {tuple(ranges) for _, _, ranges in loaded.values()}
    if len(seeds) != 1:
        raise KakusanError(f"the runs were sampled on different (seed, n) {sorted(seeds)}; "
                           "only runs on the same seeds can be set side by side")
    (ranges,) = seeds
    n, seed = sum(k for _, k in ranges), ranges[0][0]
    data = load_dataset("mnist")
    ref = reference_sets(load_featurenet(), data.images, n, seed, reference, data.labels, spread)
    rows, lines_out = [], []
    jobs = [(r, line) for r, (lines, _, _) in loaded.items() for line in lines]
    for run, line in tqdm(jobs, desc="rescoring", disable=not progress):
        s = score_features(ref, loaded[run][1][row_key(line)], seed, bootstrap)
        name = line["setting"] if len(pools) == 1 else f"{run}/{line['setting']}"
        rows.append(Row(line["sampling"], name, float(line["w"]), s["fd"], s["fd_std"], s["precision"], s["recall"],
                        float(line["class_acc"]), s["floor"]["fd"], s["fd_boot"]))
        lines_out.append({**line, "setting": name, **{k: f"{getattr(rows[-1], k):.6g}"
                                                      for k in ("fd", "fd_std", "precision", "recall", "floor_fd")}})
    write_table(out / "sweep.csv", [[line[k] for k in CSV_FIELDS] for line in lines_out])
    save_rows(rows, "fd_boot", out / "bootstrap.safetensors")
    io.write_json({"runs": [str(r) for r in runs], "n": n, "seed": seed, "seed_ranges": [list(r) for r in ranges],
                   "reference": reference, "bootstrap": bootstrap, "spread": ref["spread"],
                   "floor": {"fd": ref["floor"]["fd"], "n": ref["floor"]["n"]}},
                  out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", n, reference)
    return {**summarize(rows), "n": n, "csv": str(out / "sweep.csv"), "plot": str(out / "sweep.png")}
