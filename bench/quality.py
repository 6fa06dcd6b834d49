"""Sample quality of a (shipped) model at several sampler settings, next to the real-vs-real floor.

    python bench/quality.py [--model mnist-s] [--n 1000]

For Heun at 7 / 15 / 35 NFE and DDIM at 50 steps: FD, KID, precision, recall (shipped MNIST evaluation network) and
class accuracy of n class-cycled samples, and seconds per image; below each, the FD and FD / floor under every judge of
the panel (``judges`` in the JSON). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.metrics import evaluate, load_featurenet, load_panel
from kakusan.metrics.panel import panel_summary, summary_line
from kakusan.metrics.featurenet import SHIPPED
from kakusan.models import model_folder
from kakusan.utils import io

SETTINGS = {"heun7": ("heun", 4), "heun15": ("heun", 8), "heun35": ("heun", 18), "ddim50": ("ddim", 50)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist-s")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ema", default="auto")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 | auto (this bench's figures are fp32's)")
    args = ap.parse_args()

    model = Denoiser.from_pretrained(model_folder(args.model), ema=args.ema)
    precision = model.set_precision(args.precision)
    net, judges = load_featurenet(), load_panel()
    real = load_dataset("mnist").images
    labels = torch.arange(args.n) % 10
    result = {"model": args.model, "weights": model.info.get("weights"), "n": args.n, "precision": precision,
              "featurenet_acc": io.read_json(SHIPPED / "card.json")["held_out_accuracy"]}
    for name in args.settings.split(","):
        sampler, steps = SETTINGS[name]
        t0 = time.perf_counter()
        images = generate(model, range(args.n), cond=labels, sampler=sampler, steps=steps, progress=False)
        seconds = time.perf_counter() - t0
        r = evaluate(net, images, real, labels)
        panel = panel_summary(judges, images, real, labels)
        result["floor_fd"] = r["floor"]["fd"]
        result["floor"] = r["floor"]
        result[name] = {k: round(r[k], 5) for k in ("fd", "kid", "precision", "recall", "class_acc")}
        result[name]["fd_over_floor"] = round(r["fd_over_floor"], 3)
        result[name]["sec_per_image"] = round(seconds / args.n, 4)
        result[name]["judges"] = panel
        print(f"{name:8} FD {r['fd']:8.3f} (floor {r['floor']['fd']:.3f}, x{r['fd_over_floor']:.2f})  "
              f"KID {r['kid']:.4f}  P {r['precision']:.3f}  R {r['recall']:.3f}  acc {r['class_acc']:.3f}  "
              f"{seconds / args.n:.3f} s/img", flush=True)
        print(f"         {summary_line(panel)}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
