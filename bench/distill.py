"""One-step distillation (Diffusion2GAN) against its teacher, side by side in one run.

    python bench/distill.py --pairs PAIRS [--mse RUN] [--lpips RUN] [--gan RUN] [--n 1000]

The teacher and its guidance are the pair set's (manifest.json). Rows: the teacher at 35 NFE (Heun), the teacher at
1, 2 and 4 NFE with its best few-step solver (Euler, Heun, DPM-Solver++(2M), chosen by FD), each given student at
1 NFE; columns FD / KID / precision / recall (shipped evaluation network, against all 5,000 MNIST digits, beside the
real-vs-real floor at the same n), class accuracy and images per second. Samples use seeds 1,000,000 + i (never a
training pair's seed), class-cycled. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.distill.pairs import ema_arg
from kakusan.guidance import guide_from_spec
from kakusan.metrics import evaluate, load_featurenet
from kakusan.models import model_folder
from kakusan.utils import io

SEED0 = 1_000_000
FEW_STEP = {1: [("euler", 1)], 2: [("euler", 2), ("dpmpp2m", 2)], 4: [("euler", 4), ("dpmpp2m", 4)]}
# Heun spends 2N - 1 evaluations: N = 1 is Euler, N = 2 costs 3; so at 4 NFE it is not on the list (3 is, below 4)
KEYS = ("fd", "kid", "precision", "recall", "class_acc")


def score(model, make_denoise, sampler, steps, n, net, real) -> dict:
    labels = torch.arange(n) % 10
    t0 = time.perf_counter()
    images = generate(model, range(SEED0, SEED0 + n), cond=model.cond_from_labels(labels), sampler=sampler,
                      steps=steps, make_denoise=make_denoise, progress=False).clamp(-1, 1)
    seconds = time.perf_counter() - t0
    r = evaluate(net, images, real, labels)
    row = {k: round(r[k], 5) for k in KEYS} | {"img_s": round(n / seconds, 2), "solver": f"{sampler} {steps} steps",
                                              "floor_fd": r["floor"]["fd"]}
    print(f"  {row['solver']:18} FD {row['fd']:8.3f}  KID {row['kid']:.4f}  P {row['precision']:.3f}  "
          f"R {row['recall']:.3f}  acc {row['class_acc']:.3f}  {row['img_s']:.1f} img/s", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", required=True)
    for name in ("mse", "lpips", "gan"):
        ap.add_argument(f"--{name}", help=f"run or model folder of the student trained with {name}")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--few-step", default="1,2,4", help="teacher NFE to test with the few-step solvers")
    args = ap.parse_args()

    m = io.read_json(f"{args.pairs}/manifest.json")
    teacher = Denoiser.from_pretrained(model_folder(m["teacher"]), ema=ema_arg(m["ema"]))
    guided = guide_from_spec(teacher, m["guide"], m["guidance"], tuple(m["interval"]) if m["interval"] else None,
                             ema_arg(m["guide_ema"]))
    net, real = load_featurenet(), load_dataset("mnist").images
    result = {"n": args.n, "pairs": args.pairs, "guide": m["guide"], "guidance": m["guidance"]}
    print(f"teacher {m['teacher']} (guide {m['guide']}, w {m['guidance']}), n = {args.n}")
    result["teacher35"] = score(teacher, guided, m["sampler"], m["steps"], args.n, net, real)
    for nfe in (int(k) for k in args.few_step.split(",")):
        rows = [score(teacher, guided, s, steps, args.n, net, real) for s, steps in FEW_STEP[nfe]]
        result[f"teacher{nfe}"] = min(rows, key=lambda r: r["fd"])
    for name in ("mse", "lpips", "gan"):
        path = getattr(args, name)
        if path:
            print(f"student ({name}): {path}")
            student = Denoiser.from_pretrained(model_folder(path))
            result[f"student_{name}"] = score(student, None, "onestep", 1, args.n, net, real)
    result["floor_fd"] = result["teacher35"]["floor_fd"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
