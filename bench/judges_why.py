"""Why the judges disagree: the FD of each sample set split into its parts, per class, against pixel statistics, and
the samples two judges read most differently, under every judge of the panel.

    python bench/judges_why.py --sets runs/claims --names d-none,d-cfg,d-ag [--figure docs/images/judges-why.png]

For each judge and set (against all 5,000 real digits):
* FD = |mu_r - mu_f|^2 + [tr S_r + tr S_f - 2 tr (S_r^1/2 S_f S_r^1/2)^1/2] (Heusel et al. 2017): the mean term and the
  covariance term apart, and the spread ratio tr S_f / tr S_r (below 1: the samples vary less than real digits);
* the within-class FD: samples drawn for class c against the real digits of class c, averaged over c — a judge that
  only sees which digit it is gives little here, one that sees how it is drawn gives much;
* ink: the share of pixels above 0, the mean stroke intensity (thicker strokes show as more ink) and the share of
  grey pixels (-0.9 < x < 0.5: soft, washed-out stroke edges show as more grey);
* the per-class mean image of each set minus that of the real digits (``--means``, a labelled figure), and its
  squared size per class: guidance sharpens each class's mean image where pose and size stay the same;
* per sample, its distance to the nearest real digit in the judge's space over the median real-to-real distance:
  the samples the shipped classifier finds typical and another judge far (and the reverse) are drawn in the figure,
  each beside its nearest real digit.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kakusan.data import load_dataset, load_image_set
from kakusan.metrics import load_panel
from kakusan.metrics.scores import _moments, _root, extract
from kakusan.utils.images import save_grid


def fd_parts(real: torch.Tensor, fake: torch.Tensor) -> dict:
    (mu_r, cov_r), (mu_f, cov_f) = _moments(real), _moments(fake)
    root = _root(cov_r)
    cross = torch.linalg.eigvalsh(root @ cov_f @ root).clamp(min=0).sqrt().sum()
    mean = float((mu_r - mu_f).square().sum())
    cov = float(cov_r.trace() + cov_f.trace() - 2 * cross)
    return {"fd": mean + cov, "mean_term": mean, "cov_term": cov, "spread_ratio": float(cov_f.trace() / cov_r.trace())}


def nn_distance(queries: torch.Tensor, support: torch.Tensor, skip_self: bool = False) -> tuple[torch.Tensor, ...]:
    d = torch.cdist(queries.double(), support.double())
    if skip_self:
        d.fill_diagonal_(float("inf"))
    v, i = d.min(1)
    return v, i


def ink(images: torch.Tensor) -> dict:
    on = images > 0
    return {"ink_share": float(on.float().mean()),
            "stroke_intensity": float(((images + 1) / 2)[on].mean()) if on.any() else 0.0,
            "grey_share": float(((images > -0.9) & (images < 0.5)).float().mean())}


def class_means(real, real_labels, sets, figure) -> dict[str, list[float]]:
    """|mean image of class c in the set - mean image of real class c|^2 per class; the figure shows the real class
    means (top row) and each set's difference from them (red: more ink than real digits of that class on average)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1 + len(sets), 10, figsize=(15, 1.6 * (1 + len(sets))))
    shift = {name: [] for name in sets}
    for c in range(10):
        mean_real = real[real_labels == c].mean(0)[0]
        ax[0, c].imshow(mean_real, cmap="gray")
        ax[0, c].set_title(f"real {c}: mean image", fontsize=8)
        for i, (name, (x, y)) in enumerate(sets.items()):
            d = x[y == c].mean(0)[0] - mean_real
            shift[name].append(float(d.square().sum()))
            ax[i + 1, c].imshow(d, cmap="bwr", vmin=-0.4, vmax=0.4)
            ax[i + 1, c].set_title(f"{name} − real: {shift[name][-1]:.1f}", fontsize=7)
    for a in ax.flat:
        a.axis("off")
    fig.suptitle("class-mean image of each sample set minus the real digits' (red: more ink; number: squared size)",
                 fontsize=10)
    fig.tight_layout()
    if figure:
        fig.savefig(figure, dpi=80)
    plt.close(fig)
    return shift


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="runs/claims")
    ap.add_argument("--names", default="d-none,d-cfg,d-ag")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--figure", default="docs/images/judges-why.png")
    ap.add_argument("--means", default="docs/images/judges-class-means.png")
    ap.add_argument("--show", type=int, default=10, help="samples per row of the figure")
    args = ap.parse_args()

    panel, data = load_panel(), load_dataset("mnist")
    real, real_labels = data.images, data.labels
    sets = {name: load_image_set(Path(args.sets) / name, 1) for name in args.names.split(",")}
    sets = {k: (x[:args.n], y[:args.n]) for k, (x, y) in sets.items()}
    result = {"real": ink(real), "sets": {k: ink(x) for k, (x, _) in sets.items()}, "judges": {}}
    print("ink (share of pixels above 0 / mean stroke intensity / share of grey pixels): real "
          f"{result['real']['ink_share']:.4f} / {result['real']['stroke_intensity']:.3f} / "
          f"{result['real']['grey_share']:.4f}; "
          + "; ".join(f"{k} {v['ink_share']:.4f} / {v['stroke_intensity']:.3f} / {v['grey_share']:.4f}"
                      for k, v in result["sets"].items()))
    result["class_mean_shift"] = class_means(real, real_labels, sets, args.means)
    print("per-class mean image minus the real digits', squared size (sum over classes): "
          + "; ".join(f"{k} {sum(v):.2f}" for k, v in result["class_mean_shift"].items()))
    ratios = {}
    for judge in panel:
        f_real = extract(judge.net, real)[0]
        d_real, _ = nn_distance(f_real, f_real, skip_self=True)
        scale = float(d_real.median())
        rows = {}
        print(f"\n{judge.name} ({judge.kind})")
        print(f"  {'set':10}{'FD':>9}{'mean':>9}{'cov':>9}{'spread':>8}{'within-class FD':>17}{'NN dist':>9}")
        for name, (x, y) in sets.items():
            f = extract(judge.net, x)[0]
            parts = fd_parts(f_real, f)
            within = [fd_parts(f_real[real_labels == c], f[y == c])["fd"] for c in range(10)]
            d, _ = nn_distance(f, f_real)
            ratios[judge.name, name] = d / scale
            rows[name] = parts | {"within_class_fd": sum(within) / 10, "within_class": within,
                                  "nn_over_real": float((d / scale).median())}
            r = rows[name]
            print(f"  {name:10}{r['fd']:9.4f}{r['mean_term']:9.4f}{r['cov_term']:9.4f}{r['spread_ratio']:8.3f}"
                  f"{r['within_class_fd']:17.4f}{r['nn_over_real']:9.3f}", flush=True)
        result["judges"][judge.name] = rows

    # the samples of the last set that the shipped classifier and each other trained judge read most differently
    name = list(sets)[-1]
    x, _ = sets[name]
    base = ratios["featurenet-mnist", name].log()
    rows, labels = [], []
    for other in ("resnet-mnist", "autoencoder-mnist"):
        gap = ratios[other, name].log() - base
        f_real = extract(next(j for j in panel if j.name == other).net, real)[0]
        for order, what in ((gap.argsort(descending=True), f"far for {other}, near for featurenet"),
                            (gap.argsort(), f"near for {other}, far for featurenet")):
            picked = order[:args.show]
            _, nearest = nn_distance(extract(next(j for j in panel if j.name == other).net, x[picked])[0], f_real)
            rows += [x[picked], real[nearest]]
            labels += [f"{name}: {what}", f"nearest real ({other})"]
    if args.figure:
        save_grid(torch.cat(rows), args.figure, nrow=args.show, scale=3, row_labels=labels)
        print(f"\nfigure: {args.figure}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
