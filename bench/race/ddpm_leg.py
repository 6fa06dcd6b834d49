"""The denoising-diffusion-pytorch leg of the race (lucidrains, ``pip install denoising-diffusion-pytorch``): its
``Unet``, ``GaussianDiffusion`` and ``Trainer``, trained on a folder of the 5,000 images as PNG files (the Trainer
reads only folders), as its README shows, at its defaults — v-prediction, sigmoid beta schedule, Adam lr 1e-4 betas
(0.9, 0.99), EMA 0.995 every 10 steps, gradient clipping 1.0 — except: batch 64 (kakusan's), no horizontal flips
(digits), no FID during training (it would download Inception), and the Unet narrowed to the size of kakusan's
mnist-s. Unconditional (the Trainer takes no labels). The Trainer runs by steps, so it is driven in chunks of 10
steps against the training clock. Sampled with its DDIM sampler, 50 steps (``sampling_timesteps=50``).

    python bench/race/ddpm_leg.py train --data D --out DIR [--marks 4,8,16,32]
    python bench/race/ddpm_leg.py sample --out DIR --mark 4 [--n 1000]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import legkit  # noqa: E402

UNET = {"dim": 24, "dim_mults": (1, 2, 4), "channels": 1, "flash_attn": False}
SMOKE_UNET = {"dim": 8, "dim_mults": (1, 2), "channels": 1, "flash_attn": False}
STEPS = 50
CHUNK = 10


def diffusion(smoke: bool, sampling_steps: int):
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    net = Unet(**(SMOKE_UNET if smoke else UNET))
    return GaussianDiffusion(net, image_size=32, timesteps=1000, sampling_timesteps=sampling_steps), net


def png_folder(data: str, folder: Path) -> Path:
    """The images as PNG files (written once)."""
    from PIL import Image

    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ((legkit.load_images(data)[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        for i, p in enumerate(pixels):
            Image.fromarray(p, mode="L").save(folder / f"{i:05d}.png")
        (folder / "done").touch()
    return folder


def train(args) -> None:
    from denoising_diffusion_pytorch import Trainer

    clock = legkit.Clock()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = png_folder(args.data, out.parent / "mnist-png")
    model, net = diffusion(args.smoke, STEPS)
    trainer = Trainer(model, str(folder), train_batch_size=args.batch, augment_horizontal_flip=False,
                      train_num_steps=0, save_and_sample_every=10**9, results_folder=str(out),
                      calculate_fid=False, amp=False)
    marks, per_mark = list(args.marks), []
    while marks:
        trainer.train_num_steps = trainer.step + CHUNK
        trainer.train()
        if clock.minutes() >= marks[0]:
            with clock.pause():
                d = legkit.mark_dir(out, marks[0])
                d.mkdir(parents=True, exist_ok=True)
                trainer.save("latest")  # its own checkpoint format (step, model, opt, ema)
                (out / "model-latest.pt").replace(d / "model.pt")
                per_mark.append({"minutes": marks[0], "steps": trainer.step,
                                 "kimg": round(trainer.step * args.batch / 1000, 3),
                                 "img_s": round(trainer.step * args.batch / clock.seconds(), 2)})
                print(json.dumps(per_mark[-1]), flush=True)
            marks.pop(0)
    legkit.finish(out, {"leg": "denoising-diffusion-pytorch", "version": legkit.version("denoising-diffusion-pytorch"),
                        "params": legkit.n_params(net), "batch": args.batch,
                        "unet": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in (SMOKE_UNET if args.smoke else UNET).items()},
                        "diffusion": {"timesteps": 1000, "objective": model.objective,
                                      "beta_schedule": "sigmoid (default)", "sampling_timesteps": STEPS},
                        "trainer": {"train_lr": 1e-4, "adam_betas": [0.9, 0.99], "ema_decay": 0.995,
                                    "ema_update_every": 10, "max_grad_norm": 1.0, "augment_horizontal_flip": False,
                                    "amp": False},
                        "conditioning": "none", "marks": per_mark})


@torch.no_grad()
def sample(args) -> None:
    from ema_pytorch import EMA

    d = Path(args.out) / f"mark-{args.mark}"
    steps = legkit.steps(args, STEPS)
    model, _ = diffusion(args.smoke, steps)
    ema = EMA(model, beta=0.995, update_every=10)
    ema.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True)["ema"])
    sampler = ema.ema_model.eval()

    def one_batch(first, count):
        torch.manual_seed(first)  # its sampler draws its own noise: seeded per batch
        return sampler.sample(batch_size=count) * 2 - 1  # it returns [0, 1]
    legkit.draw(args, one_batch, f"DDIM, {steps} steps (denoising-diffusion-pytorch)")


if __name__ == "__main__":
    legkit.main(train, sample)
