"""The guide search scored by the whole judge panel instead of one feature net: every guide x w x interval on the
same seeds and class-cycled labels, FD under each judge over that judge's own real-vs-real floor, the panel's mean of
those, and whether the setting beats no guidance under *every* judge beyond the paired spread.

    python bench/judges_guide.py --guide mnist-s-guide@0.25 --guide uncond --w 1.1,1.2,1.5,2 \
        --interval none --interval 0.5,20 --n 2000 [--sampling default] [--seed 0]

Samples of mnist-s (main EMA 0.1), against all 5,000 real digits, spread with the real digits resampled too. Rows are
sorted by the panel mean of FD / floor. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.samplers import steps_for_nfe
from kakusan.guidance import guide_from_spec
from kakusan.guidance.sweep import resolve_sampling
from kakusan.metrics import load_panel, verdict
from kakusan.metrics.panel import panel_references, panel_scores, pair_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist-s")
    ap.add_argument("--ema", default="0.1")
    ap.add_argument("--guide", action="append", default=[], help="GUIDE[@EMA] or uncond; repeat")
    ap.add_argument("--w", default="1.2,1.5,2")
    ap.add_argument("--interval", action="append", default=[], help="none or LO,HI; repeat")
    ap.add_argument("--sampling", default="default")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=100)
    args = ap.parse_args()

    main_model = Denoiser.from_pretrained(args.model, ema=args.ema)
    sampler, nfe, schedule = resolve_sampling(main_model, args.sampling)
    labels = torch.arange(args.n) % 10
    panel, data = load_panel(), load_dataset("mnist")
    refs = panel_references(panel, data.images, args.n, args.seed, "all", data.labels, "both")
    intervals = [None if s == "none" else tuple(float(v) for v in s.split(",")) for s in (args.interval or ["none"])]
    settings = [("none", None, "auto", 1.0, None)]
    for spec, w, iv in itertools.product(args.guide, [float(v) for v in args.w.split(",")], intervals):
        guide, _, g_ema = spec.partition("@")
        name = f"{guide}{'@' + g_ema if g_ema else ''} w{w:g}" + (f" [{iv[0]:g},{iv[1]:g}]" if iv else "")
        settings.append((name, guide, g_ema or "auto", w, iv))

    rows = {}
    for name, guide, g_ema, w, iv in settings:
        t0 = time.perf_counter()
        hook = guide_from_spec(main_model, guide, w, iv, g_ema)
        x = generate(main_model, range(args.seed, args.seed + args.n), cond=labels, sampler=sampler,
                     steps=steps_for_nfe(sampler, nfe), schedule=schedule, make_denoise=hook, progress=False)
        x = x.clamp(-1, 1)
        rows[name] = panel_scores(panel, x, data.images, labels, bootstrap=args.bootstrap, seed=args.seed, refs=refs,
                                  keep=True)
        print(f"{name:34} " + "  ".join(f"{r['judge'][:10]} {r['fd_over_floor']:6.2f}" for r in rows[name])
              + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    table = []
    for name in rows:
        mean = sum(r["fd_over_floor"] for r in rows[name]) / len(rows[name])
        pairs = pair_rows(rows, name, "none") if name != "none" else []
        z = {p["judge"]: p["z"] for p in pairs}
        table.append({"setting": name, "panel_mean_fd_over_floor": mean,
                      "fd": {r["judge"]: r["fd"] for r in rows[name]},
                      "fd_over_floor": {r["judge"]: r["fd_over_floor"] for r in rows[name]},
                      "z_vs_none": z, "beats_none": verdict(z) if z else "-",
                      "class_acc": rows[name][0]["class_acc"]})
    table.sort(key=lambda t: t["panel_mean_fd_over_floor"])
    judges = [j.name for j in panel]
    print(f"\n{'setting':34}{'panel mean':>11}" + "".join(f"{j[:12]:>13}" for j in judges) + "  beats none?")
    for t in table:
        cells = "".join(f"{t['fd_over_floor'][j]:7.2f}" + (f" z{t['z_vs_none'][j]:+5.1f}" if t["z_vs_none"] else
                                                            f"{'':6}") for j in judges)
        print(f"{t['setting']:34}{t['panel_mean_fd_over_floor']:11.3f}{cells}  {t['beats_none']}")
    print(json.dumps({"model": args.model, "ema": args.ema, "sampling": args.sampling, "n": args.n,
                      "seed": args.seed, "rows": table}))


if __name__ == "__main__":
    main()
