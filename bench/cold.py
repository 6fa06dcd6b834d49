"""Cold diffusion on MNIST: restoration (blur, mask) by direct / Algorithm 1 / Algorithm 2, generation from blur with
broken vs perfect symmetry vs hot (Gaussian) diffusion, and the cost of a trajectory in T.

    python bench/cold.py --blur RUN --mask RUN --blur-gen RUN --hot RUN [--n 500]

Each part runs when its model is given (``--mask RUN`` alone measures mask restoration only). RUNs are cold models
trained on ``mnist-train`` (see docs/cold.md for the commands); restoration uses n random images of
``mnist-heldout`` and FD (shipped MNIST evaluation network) is against the whole held-out set; Algorithm 2 against
direct restoration is also compared under every judge of the panel (paired, FD ratio ± spread, verdict).
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import json
import time

from pathlib import Path

import torch

from kakusan.cold import build_degradation, restorer, sample_alg2
from kakusan.cold.restore import restore_all
from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.metrics import compare_sets, load_featurenet, load_panel
from kakusan.metrics.restoration import rmse, ssim
from kakusan.metrics.scores import evaluate, extract, frechet_distance
from kakusan.models import model_folder
from kakusan.utils.images import save_grid


def restoration(model, clean, real_feats, net, figure, held=None) -> dict:
    rows = restore_all(model, clean, progress=False)
    save_grid(torch.cat([rows[k][:10] for k in rows]), figure, nrow=10)  # clean / degraded / direct / alg1 / alg2
    out = {}
    for name in ("degraded", "direct", "alg1", "alg2"):
        x = rows[name]
        out[name] = {"rmse": round(rmse(x, clean), 5), "ssim": round(ssim(x, clean), 5),
                     "fd": round(frechet_distance(extract(net, x)[0], real_feats), 4)}
        print(f"  {name:9} RMSE {out[name]['rmse']:.4f}  SSIM {out[name]['ssim']:.4f}  FD {out[name]['fd']:.3f}",
              flush=True)
    if held is not None:  # "Algorithm 2 beats direct restoration" under every judge, paired by clean image
        p = compare_sets(load_panel(), {"alg2": (rows["alg2"], None), "direct": (rows["direct"], None)}, held,
                         bootstrap=100, reference="all", spread="both")["pairs"][0]
        print(f"  Algorithm 2 beats direct restoration, every judge: {p['verdict']}")
        for row in p["rows"]:
            print(f"    {row['judge']:20} FD {row['fd_a']:9.4f} vs {row['fd_b']:9.4f}  ratio {row['ratio']:.3f} ± "
                  f"{row['ratio_std']:.3f}  z {row['z']:+.2f}", flush=True)
        out["panel_alg2_vs_direct"] = {"verdict": p["verdict"], "ratio": {
            row["judge"]: [round(row["ratio"], 4), round(row["ratio_std"], 4)] for row in p["rows"]}}
    return out


def time_ratio(model, batch: int = 8) -> float:
    """Seconds of an Algorithm-2 trajectory with T = 200 over T = 50 (same network, same batch)."""
    seconds = {}
    for T in (50, 200):
        d = build_degradation(model.process.kind, steps=T)
        x = torch.zeros(batch, *model.image_shape)
        z = d.nuisance(x, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        sample_alg2(restorer(model), d.apply(x, torch.full((batch,), T), z), d, T, z)
        seconds[T] = time.perf_counter() - t0
    return seconds[200] / seconds[50]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("blur", "mask", "blur-gen", "hot"):
        ap.add_argument(f"--{name}", help=f"{name} model (run or model folder)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", default="out/cold", help="folder for the figures")
    args = ap.parse_args()
    if not any((args.blur, args.mask, args.blur_gen, args.hot)):
        ap.error("give at least one model: --blur, --mask, --blur-gen or --hot")

    net = load_featurenet()
    held = load_dataset("mnist-heldout").images
    real_feats = extract(net, held)[0]
    clean = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[:args.n]]  # all classes
    load = functools.cache(lambda path: Denoiser.from_pretrained(model_folder(path)))  # each model read once
    out = Path(args.out)
    # floor: the clean images themselves against the same reference (same n, same reference set)
    result = {"n": args.n, "floor_fd": round(frechet_distance(extract(net, clean)[0], real_feats), 4)}
    print(f"real-vs-real floor ({args.n} clean held-out images vs all {len(held)}): FD {result['floor_fd']:.3f}")
    for kind in [k for k in ("blur", "mask") if getattr(args, k)]:
        print(f"{kind} restoration, {args.n} held-out images:", flush=True)
        result[kind] = restoration(load(getattr(args, kind)), clean, real_feats, net, out / f"restore-{kind}.png",
                                   held)

    gen, grids = {}, []
    real_all = load_dataset("mnist").images
    for name, path, noise in (("broken", args.blur_gen, 0.002), ("perfect", args.blur_gen, 0.0),
                              ("hot", args.hot, 0.0)):
        if not path:
            continue
        model = load(path)
        t0 = time.perf_counter()
        x = generate(model, range(args.n), symmetry_noise=noise, progress=False).clamp(-1, 1)
        seconds = time.perf_counter() - t0
        r = evaluate(net, x, real_all)
        grids.append(x[:36])
        gen[name] = {k: round(r[k], 5) for k in ("fd", "precision", "recall")}
        gen[name]["sec_per_image"] = round(seconds / args.n, 4)
        print(f"generation {name:8} FD {r['fd']:.3f} (floor {r['floor']['fd']:.3f})  P {r['precision']:.3f}  "
              f"R {r['recall']:.3f}", flush=True)
        gen["floor"] = {k: round(r["floor"][k], 5) for k in ("fd", "precision", "recall")}
    if grids:
        result["generation"] = gen
        save_grid(torch.cat([torch.cat([g, torch.ones(6, *g.shape[1:])]) for g in grids]), out / "generate.png",
                  nrow=6)
    result["time_ratio_T200_T50"] = round(time_ratio(load(args.blur or args.mask or args.hot or args.blur_gen)), 3)
    print(f"trajectory time T=200 / T=50: {result['time_ratio_T200_T50']:.2f} (linear: 4)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
