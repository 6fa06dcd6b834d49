"""The kakusan leg of the race: the recipe of the shipped mnist-s (preset s, scale-shift conditioning, EDM
preconditioning, P_mean -0.4, lr 5e-4 with inverse-sqrt decay after 50 kimg, power-function EMAs 0.05 / 0.10, batch
64), unconditional like every leg, at ``--precision auto`` (bf16 autocast where the CPU has AMX-BF16) or ``fp32``.
It reads kakusan's built-in ``mnist`` (the very images the race exports to ``--data``, which it ignores).
One run, resumed at each mark (nothing in the recipe depends on the total length); the leg's clock counts its
start-up and every resume, and kakusan's own budget keeps the final checkpoint and preview grid inside it. Sampled
with DPM-Solver++(2M), 10 NFE, Karras grid (bench/nfe.py: 0.89x Heun 35's FD on mnist-s).

    python bench/race/kakusan_leg.py train --data D --out DIR [--marks 4,8,16,32] [--precision auto|fp32]
    python bench/race/kakusan_leg.py sample --out DIR --mark 4 [--n 1000]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import legkit  # noqa: E402

RECIPE = dict(data="mnist", image_size=32, preset="s", cond="none", time_conditioning="scale-shift",
              process_options={"p_mean": -0.4}, lr_decay_kimg=50, kimg=10_000, sample_kimg=10_000,
              checkpoint_kimg=10_000, sample_grid=10)
SMOKE = dict(RECIPE, preset="xs")


def train(args) -> None:
    import kakusan
    from kakusan.diffusion.training import TrainConfig, Trainer

    clock = legkit.Clock()
    run = Path(args.out) / "run"
    recipe = dict(SMOKE if args.smoke else RECIPE, precision=args.precision, batch_size=args.batch, seed=args.seed)
    per_mark = []
    for m in args.marks:
        left = m - clock.minutes()
        if left > 0:
            trainer = (Trainer(TrainConfig(**recipe, minutes=left), run, progress=False) if not per_mark
                       else Trainer.resume(run, progress=False, minutes=left))
            summary = trainer.train()
            params, kimg = legkit.n_params(trainer.model), summary["kimg"]
        with clock.pause():
            d = legkit.mark_dir(args.out, m)
            if d.exists():
                shutil.rmtree(d)
            shutil.copytree(run / "checkpoint", d / "checkpoint")
            per_mark.append({"minutes": m, "kimg": round(kimg, 3), "img_s": round(kimg * 1000 / clock.seconds(), 2),
                             "precision": json.loads((run / "train_config.json").read_text())["precision"]})
            print(json.dumps(per_mark[-1]), flush=True)
    legkit.finish(args.out, {"leg": f"kakusan ({args.precision})", "version": kakusan.__version__, "params": params,
                             "batch": args.batch, "recipe": recipe, "conditioning": "none", "marks": per_mark})


@torch.no_grad()
def sample(args) -> None:
    from kakusan.diffusion import Denoiser, generate

    d = Path(args.out) / f"mark-{args.mark}"
    model = Denoiser.from_pretrained(d / "checkpoint")
    steps = legkit.steps(args, 10)  # DPM-Solver++(2M) is multistep: one network call a step
    legkit.draw(args, lambda first, count: generate(model, range(first, first + count), sampler="dpmpp2m",
                                                    steps=steps, schedule="karras", progress=False),
                f"DPM-Solver++(2M), {steps} NFE, Karras grid (kakusan)")


if __name__ == "__main__":
    legkit.main(train, sample, lambda parser: parser.add_argument("--precision", default="auto",
                                                                 choices=("auto", "fp32", "bf16")))
