"""What every leg of the time-to-quality race shares (bench/time_to_quality.py). Imports only torch and safetensors,
so that a leg runs in the peers' venv (``make bench-peers``) as well as in kakusan's.

A leg is one script with two commands:

    python leg.py train  --data D --out DIR --marks 4,8,16,32 [--smoke]
    python leg.py sample --out DIR --mark M --n 1000 [--smoke]

``train`` runs the library's own training code and stops its **training clock** at each mark (minutes), saving the
library's EMA weights under ``DIR/mark-M/`` — the clock is paused while saving, so a mark is M minutes of training,
start-up included. ``sample`` draws n images with the library's recommended sampler from the per-sample seeds 0..n-1
and writes ``DIR/mark-M/samples.safetensors`` (images in [-1, 1]) and ``DIR/mark-M/sample.json`` (seconds). Each
command's last line is one JSON object: the leg's exact settings, parameter count, kimg and img/s at each mark.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class Clock:
    """Training time in seconds, paused while a mark is saved."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def minutes(self) -> float:
        return self.seconds() / 60

    @contextmanager
    def pause(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - t0


def parse(argv=None, train_options=None) -> argparse.Namespace:
    """The two commands' arguments; ``train_options(parser)`` adds a leg's own options to ``train``."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True, help="safetensors file with 'images' (N, 1, 32, 32) in [-1, 1]")
    t.add_argument("--out", required=True)
    t.add_argument("--marks", default="4,8,16,32", help="minutes of training at which to save, increasing")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--smoke", action="store_true", help="a tiny network, for the suite's API check")
    if train_options:
        train_options(t)
    s = sub.add_parser("sample")
    s.add_argument("--out", required=True)
    s.add_argument("--mark", required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--batch", type=int, default=250)
    s.add_argument("--steps", type=int, default=None, help="sampling steps (default: the leg's own)")
    s.add_argument("--smoke", action="store_true", help="two sampling steps")
    args = ap.parse_args(argv)
    if args.command == "train":
        args.marks = [float(m) for m in args.marks.split(",")]
        if args.marks != sorted(args.marks) or args.marks[0] <= 0:
            raise SystemExit("error: --marks must be positive and increasing")
    return args


def load_images(path: str | Path) -> torch.Tensor:
    return load_file(str(path))["images"].float()


def mark_dir(out: str | Path, minutes: float) -> Path:
    return Path(out) / f"mark-{minutes:g}"


def noise(n: int, shape=(1, 32, 32), first: int = 0) -> torch.Tensor:
    """Sample i starts from the noise of seed i, whichever leg draws it."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(first + i)) for i in range(n)])


def draw(args, one_batch, sampler: str) -> None:
    """``one_batch(first, count)`` -> images of seeds first..first+count-1, over ``args.n`` in ``args.batch``-sized
    batches, timed; written as the mark's samples (:func:`write_samples`)."""
    t0 = time.perf_counter()
    images = torch.cat([one_batch(a, min(args.batch, args.n - a)) for a in range(0, args.n, args.batch)])
    print(json.dumps(write_samples(args.out, args.mark, images, time.perf_counter() - t0, sampler)), flush=True)


def steps(args, default: int) -> int:
    """Sampling steps: ``--steps``, else two for a smoke run, else the leg's default."""
    return args.steps or (2 if args.smoke else default)


def main(train, sample, train_options=None) -> None:
    args = parse(train_options=train_options)
    train(args) if args.command == "train" else sample(args)


def write_samples(out: str | Path, mark: str, images: torch.Tensor, seconds: float, sampler: str) -> dict:
    d = Path(out) / f"mark-{mark}"
    tmp = d / "samples.safetensors.tmp"
    save_file({"images": images.float().clamp(-1, 1).contiguous()}, str(tmp))
    tmp.replace(d / "samples.safetensors")  # atomically: a half-written file never looks done
    info = {"n": len(images), "seconds": round(seconds, 2), "s_per_img": round(seconds / len(images), 5),
            "sampler": sampler}
    (d / "sample.json").write_text(json.dumps(info))
    return info


def finish(out: str | Path, info: dict) -> None:
    """The leg's settings and per-mark numbers: ``DIR/leg.json`` and the last line of stdout."""
    (Path(out) / "leg.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)


def version(distribution: str) -> str:
    from importlib.metadata import version as installed

    return installed(distribution)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
