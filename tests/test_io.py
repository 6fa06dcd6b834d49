"""Persistence: atomic writes, crash recovery, and loading that never unpickles."""
import pickle

import pytest
import torch

from kakusan.diffusion.denoiser import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.nets import NetConfig
from kakusan.utils import io


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    io.save_tensors({"a": torch.ones(3)}, path)

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(io, "save_file", broken)
    with pytest.raises(OSError):
        io.save_tensors({"a": torch.zeros(3)}, path)
    assert torch.equal(io.load_tensors(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind


def test_folder_swap_recovers_from_a_cut_between_renames(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "f").write_text("old")
    # a crash after "target -> target.old" and before "staging -> target"
    target.rename(tmp_path / "ckpt.old")
    assert io.resolve_folder(target) == tmp_path / "ckpt.old"
    staging = io.staging_folder(target)
    (staging / "f").write_text("new")
    io.swap_folder(staging, target)
    assert (target / "f").read_text() == "new" and not (tmp_path / "ckpt.old").exists()


def test_save_and_load_pretrained_without_pickle(tmp_path, monkeypatch):
    model = Denoiser.create(NetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess(),
                            {"class_names": ["a", "b", "c"]})
    ema = {0.1: {k: v + 1 for k, v in model.net.state_dict().items()}}
    model.save_pretrained(tmp_path / "m", ema_weights=ema)

    def forbidden(*a, **k):
        raise AssertionError("loading a checkpoint must not unpickle")
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    raw = Denoiser.from_pretrained(tmp_path / "m", ema="raw")
    averaged = Denoiser.from_pretrained(tmp_path / "m")  # auto: the longest EMA
    for k, v in model.net.state_dict().items():
        assert torch.equal(raw.net.state_dict()[k], v)
        assert torch.equal(averaged.net.state_dict()[k], v + 1)
    assert averaged.info["class_names"] == ["a", "b", "c"]
    files = sorted(str(p.relative_to(tmp_path / "m")) for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert files == ["config.json", "unet/config.json", "unet/diffusion_pytorch_model.raw.safetensors",
                     "unet/diffusion_pytorch_model.safetensors"]  # the default weights: the longest EMA
