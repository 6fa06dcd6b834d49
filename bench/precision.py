"""Does bf16 sampling cost quality? mnist-s sampled in fp32 and under bf16 autocast on the same seeds, compared paired
under every judge of the panel (FD ratio bf16 / fp32 with its paired bootstrap spread), and the time each took.

    python bench/precision.py [--n 1000] [--settings default,heun35] [--out runs/precision]

``default`` is the model's own few-step sampler (4 NFE), ``heun35`` Heun with 35 network evaluations. bf16 is within
fp32's quality when every judge's gap lies inside its paired spread. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kakusan.metrics.sample_sets import compare_samples
from kakusan.sampling import sample_to_folder
from kakusan.utils.precision import cpu_has_amx_bf16, cpu_name

SETTINGS = {"default": {}, "heun35": {"sampler": "heun", "nfe": 35}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist-s")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=700_000, help="first seed (fresh: not used by the docs' other runs)")
    ap.add_argument("--settings", default="default,heun35")
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("runs/precision"))
    args = ap.parse_args()
    print(f"{cpu_name()} (AMX-BF16: {cpu_has_amx_bf16()}); {args.model}, n = {args.n}, seeds {args.seed}..", flush=True)
    result = {"cpu": cpu_name(), "amx_bf16": cpu_has_amx_bf16(), "model": args.model, "n": args.n, "settings": {}}
    for name in args.settings.split(","):
        sets, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            folder = args.out / f"{name}-{precision}"
            t0 = time.perf_counter()
            if not (folder / "samples.npz").is_file():
                sample_to_folder(args.model, folder, n=args.n, seed=args.seed, precision=precision, progress=False,
                                 **SETTINGS[name])
            seconds[precision] = round(time.perf_counter() - t0, 1)
            sets[precision] = folder
        r = compare_samples(sets, "mnist", bootstrap=args.bootstrap)
        (pair,) = r["pairs"]
        rows = {row["judge"]: {k: row[k] for k in ("fd_a", "fd_b", "ratio", "ratio_std", "z")} for row in pair["rows"]}
        print(f"\n{name}: bf16 {seconds['bf16']} s, fp32 {seconds['fp32']} s; \"bf16 beats fp32\": {pair['verdict']}")
        for judge, row in rows.items():
            print(f"  {judge:20} FD bf16 {row['fd_a']:8.4f}  fp32 {row['fd_b']:8.4f}  ratio {row['ratio']:.3f} "
                  f"± {row['ratio_std']:.3f}  z {row['z']:+.2f}")
        inside = all(abs(row["z"]) <= 1 for row in rows.values())
        print(f"  every judge's gap inside one paired spread: {inside}")
        result["settings"][name] = {"seconds": seconds, "verdict": pair["verdict"], "inside_one_spread": inside,
                                    "judges": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
