"""The shipped claims re-checked under every judge of the panel: paired FD ratios and gaps with their spreads, and
the panel's verdict on each claim.

    python bench/judges.py --sets runs/claims [--bootstrap 100] [--csv docs/judges-claims.csv]

``--sets`` holds `kakusan sample` folders drawn on the same seeds (600,000 + i, class-cycled), made by:

    S="--seed 600000 --no-progress"
    kakusan sample mnist-s --ema 0.1 --n 5000 $S --out SETS/d-none                       # 4 NFE, the default
    kakusan sample mnist-s --guide mnist-s-guide --guide-ema 0.25 --ema 0.1 --guidance 1.2 --n 5000 $S --out SETS/d-ag
    kakusan sample mnist-s --guide uncond --guidance 1.2 --interval 1,100 --ema 0.1 --n 5000 $S --out SETS/d-cfg
    AG2="--guide mnist-s-guide --guide-ema 0.25 --ema 0.1 --guidance 2 --interval 0,1"
    kakusan sample mnist-s $AG2 --n 5000 $S --out SETS/d-ag2
    kakusan sample mnist-s --guide uncond --guidance 1.2 --interval 0,3 --ema 0.1 --n 5000 $S --out SETS/d-cfg2
    H="--sampler heun --nfe 35 --n 5000 $S"
    kakusan sample mnist-s --ema 0.1 $H --out SETS/h-none
    kakusan sample mnist-s --guide mnist-s-guide --guide-ema 0.25 --ema 0.1 --guidance 1.4 --interval 0.5,20 $H \
        --out SETS/h-ag
    kakusan sample mnist-s --guide uncond --guidance 1.4 --ema 0.1 $H --out SETS/h-cfg
    kakusan sample mnist-s $AG2 $H --out SETS/h-ag2
    kakusan sample mnist-s --guide mnist-xs-guide --guidance 1.5 --sampler heun --nfe 35 --n 1000 $S --out SETS/teacher
    kakusan sample mnist-s-1step --n 2000 $S --out SETS/student

A claim "A beats B" is scored on the first n samples of both sets (the same seeds), FD against all 5,000 real digits
with the spread that resamples the real digits too; it holds only if every judge puts A ahead by more than one paired
spread. Each set is also given its FD over each judge's real-vs-real floor at its n and the panel's mean of those.
A claim whose set is missing is skipped. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kakusan.data import load_dataset, load_image_set
from kakusan.metrics import load_panel, verdict
from kakusan.metrics.panel import pair_rows, panel_references, panel_scores
from kakusan.utils import io

# (what is claimed, A, B, n): "A beats B" on the first n samples of each
CLAIMS = [
    ("autoguidance (w 1.2, every step: guidance.json at 1aa5df3) beats no guidance, 4 NFE", "d-ag", "d-none", 5000),
    ("autoguidance (w 1.2, every step) beats CFG (w 1.2, (1, 100]), 4 NFE", "d-ag", "d-cfg", 5000),
    ("CFG (w 1.2, sigma in (1, 100]) beats no guidance, 4 NFE", "d-cfg", "d-none", 5000),
    ("autoguidance (w 2, last step only: sigma <= 1) beats no guidance, 4 NFE", "d-ag2", "d-none", 5000),
    ("autoguidance (w 2, sigma <= 1) beats CFG (w 1.2, (1, 100]), 4 NFE", "d-ag2", "d-cfg", 5000),
    ("autoguidance (w 2, sigma <= 1) beats CFG at its panel best (w 1.2, sigma <= 3), 4 NFE", "d-ag2", "d-cfg2", 5000),
    ("CFG at its panel best (w 1.2, sigma <= 3) beats no guidance, 4 NFE", "d-cfg2", "d-none", 5000),
    ("autoguidance (w 1.4, (0.5, 20]) beats no guidance, Heun 35", "h-ag", "h-none", 5000),
    ("autoguidance (w 1.4, (0.5, 20]) beats CFG (w 1.4), Heun 35", "h-ag", "h-cfg", 5000),
    ("CFG (w 1.4) beats no guidance, Heun 35", "h-cfg", "h-none", 5000),
    ("autoguidance (w 2, sigma <= 1) beats no guidance, Heun 35", "h-ag2", "h-none", 5000),
    ("autoguidance (w 2, sigma <= 1) beats CFG (w 1.4), Heun 35", "h-ag2", "h-cfg", 5000),
    ("the shipped 4-NFE sampler (DPM-Solver++(3M), optimised grid) beats Heun 35 (unguided)", "d-none", "h-none",
     5000),
    ("the teacher (w 1.5, Heun 35) beats its one-step student mnist-s-1step", "teacher", "student", 1000),
]
FIELDS = ("claim", "a", "b", "n", "judge", "fd_a", "fd_b", "ratio", "ratio_std", "gap", "gap_std", "z", "verdict")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="runs/claims", help="folder of the sample folders named in CLAIMS")
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--spread", default="both", help="both (real digits resampled too) or samples")
    ap.add_argument("--csv", help="write one row per claim and judge here")
    ap.add_argument("--markdown", help="write the claims table (FD ratio A / B ± paired spread per judge) here")
    args = ap.parse_args()

    panel = load_panel()
    data = load_dataset("mnist")
    sets = Path(args.sets)
    present = [c for c in CLAIMS if all((sets / s / "samples.npz").is_file() for s in c[1:3])]
    for claim in CLAIMS:
        if claim not in present:
            print(f"skipped (no samples): {claim[0]}")
    images, scored, floors = {}, {}, {}  # each set read once; each (set, n) scored once under every judge
    for n in sorted({c[3] for c in present}, reverse=True):
        refs = panel_references(panel, data.images, n, 0, "all", data.labels, args.spread)
        floors[n] = {j.name: refs[j.name]["floor"]["fd"] for j in panel}
        print(f"floors at n = {n}: " + ", ".join(f"{j} {f:.4f}" for j, f in floors[n].items()))
        for name in sorted({s for c in present if c[3] == n for s in c[1:3]}):
            x, y = images.setdefault(name, load_image_set(sets / name, 1))
            scored[name, n] = panel_scores(panel, x[:n], data.images, y[:n], bootstrap=args.bootstrap, refs=refs,
                                           keep=True)
            over = {row["judge"]: row["fd_over_floor"] for row in scored[name, n]}
            print(f"scored {name} at n = {n}: FD / floor " + ", ".join(f"{j} {v:.2f}" for j, v in over.items())
                  + f"; panel mean {sum(over.values()) / len(over):.3f}", flush=True)
    lines, summary = [], []
    for claim, a, b, n in present:
        rows = pair_rows({a: scored[a, n], b: scored[b, n]}, a, b)
        decided = verdict({row["judge"]: row["z"] for row in rows})
        print(f"\n{claim} (A = {a}, B = {b}, n = {n}): {decided}")
        print(f"  {'judge':20}{'FD A':>9}{'FD B':>9}{'A / B':>8}{'±':>7}{'B − A':>9}{'±':>8}{'z':>7}"
              f"{'acc A':>7}{'acc B':>7}")
        for row in rows:
            acc = {s: next(x["class_acc"] for x in scored[s, n] if x["judge"] == row["judge"]) for s in (a, b)}
            accs = "".join(f"{acc[s]:7.3f}" if acc[s] is not None else f"{'-':>7}" for s in (a, b))
            print(f"  {row['judge']:20}{row['fd_a']:9.4f}{row['fd_b']:9.4f}{row['ratio']:8.3f}{row['ratio_std']:7.3f}"
                  f"{row['gap']:9.4f}{row['gap_std']:8.4f}{row['z']:7.2f}{accs}", flush=True)
            lines.append({"claim": claim, "n": n, **row, "verdict": decided})
        summary.append({"claim": claim, "a": a, "b": b, "n": n, "verdict": decided,
                        "ratio": {row["judge"]: [round(row["ratio"], 4), round(row["ratio_std"], 4)]
                                  for row in rows},
                        "z": {row["judge"]: round(row["z"], 2) for row in rows}})
    if args.markdown:
        judges = [j.name for j in panel]
        table = ["| claim: A beats B | n | " + " | ".join(f"`{j}`" for j in judges) + " | verdict |",
                 "|---|---|" + "---|" * len(judges) + "---|"]
        for c in summary:
            cells = [f"{c['ratio'][j][0]:.2f} ± {c['ratio'][j][1]:.2f}" for j in judges]
            table.append(f"| {c['claim']} | {c['n']:,} | " + " | ".join(cells) + f" | **{c['verdict']}** |")
        io.write_text("\n".join(table) + "\n", args.markdown)
    if args.csv:
        io.write_csv(FIELDS, [[line[k] for k in FIELDS] for line in lines], args.csv)
    panel_mean = {f"{name}@{n}": round(sum(row["fd_over_floor"] for row in rows) / len(rows), 4)
                  for (name, n), rows in scored.items()}
    print(json.dumps({"spread": args.spread, "bootstrap": args.bootstrap, "reference": "all",
                      "floors": {str(n): f for n, f in floors.items()}, "panel_mean_fd_over_floor": panel_mean,
                      "claims": summary}))


if __name__ == "__main__":
    main()
