"""One-step distillation (Diffusion2GAN) against its teacher, side by side in one run.

    python bench/distill.py --pairs PAIRS [--mse RUN] [--lpips RUN] [--gan RUN] [--n 1000] [--figure PNG]

The teacher and its guidance are the pair set's (manifest.json). Rows: the teacher at 35 NFE (Heun), the teacher with
the pair set's own sampler if that is another one, the teacher at 1, 2 and 4 NFE with its best few-step solver (Euler,
DPM-Solver++(2M), chosen by FD), each given student at 1 NFE; columns FD with its bootstrap spread / KID / precision /
recall (shipped evaluation network, against the 5,000 MNIST digits, beside the real-vs-real floor at the same n),
class accuracy and images per second. Samples use seeds 1,000,000 + i (never a training pair's seed), class-cycled.
Then the teacher with DPM-Solver++(2M) at increasing NFE (``--match``) until its FD is at most the full student's:
the fewest NFE that matches it, and the student's speed-up over it (``teacher_match``). NFE counts steps of the
teacher; with guidance each step also calls the guide. ``--figure``: the first ten samples of every row (same seeds, digits 0-9), each row labelled. Last line: one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.samplers import nfe_of
from kakusan.distill.pairs import ema_arg
from kakusan.guidance import guide_from_spec
from kakusan.metrics import evaluate, load_featurenet, load_panel
from kakusan.metrics.panel import panel_summary, summary_line
from kakusan.models import model_folder
from kakusan.utils import io
from kakusan.utils.images import save_grid

SEED0 = 1_000_000
FEW_STEP = {1: [("euler", 1)], 2: [("euler", 2), ("dpmpp2m", 2)], 4: [("euler", 4), ("dpmpp2m", 4)]}
# Heun spends 2N - 1 evaluations: N = 1 is Euler, N = 2 costs 3; so at 4 NFE it is not on the list (3 is, below 4)
STUDENTS = {"mse": "MSE", "lpips": "ensembled perceptual", "gan": "perceptual + GAN",
            "lpips_long": "perceptual, as long as + GAN", "gan_w002": "perceptual + GAN, weight 0.02"}
KEYS = ("fd", "kid", "precision", "recall", "class_acc")


def score(model, make_denoise, sampler, steps, n, net, real) -> dict:
    """The row of one sampler; its first ten samples under the key "images"."""
    labels = torch.arange(n) % 10
    t0 = time.perf_counter()
    images = generate(model, range(SEED0, SEED0 + n), cond=model.cond_from_labels(labels), sampler=sampler,
                      steps=steps, make_denoise=make_denoise, progress=False).clamp(-1, 1)
    seconds = time.perf_counter() - t0
    r = evaluate(net, images, real, labels, bootstrap=100)
    panel = panel_summary(load_panel(), images, real, labels)
    nfe = nfe_of(sampler, steps) if sampler != "onestep" else 1
    row = {k: round(r[k], 5) for k in KEYS} | {"fd_std": round(r["fd_std"], 5), "img_s": round(n / seconds, 2),
                                              "solver": f"{sampler} {steps} steps", "nfe": nfe,
                                              "floor_fd": r["floor"]["fd"], "images": images[:10], "judges": panel}
    print(f"  {row['solver']:18} FD {row['fd']:8.3f} ± {row['fd_std']:.3f}  KID {row['kid']:.4f}  "
          f"P {row['precision']:.3f}  R {row['recall']:.3f}  acc {row['class_acc']:.3f}  {row['img_s']:.1f} img/s",
          flush=True)
    print(f"    {summary_line(panel)}", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", required=True)
    for name in ("mse", "lpips", "gan"):
        ap.add_argument(f"--{name}", help=f"run or model folder of the student trained with {name}")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=RUN",
                    help="another student, reported as student_NAME (e.g. a control trained as long as the GAN one)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--few-step", default="1,2,4", help="teacher NFE to test with the few-step solvers")
    ap.add_argument("--match", default="3,5,6,8,10,15,20",
                    help="teacher NFE (DPM-Solver++(2M)) tried in order for the fewest that matches the best student")
    ap.add_argument("--student-ema", default="auto", help="students' weight set: auto (longest EMA), raw or a length")
    ap.add_argument("--figure", help="PNG: the first ten samples of each row, labelled")
    args = ap.parse_args()

    m = io.read_json(f"{args.pairs}/manifest.json")
    teacher = Denoiser.from_pretrained(model_folder(m["teacher"]), ema=ema_arg(m["ema"]))
    guided = guide_from_spec(teacher, m["guide"], m["guidance"], tuple(m["interval"]) if m["interval"] else None,
                             ema_arg(m["guide_ema"]))
    net, real = load_featurenet(), load_dataset("mnist").images
    result = {"n": args.n, "pairs": args.pairs, "students_weights": args.student_ema, "guide": m["guide"], "guidance": m["guidance"]}
    print(f"teacher {m['teacher']} (guide {m['guide']}, w {m['guidance']}), n = {args.n}")
    result["teacher35"] = score(teacher, guided, "heun", 18, args.n, net, real)
    if (m["sampler"], m["steps"]) != ("heun", 18):
        result["teacher_pairs"] = score(teacher, guided, m["sampler"], m["steps"], args.n, net, real)
    for nfe in (int(k) for k in args.few_step.split(",")):
        rows = [score(teacher, guided, s, steps, args.n, net, real) for s, steps in FEW_STEP[nfe]]
        result[f"teacher{nfe}"] = min(rows, key=lambda r: r["fd"])
    extra = dict(item.split("=", 1) for item in args.extra)
    STUDENTS.update({name: name for name in extra if name not in STUDENTS})
    for name, path in [(name, getattr(args, name)) for name in ("mse", "lpips", "gan")] + list(extra.items()):
        if path:
            print(f"student ({name}): {path}")
            student = Denoiser.from_pretrained(model_folder(path), ema=ema_arg(args.student_ema))
            result[f"student_{name}"] = score(student, None, "onestep", 1, args.n, net, real)
    result["floor_fd"] = result["teacher35"]["floor_fd"]
    who = f"teacher ({m['guide'] or 'unguided'}, w {m['guidance']:g}), "
    figure = {f"{'student, ' + STUDENTS[key[8:]] if key.startswith('student') else who + row['solver']}, "
              f"{row['nfe']} NFE": row.pop("images") for key, row in result.items() if isinstance(row, dict)}
    if args.figure:
        save_grid(torch.cat(list(figure.values())), args.figure, nrow=10, row_labels=list(figure))
    students = [k for k in result if k.startswith("student_")]
    best = "student_gan" if "student_gan" in students else min(students, key=lambda k: result[k]["fd"], default=None)
    if best and args.match:
        # the fewest teacher NFE (DPM-Solver++(2M), the best few-step solver here) whose FD is at most the student's
        print(f"teacher NFE that matches {best} (FD {result[best]['fd']:.3f}):")
        for nfe in (int(k) for k in args.match.split(",")):
            row = score(teacher, guided, "dpmpp2m", nfe, args.n, net, real)
            row.pop("images")
            if row["fd"] <= result[best]["fd"]:
                result["teacher_match"] = {**row, "student": best,
                                           "student_speedup": round(result[best]["img_s"] / row["img_s"], 2)}
                break
        else:
            result["teacher_match"] = {"student": best, "none_up_to_nfe": args.match.split(",")[-1],
                                       "last": row}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
