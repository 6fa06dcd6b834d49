"""Kill anywhere: SIGKILL `kakusan train` and `kakusan sample` at random moments (some inside checkpoint writes),
resume each time, and compare with uninterrupted runs bit for bit.

    python bench/kill_resume.py [--kills 20] [--sample-kills 8] [--pair-kills 8] [--seed 0]

Training: a small run (preset xs, 16x16 MNIST, a checkpoint every 64 images) is first run uninterrupted. The same run
is then started and killed ``--kills`` times: at a random moment, or — every third kill — as soon as a checkpoint write
is seen in progress (its staging folder exists; the writer waits ``KAKUSAN_SLOW_WRITES`` seconds before each rename so
that the window is wide), then resumed with ``--resume``. After every kill the checkpoint left on disk must load
(model, EMAs, optimizer, counters). At the end the raw weights, every EMA, the optimizer state and images-seen must
equal the uninterrupted run's exactly. Sampling: the same with ``kakusan sample --chunk`` and ``--resume``; the
samples.npz must be byte-identical in content. Pair generation for distillation (``kakusan distill pairs``, resumed by
running it again): every shard must equal the uninterrupted run's. Last line: one JSON object
``{kills, resumed, corrupt, identical, images_seen, sample: {kills, resumed, identical}, pairs: {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KAKUSAN = [sys.executable, "-m", "kakusan.cli"]
TRAIN = ["--data", "mnist", "--image-size", "16", "--preset", "xs", "--batch-size", "16", "--kimg", "4",
         "--warmup-kimg", "0.1", "--checkpoint-kimg", "0.064", "--sample-kimg", "100",
         "--no-progress"]
SAMPLE = ["--n", "600", "--nfe", "3", "--chunk", "50", "--batch-size", "25", "--no-progress"]
PAIRS = ["--n", "600", "--sampler", "euler", "--nfe", "3", "--shard-size", "50", "--batch-size", "25", "--no-progress"]


def run(args: list[str], env=None) -> subprocess.CompletedProcess:
    r = subprocess.run(KAKUSAN + args, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r


def run_and_kill(args: list[str], env: dict, rng: random.Random, staging_glob: tuple[Path, str] | None,
                 max_wait: float) -> bool:
    """Start ``kakusan args``; kill it at a random moment (or, with ``staging_glob``, when a write is in progress).
    Returns True if it was killed, False if it finished first."""
    p = subprocess.Popen(KAKUSAN + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + (max_wait if staging_glob else rng.uniform(1.0, max_wait))
    while p.poll() is None and time.time() < deadline:
        if staging_glob and list(staging_glob[0].glob(staging_glob[1])):
            break
        time.sleep(0.005)
    if p.poll() is not None:
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{p.stderr.read()[-3000:]}")
        return False
    p.send_signal(signal.SIGKILL)
    p.wait()
    return True


def checkpoint_loads(run_dir: Path) -> bool:
    """Whether the checkpoint on disk (if any) loads: model, every EMA, the optimizer, the counters."""
    from kakusan.diffusion import Denoiser
    from kakusan.train.checkpoint import has_checkpoint
    from kakusan.utils import io

    if not has_checkpoint(run_dir / "checkpoint"):
        return True  # killed before the first checkpoint: nothing to load, and resume starts from scratch
    try:
        folder = io.resolve_folder(run_dir / "checkpoint")
        for f in folder.rglob("*.safetensors"):
            io.load_tensors(f)
        io.read_json(folder / "train_state.json")
        Denoiser.from_pretrained(run_dir)
        return True
    except Exception as e:  # noqa: BLE001 — any failure here is what the bench counts
        print(f"    corrupt checkpoint: {e}", flush=True)
        return False


def tensors(folder: Path) -> dict:
    from kakusan.utils import io

    return {str(p.relative_to(folder)): io.load_tensors(p) for p in sorted(folder.rglob("*.safetensors"))}


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(a[f].keys() == b[f].keys() and
                                        all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a)


def bench_training(tmp: Path, kills: int, rng: random.Random, env: dict) -> dict:
    full, killed = tmp / "full", tmp / "killed"
    t0 = time.time()
    run(["train", "--out", str(full), *TRAIN])
    duration = time.time() - t0
    print(f"uninterrupted training: {duration:.1f} s", flush=True)
    slow = {**env, "KAKUSAN_SLOW_WRITES": "0.3"}
    done, killed_n, resumed, corrupt = False, 0, 0, 0
    args = ["train", "--out", str(killed), *TRAIN]
    while killed_n < kills:
        in_write = killed_n % 3 == 2
        watch = (killed, ".checkpoint.*.tmp") if in_write else None
        if run_and_kill(args, slow if in_write else env, rng, watch, 0.3 * duration):
            killed_n += 1
            ok = checkpoint_loads(killed)
            corrupt += not ok
            print(f"  kill {killed_n:2d} ({'inside a checkpoint write' if in_write else 'random moment'}): "
                  f"checkpoint {'loads' if ok else 'CORRUPT'}", flush=True)
        else:
            done = True
            break
        args = ["train", "--out", str(killed), "--resume", "--no-progress"]
        resumed += 1
    if not done:
        run(["train", "--out", str(killed), "--resume", "--no-progress"])
    from kakusan.utils import io

    state_a = io.read_json(full / "checkpoint" / "train_state.json")
    state_b = io.read_json(killed / "checkpoint" / "train_state.json")
    identical = same_tensors(tensors(full / "checkpoint"), tensors(killed / "checkpoint")) and \
        state_a["images_seen"] == state_b["images_seen"] and state_a["step"] == state_b["step"]
    print(f"training: {killed_n} kills, {resumed} resumes, {corrupt} corrupt checkpoints, final state "
          f"{'bit-identical' if identical else 'DIFFERENT'} (images seen {state_b['images_seen']})", flush=True)
    return {"kills": killed_n, "resumed": resumed, "corrupt": corrupt, "identical": identical,
            "images_seen": state_b["images_seen"], "expected_images_seen": state_a["images_seen"]}


def bench_sampling(tmp: Path, model: Path, kills: int, rng: random.Random, env: dict) -> dict:
    full, killed = tmp / "s-full", tmp / "s-killed"
    t0 = time.time()
    run(["sample", str(model), "--out", str(full), *SAMPLE])
    duration = time.time() - t0
    print(f"uninterrupted sampling: {duration:.1f} s", flush=True)
    n_killed, resumed = 0, 0
    while n_killed < kills:
        args = ["sample", str(model), "--out", str(killed), *SAMPLE] + (["--resume"] if n_killed else [])
        if not run_and_kill(args, env, rng, None, 0.6 * duration):
            break
        n_killed += 1
        resumed += 1
        print(f"  sample kill {n_killed}", flush=True)
    run(["sample", str(model), "--out", str(killed), *SAMPLE, "--resume"])
    with np.load(full / "samples.npz") as a, np.load(killed / "samples.npz") as b:
        identical = sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
        seeds = b["seeds"].tolist()
    pngs = sorted(p.name for p in (killed / "images").iterdir())
    identical = identical and seeds == list(range(600)) and pngs == [f"{i:06d}.png" for i in range(600)]
    print(f"sampling: {n_killed} kills, {resumed} resumes, samples {'identical' if identical else 'DIFFERENT'}",
          flush=True)
    return {"kills": n_killed, "resumed": resumed, "identical": identical}


def bench_pairs(tmp: Path, teacher: Path, kills: int, rng: random.Random, env: dict) -> dict:
    full, killed = tmp / "p-full", tmp / "p-killed"
    args = lambda out: ["distill", "pairs", "--teacher", str(teacher), "--out", str(out), *PAIRS]  # noqa: E731
    t0 = time.time()
    run(args(full))
    duration = time.time() - t0
    print(f"uninterrupted pair generation: {duration:.1f} s", flush=True)
    n_killed = 0
    while n_killed < kills and run_and_kill(args(killed), env, rng, None, 0.6 * duration):
        n_killed += 1
        print(f"  pairs kill {n_killed}", flush=True)
    run(args(killed))  # rerunning resumes
    a, b = tensors(full), tensors(killed)
    identical = same_tensors(a, b) and len(a) == 600 // 50
    print(f"pairs: {n_killed} kills, {n_killed} resumes, {len(b)} shards {'identical' if identical else 'DIFFERENT'}",
          flush=True)
    return {"kills": n_killed, "resumed": n_killed, "identical": identical, "shards": len(b)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--sample-kills", type=int, default=8)
    ap.add_argument("--pair-kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        training = bench_training(tmp, args.kills, rng, env)
        sampling = bench_sampling(tmp, tmp / "full", args.sample_kills, rng, env)
        pairs = bench_pairs(tmp, tmp / "full", args.pair_kills, rng, env)
    print(json.dumps({**training, "sample": sampling, "pairs": pairs}))


if __name__ == "__main__":
    main()
