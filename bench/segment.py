"""EmerDiff on held-out scenes against the baselines that could explain its score, under two protocols.

    python bench/segment.py --model runs/shape-scenes-s --data shape-scenes-heldout [--first 0] [--n 200]
                            [--set smooth=3 --set steps=1 ...] [--row "lam_rel=0.5" --row "start=inversion" ...]
                            [--figure docs/images/segment-shapes.png]

Scenes ``first .. first + n - 1`` of a held-out scene set (test scenes: 0-199; validation scenes, for choosing
settings: 500 on). Every method predicts segments per scene; rows:
* EmerDiff with ``--set`` settings (:class:`kakusan.segment.EmerDiffSettings`);
* naive bilinear upsampling of the same k-means masks (the paper's baseline), and the same **with EmerDiff's
  smoothing** (Gaussian of ``smooth`` px on the upsampled masks before the argmax);
* k-means on raw pixels (colour + position), k-means on a texture filter bank, Otsu threshold + connected
  components, and one segment for the whole scene (the floor of the per-image protocol).
Protocols (:mod:`kakusan.segment.metrics`): **per image** (Hungarian matching of predicted to ground-truth segments in
each scene: grouping) and **class level** (each segment's mean feature — the UNet's queries for the diffusion methods,
a method's own features for the others — clustered over the whole set into as many clusters as classes, matched once).
Every gap is EmerDiff minus the row, in points, ± the std of a paired bootstrap over scenes (1,000 resamples; class
level: 200, with the matching held fixed). ``--row`` adds EmerDiff with a setting changed, against the base run.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
import typing

import numpy as np
import torch

from kakusan.data import load_dataset
from kakusan.data.shapes import class_map
from kakusan.diffusion import Denoiser
from kakusan.models import model_folder
from kakusan.segment import EmerDiffSettings, matched_iou, pixel_kmeans, segment_image
from kakusan.segment.metrics import (class_level, class_miou, position_grid, texture_features, texture_kmeans,
                                     threshold_components)
from kakusan.segment.run import colour
from kakusan.utils.images import save_grid
from kakusan.utils.options import cli_fields


HINTS = {name: hint for name, (_, hint) in cli_fields(EmerDiffSettings).items()}


def parse_settings(pairs: list[str], base: dict) -> dict:
    """``base`` with ``key=value`` pairs applied, each value converted to its field's type."""
    out = dict(base)
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in HINTS:
            raise SystemExit(f"unknown setting {key!r}; settings: {', '.join(HINTS)}")
        kind = next((a for a in typing.get_args(HINTS[key]) if a is not type(None)), HINTS[key])
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def bootstrap(d: np.ndarray, reps: int = 1000, seed: int = 0) -> float:
    g = np.random.default_rng(seed)
    return float(np.std([d[g.integers(0, len(d), len(d))].mean() for _ in range(reps)]))


def class_gap(conf_a, match_a, conf_b, match_b, reps: int = 200, seed: int = 0) -> float:
    g = np.random.default_rng(seed)
    n = len(conf_a)
    diffs = []
    for _ in range(reps):
        idx = g.integers(0, n, n)
        diffs.append(class_miou(conf_a[idx], match_a) - class_miou(conf_b[idx], match_b))
    return float(np.std(diffs))


def position(image: torch.Tensor) -> torch.Tensor:
    """(C + 2, H, W): the image and its pixel positions, a baseline's own per-pixel features."""
    return torch.cat([image.float(), position_grid(*image.shape[-2:])])


def run_emerdiff(model, ds, scenes, settings):
    results, seconds = [], 0.0
    for i in scenes:
        t0 = time.perf_counter()
        results.append(segment_image(model, ds.images[i], ds.tokens[i], settings))
        seconds += time.perf_counter() - t0
    return results, seconds / len(scenes)


def score(preds, feats, gts, classes, n_classes):
    per = np.array([matched_iou(p, g) for p, g in zip(preds, gts)])
    cl = class_level(preds, feats, classes, n_classes) if feats is not None else None
    return per, cl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digit-scenes-s", help="a shipped name or a run folder, e.g. runs/shape-scenes-s")
    ap.add_argument("--data", default="digit-scenes-heldout", help="digit-scenes-heldout | shape-scenes-heldout")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="a base setting, key=value")
    ap.add_argument("--row", action="append", default=[], help="EmerDiff with settings changed: k=v,k=v")
    ap.add_argument("--figure", help="PNG: scene | ground truth | naive (smoothed) | EmerDiff")
    args = ap.parse_args()

    base_dict = parse_settings(args.set, EmerDiffSettings().to_dict())
    rows = [parse_settings(r.split(","), base_dict) for r in args.row]  # checked before any work
    model = Denoiser.from_pretrained(model_folder(args.model))
    ds = load_dataset(args.data, image_size=model.image_shape[-1])
    scenes = range(args.first, args.first + args.n)
    gts = [ds.segments[i].long() for i in scenes]
    classes = [class_map(ds.tokens[i], ds.segments[i]) for i in scenes]
    n_classes = 1 + len(ds.class_names)
    base = EmerDiffSettings(**base_dict)
    print(f"{args.model} on {args.data} scenes {args.first}..{args.first + args.n - 1}; settings {base.to_dict()}",
          flush=True)
    results, sec = run_emerdiff(model, ds, scenes, base)
    k = base.k
    qmaps = [r["queries"].T.reshape(-1, *r["kmeans"].shape) for r in results]
    methods = {"emerdiff": ([r["labels"] for r in results], qmaps),
               "naive upsampling": ([r["naive"] for r in results], qmaps),
               "naive upsampling, same smoothing": ([r["naive_smoothed"] for r in results], qmaps)}
    pk = [pixel_kmeans(ds.images[i], k) for i in scenes]
    methods["pixel k-means"] = (pk, [position(ds.images[i]) for i in scenes])
    bank = [texture_features(ds.images[i]) for i in scenes]  # computed once: for the clusters and the class level
    methods["texture k-means"] = ([texture_kmeans(ds.images[i], k, features=f) for i, f in zip(scenes, bank)],
                                  [torch.cat([f.float(), position_grid(*f.shape[-2:])]) for f in bank])
    methods["threshold + components"] = ([threshold_components(ds.images[i]) for i in scenes],
                                         [position(ds.images[i]) for i in scenes])
    methods["one segment"] = ([torch.zeros_like(g) for g in gts], None)
    scored = {name: score(p, f, gts, classes, n_classes) for name, (p, f) in methods.items()}
    e_per, e_cl = scored["emerdiff"]
    out = {"model": args.model, "data": args.data, "first": args.first, "n": args.n, "settings": base.to_dict(),
           "sec_per_image": sec, "rows": {}, "changes": []}
    print(f"{'method':34} {'per-image mIoU':>15} {'EmerDiff - row':>16} {'class mIoU':>11} {'EmerDiff - row':>16}")
    for name, (per, cl) in scored.items():
        row = {"per_image": float(per.mean())}
        gap = "" if name == "emerdiff" else f"{100 * (e_per - per).mean():+.2f} ± {100 * bootstrap(e_per - per):.2f}"
        row["gap_points"] = None if name == "emerdiff" else 100 * float((e_per - per).mean())
        row["gap_std"] = None if name == "emerdiff" else 100 * bootstrap(e_per - per)
        cl_text, cl_gap = "", ""
        if cl is not None:
            row["class_level"], row["per_class"] = cl["miou"], cl["per_class"]
            cl_text = f"{cl['miou']:.4f}"
            if name != "emerdiff":
                std = class_gap(e_cl["confusion"], np.array(e_cl["match"]), cl["confusion"], np.array(cl["match"]))
                row["class_gap_points"], row["class_gap_std"] = 100 * (e_cl["miou"] - cl["miou"]), 100 * std
                cl_gap = f"{100 * (e_cl['miou'] - cl['miou']):+.2f} ± {100 * std:.2f}"
        print(f"{name:34} {per.mean():15.4f} {gap:>16} {cl_text:>11} {cl_gap:>16}", flush=True)
        out["rows"][name] = row
    print(f"EmerDiff: {sec:.2f} s per scene", flush=True)
    for change, settings in zip(args.row, rows):
        res, s = run_emerdiff(model, ds, scenes, EmerDiffSettings(**settings))
        per = np.array([matched_iou(r["labels"], g) for r, g in zip(res, gts)])
        naive = np.array([matched_iou(r["naive_smoothed"], g) for r, g in zip(res, gts)])
        cl = class_level([r["labels"] for r in res], [r["queries"].T.reshape(-1, *r["kmeans"].shape) for r in res],
                         classes, n_classes)
        d = per - e_per
        print(f"  {change:40} per-image {per.mean():.4f} (vs base {100 * d.mean():+.2f} ± {100 * bootstrap(d):.2f}; "
              f"vs its naive+smoothing {100 * (per - naive).mean():+.2f} ± {100 * bootstrap(per - naive):.2f})  "
              f"class {cl['miou']:.4f}  {s:.2f} s/scene", flush=True)
        out["changes"].append({"change": change, "per_image": float(per.mean()), "vs_base_points": 100 * d.mean(),
                               "vs_base_std": 100 * bootstrap(d), "vs_naive_smoothed_points": 100 * (per - naive).mean(),
                               "vs_naive_smoothed_std": 100 * bootstrap(per - naive), "class_level": cl["miou"],
                               "sec_per_image": s})
    if args.figure:
        tiles = []
        for j in range(min(8, len(gts))):
            tiles += [ds.images[scenes[j]], _rgb(gts[j]), _rgb(results[j]["naive_smoothed"]), _rgb(results[j]["labels"])]
        tiles = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in tiles]
        save_grid(torch.stack(tiles), args.figure, nrow=4, scale=4,
                  col_labels=["held-out scene", "ground truth", "naive+smooth", "EmerDiff"])
    print(json.dumps(out))


def _rgb(labels: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(colour(labels)).permute(2, 0, 1).float() / 127.5 - 1


if __name__ == "__main__":
    main()
