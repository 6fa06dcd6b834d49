"""Several processes (issue 14, part 5): `torchrun --nproc_per_node 2 kakusan train` (gloo on this CPU; what
`accelerate launch --multi_gpu` runs underneath) trains the same run as one process, only the main process writes, and a
run moves between 1 and 2 processes when resumed. (`accelerate launch --cpu --num_processes 2` starts a single process
unless MPI is set up: accelerate's CPU launcher is mpirun.)"""
import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from kakusan.cli import app
from kakusan.utils import io

BIN = os.path.dirname(sys.executable)
# fp32: one and two processes agree to float rounding; bf16 rounds the different batch splits apart
TINY = ["--precision", "fp32", "--data", "mnist", "--image-size", "16", "--preset", "xs", "--batch-size", "16",
        "--warmup-kimg", "0.032", "--checkpoint-kimg", "0.032", "--sample-kimg", "100", "--no-progress"]

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "torchrun")), reason="no torchrun launcher")


def launch(*args) -> dict:
    """``kakusan ARGS`` on two processes; the training summary of the main process."""
    r = subprocess.run([os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", os.path.join(BIN, "kakusan"),
                        *map(str, args)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])


def one(*args) -> dict:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1])


def weights(run):
    return io.load_tensors(run / "checkpoint" / "model" / "unet" / "diffusion_pytorch_model.raw.safetensors")


def close(a, b):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process: the run at 64 and at 128 images."""
    root = tmp_path_factory.mktemp("mp")
    one("train", "--out", root / "half", "--kimg", "0.064", *TINY)
    one("train", "--out", root / "full", "--kimg", "0.128", *TINY)
    return weights(root / "half"), weights(root / "full")


@pytest.mark.slow
def test_two_processes_train_the_same_run_and_only_the_main_one_writes(tmp_path, reference):
    summary = launch("train", "--out", tmp_path / "run", "--kimg", "0.064", *TINY)
    assert summary["processes"] == 2 and summary["replicas_identical"]
    assert summary["kimg"] == 0.064 and summary["step"] == 4  # global batch 16 = 2 x 8: 4 steps to 64 images
    state = io.read_json(tmp_path / "run" / "checkpoint" / "train_state.json")
    assert state["images_seen"] == 64 and state["step"] == 4
    assert len((tmp_path / "run" / "command.txt").read_text().splitlines()) == 1  # written by the main process only
    assert len(list((tmp_path / "run" / "samples").glob("*.png"))) == 1  # the final grid, once
    half, _ = reference
    got = weights(tmp_path / "run")
    assert close(got, half)  # the same run up to float rounding of the gradient all-reduce


@pytest.mark.slow
def test_a_run_moves_between_one_and_two_processes_when_resumed(tmp_path, reference):
    half, full = reference
    launch("train", "--out", tmp_path / "a", "--kimg", "0.064", *TINY)  # 2 processes, then 1
    one("train", "--out", tmp_path / "a", "--resume", "--kimg", "0.128", "--no-progress")
    one("train", "--out", tmp_path / "b", "--kimg", "0.064", *TINY)  # 1 process, then 2
    summary = launch("train", "--out", tmp_path / "b", "--resume", "--kimg", "0.128", "--no-progress")
    assert summary["replicas_identical"] and summary["step"] == 8
    for run in ("a", "b"):
        assert io.read_json(tmp_path / run / "checkpoint" / "train_state.json")["images_seen"] == 128
        assert close(weights(tmp_path / run), full)
    assert not close(half, full)  # the second half of the run did train
