"""Training speed of the one-step student in fp32 and under bf16 autocast, side by side in one run.

    python bench/distill_speed.py --pairs PAIRS [--rounds 2] [--kimg-gan 0.256] [--kimg-perceptual 0.768]

Two objectives — perceptual only (``--gan-weight 0``) and perceptual + the paper's multi-scale discriminator with
noise, R1 as its own step and mix-and-match on half the batch (the full row of the ablation) — each trained from the
teacher for a few hundred images in fp32 and in bf16, rounds alternating so that machine noise hits both alike. The
speed of a leg is images per second between its second and its last ``metrics.jsonl`` row (start-up, the first
steps and the final checkpoint excluded). Printed: the CPU, whether it has AMX-BF16, and per objective the median
img/s of each precision and their ratio.

Last line, one JSON object: cpu, amx_bf16, auto (what ``--precision auto`` picks here), rounds, objectives
({name: {fp32_img_s, bf16_img_s, bf16_over_fp32}}).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from kakusan.distill.config import DistillConfig
from kakusan.distill.train import train_student
from kakusan.utils.precision import cpu_has_amx_bf16, cpu_name, resolve_precision

FULL_D = dict(gan_weight=0.3, adaptive_gan_weight=True, disc_scales="paper", r1_gamma=1.0, r1_separate=True,
              mix_fraction=0.5, disc_noise=True)


def leg_speed(pairs: str, kimg: float, precision: str, **options) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = DistillConfig(pairs=pairs, kimg=kimg, precision=precision, log_kimg=kimg / 8, sample_kimg=1e3,
                               checkpoint_kimg=1e3, **options)
        train_student(config, Path(tmp) / "run", progress=False)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        rows = [r for r in map(json.loads, lines) if "wall_s" in r and "kimg" in r and "stop" not in r]
    first, last = rows[1], rows[-1]
    return 1000 * (last["kimg"] - first["kimg"]) / (last["wall_s"] - first["wall_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kimg-gan", type=float, default=0.256)
    ap.add_argument("--kimg-perceptual", type=float, default=0.768)
    args = ap.parse_args()
    objectives = {"perceptual": ({"gan_weight": 0.0}, args.kimg_perceptual), "perceptual+gan": (FULL_D, args.kimg_gan)}
    speeds = {(name, p): [] for name in objectives for p in ("fp32", "bf16")}
    print(f"{cpu_name()}, AMX-BF16: {cpu_has_amx_bf16()}, --precision auto -> {resolve_precision('auto')}", flush=True)
    for r in range(args.rounds):
        for name, (options, kimg) in objectives.items():
            for precision in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
                speeds[name, precision].append(leg_speed(args.pairs, kimg, precision, **options))
                print(f"round {r}: {name} {precision} {speeds[name, precision][-1]:.1f} img/s", flush=True)
    out = {}
    for name in objectives:
        fp32, bf16 = (statistics.median(speeds[name, p]) for p in ("fp32", "bf16"))
        out[name] = {"fp32_img_s": round(fp32, 2), "bf16_img_s": round(bf16, 2), "bf16_over_fp32": round(bf16 / fp32, 3)}
        print(f"{name}: fp32 {fp32:.1f} img/s, bf16 {bf16:.1f} img/s, bf16/fp32 x{bf16 / fp32:.2f}")
    print(json.dumps({"cpu": cpu_name(), "amx_bf16": cpu_has_amx_bf16(), "auto": resolve_precision("auto"),
                      "rounds": args.rounds, "objectives": out}))


if __name__ == "__main__":
    main()
