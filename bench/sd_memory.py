"""Peak memory of `kakusan segment --sd` at Stable Diffusion 1.5's real geometry, default settings.

    python bench/sd_memory.py [--work /tmp/sd15-random] [--keep] [-- extra kakusan segment flags]

Builds a folder in SD 1.5's layout and size with random weights (no download): the 860 M-parameter UNet of SD 1.5's
config (64 x 64 latents, stored as its fp16 variant), SD's VAE, a CLIP ViT-L/14-sized text encoder (its 77 x 768
output) with a small tokenizer; then runs the command a user runs, `kakusan segment photo.png --sd FOLDER --out OUT`,
on scikit-image's astronaut at 512 x 512, in a fresh process, and reads its peak resident set size from the kernel
(``ru_maxrss`` of the child). Random weights segment nothing meaningful: this measures memory and time only.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, flip_sin_to_cos=True, freq_shift=0,
                 act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, norm_eps=1e-5)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)


def build(root: Path) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from kakusan.segment.sd import write_toy_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    params = sum(p.numel() for p in unet.parameters())
    unet.half().save_pretrained(root / "unet", variant="fp16")
    del unet
    AutoencoderKL(**SD_VAE).half().save_pretrained(root / "vae", variant="fp16")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
         "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1}))
    write_toy_tokenizer(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder")
    return {"unet_parameters": params}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/sd15-random")
    ap.add_argument("--keep", action="store_true", help="keep the folder (2 GB) for another run")
    ap.add_argument("extra", nargs="*", help="extra flags of kakusan segment (after --)")
    args = ap.parse_args()
    work = Path(args.work)
    folder = work / "sd15"
    info = {}
    if not (folder / "unet" / "config.json").is_file():
        t0 = time.perf_counter()
        info = build(folder)
        print(f"built {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
    from PIL import Image
    from skimage import data

    photo = work / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((512, 512)).save(photo)
    out = work / f"out-{int(time.time())}"
    kakusan = Path(sys.executable).with_name("kakusan")
    cmd = [str(kakusan), "segment", str(photo), "--sd", str(folder), "--out", str(out), "--no-progress", *args.extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    print(proc.stdout.strip()[-400:], proc.stderr.strip()[-400:], sep="\n", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    result = {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "peak_rss_gib": peak_kib / 2**20,
              "seconds": seconds, "cpu": cpu, **info}
    print(f"peak RSS {peak_kib / 2**20:.2f} GiB, {seconds:.0f} s, exit {proc.returncode}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
