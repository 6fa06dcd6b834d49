"""The time-to-quality race's legs (bench/race/) run their libraries' code end to end for a few seconds, so that an
API change in a peer shows here rather than in a half-hour bench. A leg whose library is not installed (the peers
live in .venv-peers, built by ``make bench-peers``) is skipped, saying so."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("time_to_quality", ROOT / "bench" / "time_to_quality.py")
ttq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ttq)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("race") / "digits.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({"images": torch.rand(128, 1, 32, 32, generator=g) * 2 - 1}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("leg", ["kakusan", "k-diffusion", "ddpm", "diffusers"])
def test_leg_trains_saves_a_mark_and_samples(leg, data, tmp_path):
    why = ttq.available(leg)
    if why:
        pytest.skip(why)
    job = ttq.jobs_for([leg], [0.03])[0]
    out = tmp_path / "leg"
    subprocess.run([job["python"], job["script"], "train", "--data", str(data), "--out", str(out), "--marks",
                    "0.03", "--batch", "16", "--smoke", *job["extra"]], check=True, cwd=ROOT, timeout=600)
    leg_info = json.loads((out / "leg.json").read_text())
    assert leg_info["conditioning"] == "none" and leg_info["params"] > 0
    (mark,) = leg_info["marks"]
    assert mark["minutes"] == 0.03 and mark["kimg"] > 0
    subprocess.run([job["python"], job["script"], "sample", "--out", str(out), "--mark", "0.03", "--n", "6",
                    "--batch", "4", "--steps", "3", "--smoke"], check=True, cwd=ROOT, timeout=600)
    images = load_file(str(out / "mark-0.03" / "samples.safetensors"))["images"]
    assert images.shape == (6, 1, 32, 32) and torch.isfinite(images).all() and images.abs().max() <= 1
    info = json.loads((out / "mark-0.03" / "sample.json").read_text())
    assert info["n"] == 6 and ", 3 " in info["sampler"]  # --steps reached the leg's sampler


def test_a_leg_needing_its_total_runs_once_per_budget():
    jobs = ttq.jobs_for(["diffusers", "kakusan"], [4, 8])
    assert [(j["name"], j["marks"]) for j in jobs] == [("diffusers-4", [4]), ("diffusers-8", [8]),
                                                      ("kakusan", [4, 8])]


def test_verdict_reads_minutes_to_the_peers_best():
    def row(leg, minutes, fd, std=0.1):
        return {"leg": leg, "minutes": minutes, "judges": {"j": {"fd": fd, "fd_std": std}}}
    rows = [row("kakusan", 4, 5.0), row("kakusan", 8, 2.0), row("kakusan", 16, 1.0),
            row("ddpm", 4, 9.0), row("ddpm", 8, 3.0), row("ddpm", 16, 2.5)]
    v = ttq.verdicts(rows)["ddpm"]["j"]
    assert v["peer_best_fd"] == 2.5 and v["peer_minutes"] == 16 and v["kakusan_minutes"] == 8
    assert v["minutes_ratio"] == 0.5 and v["last_budget_z"] == pytest.approx(1.5 / (0.02 ** 0.5), rel=1e-2)


def test_a_sample_waits_for_its_training_and_is_dropped_if_training_fails(tmp_path, capsys):
    trained, order = tmp_path / "leg.json", tmp_path / "order"
    ttq.run_pinned([
        ("sample", ["sh", "-c", f"echo sample >> {order}"], tmp_path / "s.log", trained.exists),
        ("train", ["sh", "-c", f"sleep 1; echo train >> {order}; touch {trained}"], tmp_path / "t.log"),
    ])
    assert order.read_text().split() == ["train", "sample"]
    ttq.run_pinned([("orphan", ["sh", "-c", f"echo orphan >> {order}"], tmp_path / "o.log", lambda: False),
                    ("failing train", ["false"], tmp_path / "f.log")])
    assert "orphan: dropped" in capsys.readouterr().out and "orphan" not in order.read_text()
