"""The diffusers-example leg of the race: the loop of diffusers' ``examples/unconditional_image_generation/
train_unconditional.py`` (the example ships in diffusers' repository, not its package; its steps are written out
here with the package's pieces), at its defaults — DDPMScheduler (1000 steps, linear betas), epsilon-prediction with
MSE, AdamW lr 1e-4 betas (0.95, 0.999) weight decay 1e-6, cosine schedule with 500 warm-up steps ending at the
budget, EMAModel (inv_gamma 1, power 3/4, max decay 0.9999), gradient clipping 1.0 — except batch 64 (kakusan's), no
horizontal flips (digits), and its UNet2DModel at the size of kakusan's mnist-s (the example's own is 128-512 wide).
Its cosine schedule needs the total length, so each mark is **a run of its own** (the number of steps estimated from
the speed of its first 20). Unconditional, as the example. Sampled with DDIM, 50 steps, as its pipeline.

    python bench/race/diffusers_leg.py train --data D --out DIR --marks 16
    python bench/race/diffusers_leg.py sample --out DIR --mark 16 [--n 1000]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import legkit  # noqa: E402

STEPS = 50
OPTIM = {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8}


def unet_kwargs(smoke: bool) -> dict:
    from kakusan.nets.unet import UNetConfig

    return UNetConfig(preset="xs" if smoke else "s", image_size=32, cond_type="none",
                      time_conditioning="scale-shift").diffusers_kwargs()


def run_once(minutes: float, images: torch.Tensor, batch: int, seed: int, smoke: bool):
    """One run of the example's loop for ``minutes`` of training; returns (EMA unet, steps, last loss)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    clock = legkit.Clock()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    unet = UNet2DModel(**unet_kwargs(smoke)).train()
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), **OPTIM)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=unet.config)
    lr_scheduler, step, loss = None, 0, torch.tensor(0.0)
    while clock.minutes() < minutes:
        if step < 20:  # warm-up steps while the speed is measured
            for group in optimizer.param_groups:
                group["lr"] = OPTIM["lr"] * step / 500
        if step == 20:  # the total its cosine schedule needs, from the measured speed
            total = int(minutes * 60 / (clock.seconds() / 20))
            for group in optimizer.param_groups:
                group["lr"] = OPTIM["lr"]
            lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500,
                                         num_training_steps=total)
            for _ in range(20):
                lr_scheduler.step()
        clean = images[torch.randint(len(images), (batch,), generator=g)]
        noise = torch.randn(clean.shape, generator=g)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=g)
        loss = F.mse_loss(unet(noise_scheduler.add_noise(clean, noise, timesteps), timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(unet.parameters())
        step += 1
    ema.copy_to(unet.parameters())
    return unet.eval(), step, float(loss), clock.seconds()


def train(args) -> None:
    import diffusers

    images, per_mark = legkit.load_images(args.data), []
    for m in args.marks:
        unet, steps, loss, seconds = run_once(m, images, args.batch, args.seed, args.smoke)
        d = legkit.mark_dir(args.out, m)
        unet.save_pretrained(d / "unet")
        per_mark.append({"minutes": m, "steps": steps, "kimg": round(steps * args.batch / 1000, 3),
                         "img_s": round(steps * args.batch / seconds, 2), "loss": round(loss, 5)})
        print(json.dumps(per_mark[-1]), flush=True)
    legkit.finish(args.out, {"leg": "diffusers example", "version": diffusers.__version__,
                             "params": legkit.n_params(unet), "batch": args.batch, "optimizer": OPTIM,
                             "schedule": "cosine, 500 warm-up steps, ending at the budget",
                             "ema": "EMAModel inv_gamma 1, power 3/4, max 0.9999",
                             "noise": "DDPMScheduler 1000 steps, linear betas, epsilon, MSE",
                             "conditioning": "none", "marks": per_mark})


@torch.no_grad()
def sample(args) -> None:
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(Path(args.out) / f"mark-{args.mark}" / "unet").eval()
    steps = legkit.steps(args, STEPS)

    def one_batch(first, count):
        scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        scheduler.set_timesteps(steps)
        x = legkit.noise(count, first=first)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        return x
    legkit.draw(args, one_batch, f"DDIM, {steps} steps (diffusers)")


if __name__ == "__main__":
    legkit.main(train, sample)
