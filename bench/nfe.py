"""Quality per network evaluation: every solver and grid of the shipped model at 2 ... 15 NFE, beside Heun at 35.

    python bench/nfe.py [--model mnist-s] [--n 1000] [--nfe 2,3,4,5,6,8,10,15] [--rows all]
                        [--plot docs/images/nfe.png]

Each row samples n class-cycled images (seeds 0..n-1, the same x_T for every row) and scores them with the shipped
MNIST evaluation network against n real images: FD with its bootstrap spread (100 resamplings of the samples),
precision, recall, class accuracy, and seconds per image measured in this run. Rows:

    heun / euler / dpmpp2m / dpmpp3m        kakusan's samplers on Karras' grid (eq. 5, rho 7)
    ddim                                    diffusers' DDIMScheduler (trailing timesteps) through the scheduler bridge
    unipc                                   diffusers' UniPCMultistepScheduler, Karras spacing, through the bridge
    dpmpp2m-opt / dpmpp3m-opt               kakusan's solvers on the grids stored with the model (``kakusan grid``)

Heun spends 2N - 1 evaluations on N steps, so it runs at the odd NFE 3, 5, 9, 15 and 35 (the reference, sampled
first). Every row starts from the same x_T per seed as the reference, so each point also gets its FD ratio to the
reference with a *paired* bootstrap spread (the same resampled seeds for both), much tighter than either FD's own. A
row skips an NFE it has no grid for. Last line: one JSON object {rows: {row: [{nfe, fd, fd_std, ratio, ratio_std,
precision, recall, class_acc, sec_per_image}]}, reference, floor_fd}. ``--replot OUTPUT`` redraws the plot from a
saved output's last line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.samplers import steps_for_nfe
from kakusan.metrics import evaluate, load_featurenet, load_panel
from kakusan.metrics.panel import panel_summary, summary_line
from kakusan.metrics.scores import disjoint_halves, extract, fd_bootstrap, frechet_distance
from kakusan.models import model_folder

ROWS = {  # name: (sampler, schedule)
    "heun": ("heun", "karras"), "euler": ("euler", "karras"), "ddim": ("diffusers:DDIMScheduler", "uniform"),
    "dpmpp2m": ("dpmpp2m", "karras"), "dpmpp3m": ("dpmpp3m", "karras"), "unipc": ("unipc", "karras"),
    "dpmpp2m-opt": ("dpmpp2m", "optimized"), "dpmpp3m-opt": ("dpmpp3m", "optimized"),
}
HEUN_NFE = (3, 5, 9, 15, 35)
JUDGES = load_panel()  # every point is also scored under the whole judge panel (its "judges" entry)


def measure(model, net, real, labels, sampler, schedule, nfe, n):
    t0 = time.perf_counter()
    images = generate(model, range(n), cond=labels, sampler=sampler, steps=steps_for_nfe(sampler, nfe),
                      schedule=schedule, progress=False).clamp(-1, 1)
    sec = (time.perf_counter() - t0) / n
    r = evaluate(net, images, real, labels, bootstrap=100)
    panel = panel_summary(JUDGES, images, real, labels)
    print(f"    {sampler} {schedule} {nfe} NFE: {summary_line(panel)}", flush=True)
    return {"nfe": nfe, **{k: round(r[k], 5) for k in ("fd", "fd_std", "precision", "recall", "class_acc")},
            "sec_per_image": round(sec, 4), "judges": panel}, r["floor"]["fd"], extract(net, images)[0]


def paired_ratio(real_f, f, ref_f, reps: int = 100, seed: int = 0) -> tuple[float, float]:
    """FD(f) / FD(ref_f) and its spread over resamplings of the seeds, the same indices for both."""
    ratios = fd_bootstrap(real_f, f, reps, seed) / fd_bootstrap(real_f, ref_f, reps, seed)
    return frechet_distance(real_f, f) / frechet_distance(real_f, ref_f), float(ratios.std())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist-s")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--nfe", default="2,3,4,5,6,8,10,15")
    ap.add_argument("--rows", default="all", help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--plot", help="PNG: FD against NFE, log-log, one line per row")
    ap.add_argument("--replot", help="a saved output of this bench: only redraw --plot from its last line")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(open(args.replot).read().strip().splitlines()[-1]), args.plot)
        return

    model = Denoiser.from_pretrained(model_folder(args.model))
    net, real = load_featurenet(), load_dataset("mnist").images
    real_f = extract(net, real[disjoint_halves(len(real), args.n)[1]])[0]  # evaluate()'s reference set
    labels = torch.arange(args.n) % 10
    names = list(ROWS) if args.rows == "all" else args.rows.split(",")
    nfes = [int(v) for v in args.nfe.split(",")]
    out = {"model": args.model, "weights": model.info.get("weights"), "n": args.n, "rows": {}}
    print(f"{args.model} ({model.info.get('weights')}), n = {args.n}", flush=True)
    ref, floor, ref_f = measure(model, net, real, labels, "heun", "karras", 35, args.n)
    out["reference"], out["floor_fd"] = {"sampler": "heun", **ref}, round(floor, 5)
    print(f"  reference: heun 35 NFE  FD {ref['fd']:.3f} ± {ref['fd_std']:.3f}  (real vs real {floor:.3f})", flush=True)
    for name in names:
        sampler, schedule = ROWS[name]
        row = []
        for nfe in HEUN_NFE if name == "heun" else nfes:
            if schedule == "optimized" and model.stored_grid(sampler, nfe) is None:
                continue
            if (name, nfe) == ("heun", 35):
                m, f = dict(ref), ref_f
            else:
                m, _, f = measure(model, net, real, labels, sampler, schedule, nfe, args.n)
            ratio, ratio_std = paired_ratio(real_f, f, ref_f)
            m.update(ratio=round(ratio, 4), ratio_std=round(ratio_std, 4))
            row.append(m)
            print(f"  {name:12} {nfe:3d} NFE  FD {m['fd']:8.3f} ± {m['fd_std']:.3f}  x{ratio:.3f} ± {ratio_std:.3f} "
                  f"of Heun 35  P {m['precision']:.3f}  R {m['recall']:.3f}  acc {m['class_acc']:.3f}  "
                  f"{m['sec_per_image']:.3f} s/img", flush=True)
        out["rows"][name] = row
    if args.plot:
        plot(out, args.plot)
    print(json.dumps(out))


def plot(out: dict, path: str) -> None:
    from kakusan.utils.plots import plt  # headless

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in out["rows"].items():
        if row:
            x = [m["nfe"] for m in row]
            y = [m["fd"] for m in row]
            ax.errorbar(x, y, yerr=[m["fd_std"] for m in row], marker="o", ms=3, capsize=2,
                        ls="--" if name.endswith("-opt") else "-", label=name)
    if "reference" in out:
        ax.axhline(out["reference"]["fd"], color="k", lw=0.8, ls=":", label="Heun 35 NFE")
        ax.axhline(1.2 * out["reference"]["fd"], color="r", lw=1.0, ls="-.", label="1.2 x Heun 35")
    ax.axhline(out["floor_fd"], color="grey", lw=0.8, label="real vs real")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel="FD (MNIST feature net)",
           title=f"{out['model']}: FD against NFE, n = {out['n']} per point (bars: bootstrap std)")
    ax.set_xticks([2, 3, 4, 5, 6, 8, 10, 15, 35], labels=["2", "3", "4", "5", "6", "8", "10", "15", "35"])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
