"""The gate of the shape scenes: appearance alone must not segment them.

    python bench/shape_gate.py [--data shape-scenes-heldout] [--first 0] [--n 200] [--k 6]

Per-image protocol: pixel k-means and texture k-means against the floor of one segment per scene. Class-level
protocol: the same two (each segment described by its own mean features) against chance — the same segments put into
clusters at random (mean of 5 draws). No model is involved. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from kakusan.data import load_dataset
from kakusan.data.shapes import class_map
from kakusan.segment.metrics import (class_level, matched_iou, pixel_kmeans, position_grid, texture_features,
                                     texture_kmeans)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="shape-scenes-heldout")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=6)
    args = ap.parse_args()
    ds = load_dataset(args.data, image_size=args.image_size)
    scenes = range(args.first, args.first + args.n)
    gts = [ds.segments[i].long() for i in scenes]
    classes = [class_map(ds.tokens[i], ds.segments[i]) for i in scenes]
    n_classes = 1 + len(ds.class_names)
    pos = position_grid(*gts[0].shape)
    bank = [texture_features(ds.images[i]) for i in scenes]  # computed once: for the clusters and the class level
    rows = {
        "pixel k-means": ([pixel_kmeans(ds.images[i], args.k) for i in scenes],
                          [torch.cat([ds.images[i], pos]) for i in scenes]),
        "texture k-means": ([texture_kmeans(ds.images[i], args.k, features=f) for i, f in zip(scenes, bank)],
                            [torch.cat([f.float(), pos]) for f in bank]),
    }
    floor = float(np.mean([matched_iou(torch.zeros_like(g), g) for g in gts]))
    out = {"data": args.data, "first": args.first, "n": args.n, "k": args.k, "one_segment_per_image": floor}
    print(f"{args.data} scenes {args.first}..{args.first + args.n - 1}, K = {args.k}")
    print(f"  one segment per scene (per-image floor): {floor:.4f}")
    for name, (preds, feats) in rows.items():
        per = float(np.mean([matched_iou(p, g) for p, g in zip(preds, gts)]))
        cl = class_level(preds, feats, classes, n_classes)["miou"]
        chance = []
        for draw in range(5):
            g = torch.Generator().manual_seed(draw)
            rand = [torch.randn(8, int(p.max()) + 1, generator=g)[:, p] for p in preds]  # a random vector a segment
            chance.append(class_level(preds, rand, classes, n_classes, seed=draw)["miou"])
        print(f"  {name:16} per-image {per:.4f} (floor {floor:.4f})   class-level {cl:.4f} "
              f"(chance {np.mean(chance):.4f} ± {np.std(chance):.4f})")
        out[name] = {"per_image": per, "class_level": cl, "class_chance": float(np.mean(chance)),
                     "class_chance_std": float(np.std(chance))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
