"""Training and sampling throughput of kakusan against a plain PyTorch/diffusers loop, measured side by side.

    python bench/throughput.py [--preset s] [--batch 64] [--rounds 3] [--steps 8] [--only train|sampling|precision]

Training: img/s of the kakusan trainer and of a plain reference loop (the same diffusers UNet2DModel config, fp32,
AdamW, same batch, no tricks), their ratio, sampling img/s (Heun, 35 NFE), and achieved GFLOP/s next to this machine's
measured matmul peak. Rounds alternate the two loops so machine noise hits both alike.

Sampling (the shipped mnist-s): network calls per second against the batch size (1 ... 256), and at batch 64 what
``torch.inference_mode`` (instead of ``no_grad``), channels-last memory and ``torch.compile`` buy, each as a ratio to
the plain setting measured alternately in the same run.

Precision: the trainer's img/s and the sampler's image-calls/s (mnist-s, batch 64) in fp32 and under bf16 autocast,
alternating rounds, as ratios, beside the CPU's name, whether it has AMX-BF16, and what ``--precision auto`` picks
on it. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from kakusan.data import load_dataset
from kakusan.diffusion.generation import generate
from kakusan.diffusion.training import Trainer
from kakusan.diffusion.training import TrainConfig


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best / 1e9


def plain_loop(unet_config: dict, images: torch.Tensor, batch: int):
    """The reference: a textbook DDPM epsilon-prediction step on a fresh UNet2DModel, fp32, torch AdamW defaults."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel.from_config(unet_config)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    labels = torch.randint(0, 10, (len(images),))
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + batch) % (len(images) - batch)
        x0, y = images[i:i + batch], labels[i:i + batch]
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,))
        abar = torch.cos(t.float() / 1000 * torch.pi / 2).pow(2).view(-1, 1, 1, 1).clamp(min=1e-4)
        x = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(x, t, class_labels=y).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
    return step


def rate(step, n: int, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n * batch / (time.perf_counter() - t0)


def train_flops_per_image(trainer: Trainer, batch: int) -> float:
    x = torch.randn(batch, 1, 32, 32)
    with FlopCounterMode(display=False) as fc:
        trainer.objective.loss(x, torch.zeros(batch, dtype=torch.long), torch.Generator().manual_seed(0)).backward()
    trainer.objective.optimizers["model"].zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def sampling_rate(model, batch: int, calls: int, grad_mode=torch.no_grad) -> float:
    """Images x network calls per second: ``calls`` Euler steps on a batch (the work of any one-call-per-step
    sampler), after one warm-up call."""
    from kakusan.diffusion.samplers import sample_euler
    from kakusan.diffusion import schedules

    x = torch.randn(batch, *model.image_shape)
    cond = torch.arange(batch) % 10
    grid = schedules.karras_sigmas(calls, 0.002, 80)
    with grad_mode():
        model(x, torch.tensor(1.0), cond)
        t0 = time.perf_counter()
        sample_euler(lambda z, s: model(z, s, cond), x, grid)
    return batch * calls / (time.perf_counter() - t0)


def sampling_bench(rounds: int) -> dict:
    from kakusan.diffusion import Denoiser
    from kakusan.models import model_folder

    model = Denoiser.from_pretrained(model_folder("mnist-s"))
    by_batch = {}
    for b in (1, 4, 16, 64, 128, 256):
        calls = max(4, min(40, 2048 // b))
        by_batch[b] = statistics.median(sampling_rate(model, b, calls) for _ in range(rounds))
        print(f"sampling, batch {b:4d}: {by_batch[b]:8.1f} image-calls/s", flush=True)
    variants = {"inference_mode": (model, torch.inference_mode)}
    cl = Denoiser.from_pretrained(model_folder("mnist-s")).to(memory_format=torch.channels_last)
    variants["channels_last"] = (cl, torch.no_grad)
    compiled = Denoiser.from_pretrained(model_folder("mnist-s"))
    compiled.net = torch.compile(compiled.net, dynamic=False)
    t0 = time.perf_counter()
    sampling_rate(compiled, 64, 1)
    compile_seconds = time.perf_counter() - t0
    variants["compile"] = (compiled, torch.no_grad)
    ratios = {}
    for name, (m, mode) in variants.items():
        base, other = [], []
        for _ in range(rounds):
            base.append(sampling_rate(model, 64, 10))
            other.append(sampling_rate(m, 64, 10, mode))
        ratios[name] = statistics.median(other) / statistics.median(base)
        print(f"sampling, batch 64, {name}: x{ratios[name]:.3f} against no_grad / contiguous / eager", flush=True)
    return {"image_calls_per_s": {str(b): round(v, 1) for b, v in by_batch.items()},
            "ratios_at_batch_64": {k: round(v, 3) for k, v in ratios.items()},
            "compile_warmup_s": round(compile_seconds, 1)}


def precision_bench(preset: str, batch: int, steps: int, rounds: int) -> dict:
    """fp32 against bf16 autocast, training and sampling, measured alternately in this run."""
    from kakusan.diffusion import Denoiser
    from kakusan.models import model_folder
    from kakusan.utils.precision import cpu_has_amx_bf16, cpu_name, resolve_precision

    trainers = {p: Trainer(TrainConfig(preset=preset, batch_size=batch, precision=p), tempfile.mkdtemp() + "/run",
                           progress=False) for p in ("fp32", "bf16")}
    samplers = {p: Denoiser.from_pretrained(model_folder("mnist-s")) for p in ("fp32", "bf16")}
    for p in samplers:
        samplers[p].set_precision(p)
        for _ in range(2):  # warm-up
            trainers[p].one_step()
    train, sample = {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}
    for r in range(rounds):
        for p in ("fp32", "bf16"):
            train[p].append(rate(trainers[p].one_step, steps, batch))
            sample[p].append(sampling_rate(samplers[p], 64, 10))
        print(f"round {r + 1}: train fp32 {train['fp32'][-1]:.1f} / bf16 {train['bf16'][-1]:.1f} img/s; sampling "
              f"fp32 {sample['fp32'][-1]:.0f} / bf16 {sample['bf16'][-1]:.0f} image-calls/s", flush=True)
    med = {k: {p: statistics.median(v[p]) for p in v} for k, v in (("train", train), ("sample", sample))}
    out = {"cpu": cpu_name(), "amx_bf16": cpu_has_amx_bf16(), "auto_picks": resolve_precision("auto"),
           "preset": preset, "batch": batch,
           "train_img_s": {p: round(v, 2) for p, v in med["train"].items()},
           "train_bf16_over_fp32": round(med["train"]["bf16"] / med["train"]["fp32"], 3),
           "sample_image_calls_s": {p: round(v, 1) for p, v in med["sample"].items()},
           "sample_bf16_over_fp32": round(med["sample"]["bf16"] / med["sample"]["fp32"], 3),
           "matmul_gflops": {"fp32": round(matmul_peak(torch.float32), 1),
                             "bf16": round(matmul_peak(torch.bfloat16), 1)}}
    print(f"{out['cpu']} (AMX-BF16: {out['amx_bf16']}; auto picks {out['auto_picks']}): training bf16/fp32 "
          f"x{out['train_bf16_over_fp32']}, sampling x{out['sample_bf16_over_fp32']}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="s")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sample-n", type=int, default=64)
    ap.add_argument("--only", choices=["train", "sampling", "precision"], help="one part of the bench")
    args = ap.parse_args()
    if args.only == "sampling":
        print(json.dumps({"sampling": sampling_bench(args.rounds)}))
        return
    if args.only == "precision":
        print(json.dumps({"precision": precision_bench(args.preset, args.batch, args.steps, args.rounds)}))
        return

    config = TrainConfig(preset=args.preset, batch_size=args.batch, precision="fp32")  # against a plain fp32 loop
    trainer = Trainer(config, tempfile.mkdtemp() + "/run", progress=False)
    images = load_dataset("mnist").images
    plain = plain_loop(dict(trainer.model.net.unet.config), images, args.batch)
    for _ in range(2):  # warm-up both
        trainer.one_step()
        plain()
    ours, ref = [], []
    for r in range(args.rounds):
        ours.append(rate(trainer.one_step, args.steps, args.batch))
        ref.append(rate(plain, args.steps, args.batch))
        print(f"round {r + 1}: kakusan {ours[-1]:.1f} img/s, plain {ref[-1]:.1f} img/s", flush=True)
    train_img_s, plain_img_s = statistics.median(ours), statistics.median(ref)

    flops = train_flops_per_image(trainer, args.batch)
    model = trainer.model.eval()
    t0 = time.perf_counter()
    generate(model, range(args.sample_n), cond=torch.arange(args.sample_n) % 10, sampler="heun", steps=18,
             progress=False)
    sample_img_s = args.sample_n / (time.perf_counter() - t0)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    result = {
        "preset": args.preset, "batch": args.batch, "precision": config.precision,
        "train_img_s": round(train_img_s, 2), "plain_img_s": round(plain_img_s, 2),
        "ratio": round(train_img_s / plain_img_s, 3), "sample_img_s": round(sample_img_s, 2),
        "sample_nfe": 35, "train_gflop_per_img": round(flops / 1e9, 4),
        "achieved_gflops": round(flops * train_img_s / 1e9, 2),
        "peak_gflops": round(peak32, 1), "peak_gflops_bf16": round(peak16, 1),
    }
    print(f"kakusan {train_img_s:.1f} img/s vs plain {plain_img_s:.1f} img/s -> ratio {result['ratio']:.2f}; "
          f"sampling {sample_img_s:.1f} img/s; {result['achieved_gflops']} GFLOP/s of "
          f"{result['peak_gflops']} (fp32 matmul peak)")
    if args.only is None:
        result["sampling"] = sampling_bench(args.rounds)
        result["precision"] = precision_bench(args.preset, args.batch, args.steps, args.rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
