"""Sampling at scale: chunks written as they finish, resume after a kill with no seed missing or doubled, and the
same bytes from several processes as from one (issue 14, part 4)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import kakusan.sampling
from kakusan import KakusanError
from kakusan.diffusion import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.nets import UNetConfig
from kakusan.sampling import sample_to_folder

OPTS = dict(n=10, nfe=3, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale") / "model"
    torch.manual_seed(0)
    Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess(),
                    {"class_names": ["a", "b", "c"]}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whole(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "s"
    sample_to_folder(model, out, chunk=1000, **OPTS)
    return out


def _npz(folder):
    with np.load(folder / "samples.npz") as z:
        return {k: z[k] for k in z.files}


def test_chunked_sampling_writes_the_same_bytes_as_one_chunk(model, whole, tmp_path):
    sample_to_folder(model, tmp_path / "s", chunk=4, **OPTS)
    a, b = _npz(whole), _npz(tmp_path / "s")
    assert a.keys() == b.keys() == {"images", "seeds", "labels"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["seeds"].tolist() == list(range(10)) and a["images"].shape == (10, 1, 16, 16)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["grid.png", "images", "samples.npz",
                                                                  "sampling.json"]  # chunks/ removed when assembled
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 10


def test_a_killed_run_resumes_with_no_seed_missing_or_doubled(model, whole, tmp_path, monkeypatch):
    real, calls = kakusan.sampling.generate, []

    def dies_on_the_third_chunk(*a, **k):
        calls.append(a[1])
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill between chunks 2 and 3
        return real(*a, **k)
    monkeypatch.setattr(kakusan.sampling, "generate", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        sample_to_folder(model, tmp_path / "s", chunk=4, **OPTS)
    assert sorted(p.name for p in (tmp_path / "s" / "chunks").iterdir()) == ["000000.npz", "000001.npz"]
    (tmp_path / "s" / "images" / ".000009.png.x.tmp").write_bytes(b"half")  # a write cut by the kill
    with pytest.raises(KakusanError, match="not empty"):
        sample_to_folder(model, tmp_path / "s", chunk=4, **OPTS)  # without --resume nothing is touched
    with pytest.raises(KakusanError, match=r"other settings \(seed\)"):
        sample_to_folder(model, tmp_path / "s", chunk=4, seed=5, resume=True, **OPTS)
    calls.clear()
    monkeypatch.setattr(kakusan.sampling, "generate", real)
    out = sample_to_folder(model, tmp_path / "s", chunk=4, resume=True, **OPTS)
    assert out["generated_here"] == 2  # only the last chunk (seeds 8, 9) was left
    a, b = _npz(whole), _npz(tmp_path / "s")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "s" / "images").iterdir()) == [f"{i:06d}.png" for i in range(10)]


def test_a_failure_before_the_first_chunk_leaves_no_folder(model, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise KakusanError("no")
    monkeypatch.setattr(kakusan.sampling, "generate", broken)
    with pytest.raises(KakusanError):
        sample_to_folder(model, tmp_path / "s", chunk=4, **OPTS)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(model, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed")
    kakusan_cli = os.path.join(os.path.dirname(sys.executable), "kakusan")
    args = ["sample", str(model), "-n", "10", "--nfe", "3", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads per process: float reductions depend on them
    one = subprocess.run([kakusan_cli, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    r = subprocess.run([torchrun, "--nproc_per_node", "2", kakusan_cli, *args, "--chunk", "4", "--out",
                        str(tmp_path / "s")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    outs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert sorted(o["generated_here"] for o in outs) == [4, 6] and {o["processes"] for o in outs} == {2}
    a, b = _npz(tmp_path / "one"), _npz(tmp_path / "s")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 10


def test_the_producer_alone_makes_the_folders_images(model, whole):
    """Producing is apart from writing: the plan's producer yields, chunk by chunk and in any order, exactly the
    images sample_to_folder writes (clamped, one per seed)."""
    from kakusan.sampling import plan_samples

    plan = plan_samples(model, chunk=4, **{k: v for k, v in OPTS.items() if k != "progress"})
    assert len(plan.producer) == 3 and plan.settings["chunk"] == 4 and plan.nrow == 3
    batches = sorted(plan.producer.batches([2, 0, 1]), key=lambda b: b.index)
    assert [s for b in batches for s in b.seeds] == list(range(10))
    images = np.concatenate([b.images.numpy() for b in batches])
    assert np.array_equal(images, _npz(whole)["images"])
    assert np.array_equal(plan.arrays["labels"], _npz(whole)["labels"])
