"""Validation of one-step students on their pair set's held-out pairs — for choosing settings, never for reporting.

    python bench/distill_val.py --pairs PAIRS --holdout 2000 NAME=RUN[@WEIGHTS] ...

The last ``--holdout`` pairs (z, c, x0) of the set were never trained on (``kakusan distill train --holdout``). Each
student maps the same z and c to an image; its FD under every judge of the panel is compared with the FD of the
teacher's own x0 on those pairs, as a paired ratio student / teacher with its bootstrap spread (the same resampled
indices for both). The bench (``bench/distill.py``) draws on other seeds (1,000,000 + i), so settings chosen here are
not chosen on the seeds they are reported on.

Last line, one JSON object: pairs, holdout, ref, students ({name: {judge: {ratio, ratio_std}}}), panel_geomean
({name: geometric mean of the ratios}).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser
from kakusan.distill.pairs import ema_arg, load_pairs
from kakusan.metrics import load_panel
from kakusan.metrics.panel import compare_sets
from kakusan.models import model_folder


@torch.no_grad()
def one_step(student: Denoiser, z: torch.Tensor, labels, batch: int = 250) -> torch.Tensor:
    sigma = student.process.sigma_max
    out = []
    for i in range(0, len(z), batch):
        cond = student.cond_from_labels(labels[i:i + batch] if labels is not None else None)
        out.append(student(sigma * z[i:i + batch], sigma, cond).float().clamp(-1, 1))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--holdout", type=int, default=2000, help="the last N pairs, held out of every student's training")
    ap.add_argument("--ref", default="mnist")
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("students", nargs="+", metavar="NAME=RUN[@WEIGHTS]", help="weights: raw | an EMA length")
    args = ap.parse_args()
    pairs, pairs_dir = load_pairs(args.pairs), Path(args.pairs).resolve()
    idx = torch.arange(len(pairs) - args.holdout, len(pairs))
    z, x0 = pairs.noise[idx], pairs.x0[idx].float().clamp(-1, 1)
    labels = pairs.labels[idx] if pairs.labels is not None else None
    sets = {"teacher": (x0, labels)}
    for item in args.students:
        name, spec = item.split("=", 1)
        run, _, weights = spec.partition("@")
        student = Denoiser.from_pretrained(model_folder(run), ema=ema_arg(weights or "auto"))
        trained = student.info.get("train_config", {})
        if trained.get("holdout", 0) < args.holdout or Path(trained.get("pairs", "")).resolve() != pairs_dir:
            raise SystemExit(f"{run} was not trained on {args.pairs} with --holdout >= {args.holdout}: its held-out "
                             "pairs would include its own training pairs")
        student.set_precision(args.precision)
        sets[name] = (one_step(student, z, labels), labels)
    data = load_dataset(args.ref)
    compared = compare_sets(load_panel(), sets, data.images, real_labels=data.labels, bootstrap=args.bootstrap,
                            pairs=[(name, "teacher") for name in sets if name != "teacher"])
    result = {"pairs": args.pairs, "holdout": args.holdout, "ref": args.ref, "students": {}, "panel_geomean": {}}
    for pair in compared["pairs"]:
        rows = {r["judge"]: {"ratio": round(r["ratio"], 3), "ratio_std": round(r["ratio_std"], 3)}
                for r in pair["rows"]}
        result["students"][pair["a"]] = rows
        result["panel_geomean"][pair["a"]] = round(math.exp(sum(math.log(r["ratio"]) for r in rows.values())
                                                            / len(rows)), 3)
        print(f"{pair['a']:>24}: " + "  ".join(f"{j} {r['ratio']:.2f}±{r['ratio_std']:.2f}" for j, r in rows.items())
              + f"  | geomean {result['panel_geomean'][pair['a']]:.3f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
