"""The k-diffusion leg of the race (Crowson, ``pip install k-diffusion``): its MNIST recipe
(``configs/config_mnist.json`` of its repository) with the network narrowed to the size of kakusan's mnist-s, trained
by the steps of its ``train.py`` — which ships in the repository, not in the package, so its loop is written out
here with the package's own pieces: ``K.config.make_model`` / ``make_denoiser_wrapper`` / ``make_sample_density``,
the ``KarrasAugmentationPipeline`` on PIL images, ``Denoiser.loss``, AdamW, ``ConstantLRWithWarmup``, gradient
clipping 1.0, ``EMAWarmup`` + ``ema_update``. Unconditional (``image_v1`` takes no class). Sampled with
DPM-Solver++(2M) (``sample_dpmpp_2m``) on the Karras grid, as its ``train.py`` evaluates (50 steps).

    python bench/race/kdiffusion_leg.py train --data D --out DIR [--marks 4,8,16,32]
    python bench/race/kdiffusion_leg.py sample --out DIR --mark 4 [--n 1000]
"""
from __future__ import annotations

import json
import sys
from copy import deepcopy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
import legkit  # noqa: E402

STEPS = 50


def config(smoke: bool = False) -> dict:
    """config_mnist.json's recipe at 32x32; the network narrowed (its own is 128/128/256 wide, 2/4/4 deep)."""
    return {
        "model": {"type": "image_v1", "input_channels": 1, "input_size": [32, 32], "patch_size": 1,
                  "mapping_out": 64 if smoke else 256, "depths": [1, 1] if smoke else [2, 2, 2],
                  "channels": [8, 8] if smoke else [32, 64, 64],
                  "self_attn_depths": [False, True] if smoke else [False, False, True],
                  "has_variance": False, "loss_config": "karras", "loss_weighting": "soft-min-snr",
                  "dropout_rate": 0.05, "augment_wrapper": True, "augment_prob": 0.12, "sigma_data": 0.6162,
                  "sigma_min": 1e-2, "sigma_max": 80, "sigma_sample_density": {"type": "cosine-interpolated"}},
        "dataset": {"type": "custom", "num_classes": 0},
        "optimizer": {"type": "adamw", "lr": 2e-4, "betas": [0.95, 0.999], "eps": 1e-6, "weight_decay": 1e-3},
        "lr_sched": {"type": "constant", "warmup": 0.0},
        "ema_sched": {"type": "inverse", "power": 0.6667, "max_value": 0.9999},
    }


class Augmented(torch.utils.data.Dataset):
    """The 5,000 images as PIL images through k-diffusion's augmentation pipeline (as its train.py feeds them)."""

    def __init__(self, images: torch.Tensor, prob: float):
        from PIL import Image
        import k_diffusion as K

        pixels = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        self.images = [Image.fromarray(p, mode="L") for p in pixels]
        self.aug = K.augmentation.KarrasAugmentationPipeline(prob, disable_all=prob == 0)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.aug(self.images[i])


def train(args) -> None:
    import k_diffusion as K

    clock = legkit.Clock()
    torch.manual_seed(args.seed)
    cfg = K.config.load_config(config(args.smoke))
    mcfg = cfg["model"]
    inner = K.config.make_model(cfg)
    inner_ema = deepcopy(inner)
    model = K.config.make_denoiser_wrapper(cfg)(inner)
    model_ema = K.config.make_denoiser_wrapper(cfg)(inner_ema)
    o = cfg["optimizer"]
    opt = torch.optim.AdamW(inner.param_groups(o["lr"]), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            weight_decay=o["weight_decay"])
    try:
        sched = K.utils.ConstantLRWithWarmup(opt, warmup=cfg["lr_sched"]["warmup"])
    except TypeError:  # 0.1.1.post1 passes `verbose`, which torch >= 2.7 no longer takes; at warm-up 0 it is constant
        assert cfg["lr_sched"]["warmup"] == 0
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    ema_sched = K.utils.EMAWarmup(power=cfg["ema_sched"]["power"], max_value=cfg["ema_sched"]["max_value"])
    density = K.config.make_sample_density(mcfg)
    data = Augmented(legkit.load_images(args.data), mcfg["augment_prob"])
    loader = torch.utils.data.DataLoader(data, args.batch, shuffle=True, drop_last=True, num_workers=0)
    step, marks, per_mark = 0, list(args.marks), []
    while marks:
        for reals, _, aug_cond in loader:
            noise = torch.randn_like(reals)
            sigma = density([reals.shape[0]])
            loss = model.loss(reals, noise, sigma, aug_cond=aug_cond).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            K.utils.ema_update(model, model_ema, ema_sched.get_value())
            ema_sched.step()
            step += 1
            if clock.minutes() >= marks[0]:
                with clock.pause():
                    d = legkit.mark_dir(args.out, marks[0])
                    d.mkdir(parents=True, exist_ok=True)
                    save_file({k: v.contiguous() for k, v in inner_ema.state_dict().items()},
                              str(d / "model_ema.safetensors"))
                    (d / "config.json").write_text(json.dumps(cfg))
                    per_mark.append({"minutes": marks[0], "steps": step, "kimg": round(step * args.batch / 1000, 3),
                                     "img_s": round(step * args.batch / clock.seconds(), 2),
                                     "loss": round(float(loss), 5)})
                    print(json.dumps(per_mark[-1]), flush=True)
                marks.pop(0)
                if not marks:
                    break
    legkit.finish(args.out, {"leg": "k-diffusion", "version": legkit.version("k-diffusion"),
                             "params": legkit.n_params(inner), "batch": args.batch, "config": cfg,
                             "loop": "train.py's step: Denoiser.loss, AdamW, clip 1.0, EMAWarmup",
                             "conditioning": "none", "marks": per_mark})


@torch.no_grad()
def sample(args) -> None:
    import k_diffusion as K

    d = Path(args.out) / f"mark-{args.mark}"
    cfg = json.loads((d / "config.json").read_text())
    mcfg = cfg["model"]
    inner = K.config.make_model(cfg)
    inner.load_state_dict(load_file(str(d / "model_ema.safetensors")))
    model = K.config.make_denoiser_wrapper(cfg)(inner.eval())
    steps = legkit.steps(args, STEPS)
    sigmas = K.sampling.get_sigmas_karras(steps, mcfg["sigma_min"], mcfg["sigma_max"], rho=7.0)
    legkit.draw(args, lambda first, count: K.sampling.sample_dpmpp_2m(
        model, legkit.noise(count, first=first) * sigmas[0], sigmas, disable=True),
        f"DPM-Solver++(2M), {steps} steps, Karras grid (k-diffusion)")


if __name__ == "__main__":
    legkit.main(train, sample)
