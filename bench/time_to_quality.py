"""Quality per training minute: kakusan's recipe against the recipe of diffusers' own training example, same network.

    python bench/time_to_quality.py [--budgets 5,10,20] [--n 1000] [--out runs/ttq]

Both train the class-conditional UNet of the shipped mnist-s (preset s, scale-shift conditioning, 32x32, batch 64) on
the same 5,000 MNIST images, on this machine, for the same wall-clock budgets, alternating (kakusan to 5 minutes, the
example's 5-minute run, kakusan on to 10, the example's 10-minute run, ...) so that machine noise hits both alike.

* **kakusan**: the command on mnist-s's card (EDM preconditioning, P_mean -0.4, lr 5e-4 with inverse-sqrt decay after
  50 kimg, power-function EMAs 0.05 / 0.10) with ``--minutes``; one run resumed at each budget (nothing in it depends on
  the total length). Its budget includes start-up, checkpoints and the preview grids at start and end (10 images
  here, as the example's image saving is left out too). Sampled with DPM-Solver++(2M), 10 NFE, Karras grid
  (bench/nfe.py: 0.89x Heun 35's FD on the shipped model). A copy of the checkpoint at each budget is kept.
* **diffusers example** (``examples/unconditional_image_generation/train_unconditional.py``, written out plainly
  below as its users run it; class labels added): DDPMScheduler (1000 steps, linear betas), eps-prediction with MSE,
  AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, cosine schedule with 500 warm-up steps ending at the budget
  (one run per budget: its schedule needs the total), gradient clipping 1.0, EMAModel (inv_gamma 1, power 3/4,
  max decay 0.9999), no horizontal flips (digits), batch 64 as kakusan's. Sampled with DDIM, 50 steps.

Each budget: FD (bootstrap spread), precision, recall and class accuracy of n class-cycled samples against n real
images (shipped MNIST evaluation network), and kimg trained. Last line: one JSON object
{kakusan: [{minutes, kimg, fd, fd_std, class_acc}], diffusers: [...]}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.samplers import PerSampleNoise
from kakusan.metrics import evaluate, load_featurenet, load_panel
from kakusan.metrics.panel import panel_summary, summary_line
from kakusan.nets.unet import UNetConfig
from kakusan.diffusion.training import TrainConfig

KAKUSAN = dict(data="mnist", image_size=32, preset="s", time_conditioning="scale-shift", p_mean=-0.4,
               lr_decay_kimg=50, kimg=10_000, sample_kimg=10_000, checkpoint_kimg=10_000, sample_grid=10)


def train_kakusan(run: Path, minutes: float, first: bool) -> dict:
    from kakusan.diffusion.training import Trainer

    if first:
        trainer = Trainer(TrainConfig(**KAKUSAN, minutes=minutes), run, progress=False)
    else:
        trainer = Trainer.resume(run, progress=False, minutes=minutes)
    summary = trainer.train()
    return {"kimg": summary["kimg"]}


def sample_kakusan(run: Path, n: int) -> torch.Tensor:
    model = Denoiser.from_pretrained(run / "checkpoint")
    return generate(model, range(n), cond=torch.arange(n) % 10, sampler="dpmpp2m", steps=10, schedule="karras",
                    progress=False)


def example_unet():
    """The network of mnist-s, as a bare diffusers UNet2DModel (11 class rows: kakusan's null row stays unused)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**UNetConfig(preset="s", image_size=32, cond_type="class", num_classes=10,
                                    time_conditioning="scale-shift").diffusers_kwargs())


def train_example(minutes: float, data, seed: int = 0):
    """The diffusers example's loop, for ``minutes`` of wall-clock (its cosine schedule ends at the budget: the
    number of steps is estimated from the speed of its first 20 steps)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    unet = example_unet().train()
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=unet.config)
    lr_scheduler, batch, step, start, losses = None, 64, 0, time.time(), []
    while time.time() - start < minutes * 60:
        if step < 20:  # the first warm-up steps, while the speed is measured
            for group in optimizer.param_groups:
                group["lr"] = 1e-4 * step / 500
        if step == 20:  # the total the cosine schedule needs, from the measured speed
            total = int(minutes * 60 / ((time.time() - start) / 20))
            for group in optimizer.param_groups:  # the schedule scales the lr it finds: give it the peak
                group["lr"] = 1e-4
            lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500,
                                         num_training_steps=total)
            for _ in range(20):
                lr_scheduler.step()
        idx = torch.randint(len(data.images), (batch,), generator=g)
        clean, labels = data.images[idx], data.labels[idx]
        noise = torch.randn(clean.shape, generator=g)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=g)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, class_labels=labels).sample, noise)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(unet.parameters())
        step += 1
    ema.copy_to(unet.parameters())
    train_example.last_loss = sum(losses[-50:]) / max(len(losses[-50:]), 1)  # mean loss of the last 50 steps
    return unet.eval(), step * batch / 1000


@torch.no_grad()
def sample_example(unet, n: int, batch: int = 100) -> torch.Tensor:
    """DDIM, 50 steps, as the example's pipeline samples (eta 0), with the same per-seed noise as kakusan."""
    from diffusers import DDIMScheduler

    out = []
    for a in range(0, n, batch):
        seeds = list(range(a, min(a + batch, n)))
        scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        scheduler.set_timesteps(50)
        x = PerSampleNoise(seeds)(torch.empty(len(seeds), 1, 32, 32))
        labels = torch.tensor(seeds) % 10
        for t in scheduler.timesteps:
            eps = unet(x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def score(net, real, images, n):
    r = evaluate(net, images.clamp(-1, 1), real, torch.arange(n) % 10, bootstrap=100)
    panel = panel_summary(load_panel(), images.clamp(-1, 1), real, torch.arange(n) % 10)
    print(f"  {summary_line(panel)}", flush=True)
    return ({k: round(r[k], 5) for k in ("fd", "fd_std", "precision", "recall", "class_acc")} | {"judges": panel},
            r["floor"]["fd"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="5,10,20", help="wall-clock minutes, increasing")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", default="runs/ttq", help="folder for the kakusan run (must not exist)")
    args = ap.parse_args()

    budgets = [float(b) for b in args.budgets.split(",")]
    if budgets != sorted(budgets) or Path(args.out).exists():
        raise SystemExit("budgets must increase, and --out must not exist")
    data = load_dataset("mnist", image_size=32)
    net, real = load_featurenet(), load_dataset("mnist").images
    result = {"n": args.n, "kakusan": [], "diffusers": []}
    done = 0.0
    for b in budgets:
        t0 = time.time()
        k = train_kakusan(Path(args.out), b - done, first=done == 0)
        k_minutes = (time.time() - t0) / 60
        shutil.copytree(Path(args.out) / "checkpoint", Path(args.out) / f"checkpoint-{b:g}min")  # for later looks
        m, floor = score(net, real, sample_kakusan(Path(args.out), args.n), args.n)
        result["kakusan"].append({"minutes": b, "kimg": k["kimg"], **m})
        print(f"kakusan   {b:5.1f} min ({k_minutes:.1f} this leg)  {k['kimg']:6.1f} kimg  FD {m['fd']:.3f} ± "
              f"{m['fd_std']:.3f}  acc {m['class_acc']:.3f}", flush=True)
        t0 = time.time()
        unet, kimg = train_example(b, data)
        m, floor = score(net, real, sample_example(unet, args.n), args.n)
        loss = round(train_example.last_loss, 4)
        result["diffusers"].append({"minutes": b, "kimg": round(kimg, 2), **m, "loss_last50": loss})
        print(f"diffusers {b:5.1f} min ({(time.time() - t0) / 60:.1f} incl. sampling)  {kimg:6.1f} kimg  FD "
              f"{m['fd']:.3f} ± {m['fd_std']:.3f}  acc {m['class_acc']:.3f}  eps-loss {loss}", flush=True)
        result["floor_fd"] = round(floor, 5)
        done = b
    print(json.dumps(result))


if __name__ == "__main__":
    main()
