"""EmerDiff on held-out digit scenes: mIoU against naive upsampling and pixel k-means, with ablations.

    python bench/segment.py [--model digit-scenes-s] [--n 200] [--k 6] [--feature-layer auto] [--smooth 1] [--steps 5]
                            [--figure docs/images/segment-scenes.png]

Scenes: the first n of ``digit-scenes-heldout`` (digits the model never saw). Every method predicts K segments per
scene and is scored by the unsupervised protocol (Hungarian matching of predicted to ground-truth segments per image,
mean IoU over ground-truth segments, background included; :mod:`kakusan.segment.metrics`). Rows: EmerDiff with the
defaults, the naive bilinear upsampling of the same k-means masks (the paper's baseline), k-means on raw pixels
(intensity + position, the floor), then EmerDiff with one setting changed at a time (t_f, t_m, lambda, the modulated
layer — the feature layer itself instead of the third of its block —, attention replay off, the null condition instead
of the scene's sentence). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser
from kakusan.models import model_folder
from kakusan.segment import EmerDiffSettings, matched_iou, pixel_kmeans, segment_image
from kakusan.segment.run import colour
from kakusan.utils.images import save_grid


FEATURE_LAYER = object()  # ablation: modulate the feature layer itself instead of the third layer of its block


def run(model, ds, n, settings, use_tokens=True):
    scores, naive, seconds, results = [], [], 0.0, []
    for i in range(n):
        t0 = time.perf_counter()
        r = segment_image(model, ds.images[i], ds.tokens[i] if use_tokens else None, settings)
        seconds += time.perf_counter() - t0
        gt = ds.segments[i].long()
        scores.append(matched_iou(r["labels"], gt))
        naive.append(matched_iou(r["naive"], gt))
        results.append(r)
    return float(np.mean(scores)), float(np.mean(naive)), seconds / n, results, np.array(scores), np.array(naive)


def bootstrap_gap(a: np.ndarray, b: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and std of mean(a - b) over image resamplings (paired bootstrap)."""
    g = np.random.default_rng(seed)
    d = a - b
    means = [d[g.integers(0, len(d), len(d))].mean() for _ in range(reps)]
    return float(d.mean()), float(np.std(means))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digit-scenes-s")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--ablate-n", type=int, default=100, help="scenes per ablation row")
    ap.add_argument("--feature-layer", default="auto", help="cross-attention layer of the queries [auto: the paper's]")
    ap.add_argument("--smooth", type=float, default=EmerDiffSettings.smooth, help="Gaussian std of the difference maps")
    ap.add_argument("--steps", type=int, default=EmerDiffSettings.steps, help="DDIM steps from t_m to 0")
    ap.add_argument("--figure", help="PNG: scenes | ground truth | naive upsampling | EmerDiff")
    args = ap.parse_args()

    model = Denoiser.from_pretrained(model_folder(args.model))
    ds = load_dataset("digit-scenes-heldout", image_size=model.image_shape[-1])
    base = EmerDiffSettings(k=args.k, feature_layer=args.feature_layer, smooth=args.smooth, steps=args.steps)
    print(f"{args.model}: {args.n} held-out scenes, K = {args.k}", flush=True)
    miou, naive, sec, results, s_emer, s_naive = run(model, ds, args.n, base)
    pixel = np.array([matched_iou(pixel_kmeans(ds.images[i], args.k), ds.segments[i].long()) for i in range(args.n)])
    gap, gap_std = bootstrap_gap(s_emer, s_naive)
    print(f"  EmerDiff {miou:.4f}  naive upsampling {naive:.4f}  pixel k-means {pixel.mean():.4f}  "
          f"gap {100 * gap:+.2f} ± {100 * gap_std:.2f} points  {sec:.2f} s/image", flush=True)
    out = {"model": args.model, "n": args.n, "k": args.k, "settings": base.to_dict(),
           "emerdiff": {"miou": miou}, "naive_upsample": {"miou": naive}, "pixel_kmeans": {"miou": float(pixel.mean())},
           "gap_points": 100 * gap, "gap_std_points": 100 * gap_std, "sec_per_image": sec, "ablations": []}
    changes = [{"t_f": 50.0}, {"t_f": 200.0}, {"t_m": 100.0}, {"t_m": 481.0}, {"t_m": 681.0}, {"lam": 3.0},
               {"lam": 30.0}, {"mod_layer": FEATURE_LAYER}, {"replay": False}, {"null_condition": True}]
    changes = [{k: results[0]["feature_layer"] if v is FEATURE_LAYER else v for k, v in c.items()} for c in changes]
    m = min(args.ablate_n, args.n)
    ref_emer = s_emer[:m].mean() if m else float("nan")
    for change in changes if m > 0 else []:
        tokens = not change.get("null_condition", False)
        settings = EmerDiffSettings(**{**base.to_dict(), **{k: v for k, v in change.items() if k != "null_condition"}})
        a, b, s, _, sa, _ = run(model, ds, m, settings, use_tokens=tokens)
        d, d_std = bootstrap_gap(sa, s_emer[:m])
        print(f"  {json.dumps(change):28} EmerDiff {a:.4f} (defaults {ref_emer:.4f} on these {m}: "
              f"{100 * d:+.2f} ± {100 * d_std:.2f})  naive {b:.4f}", flush=True)
        out["ablations"].append({"change": change, "n": m, "miou": a, "naive_miou": b, "vs_default_points": 100 * d,
                                 "vs_default_std": 100 * d_std, "sec_per_image": s})
    if args.figure:
        rows = []
        for i in range(8):
            rows += [ds.images[i], _rgb(ds.segments[i].long()), _rgb(results[i]["naive"]), _rgb(results[i]["labels"])]
        grey = [r.expand(3, -1, -1) if r.shape[0] == 1 else r for r in rows]
        save_grid(torch.stack(grey), args.figure, nrow=4, scale=3,
                  col_labels=["held-out scene", "ground truth", "naive upsampling", "EmerDiff"])
    print(json.dumps(out))


def _rgb(labels: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(colour(labels)).permute(2, 0, 1).float() / 127.5 - 1


if __name__ == "__main__":
    main()
