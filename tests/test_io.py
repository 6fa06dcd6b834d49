"""Persistence: atomic writes, crash recovery, and loading that never unpickles."""
import errno
import os
import pickle

import numpy as np
import pytest
import torch

from kakusan import KakusanError
from kakusan.diffusion.denoiser import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.nets import NetConfig
from kakusan.utils import io


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    io.save_tensors({"a": torch.ones(3)}, path)

    def broken(self, data):  # the one write path of every writer: half the bytes, then the disk is full
        with open(self, "wb") as f:
            f.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io.Path, "write_bytes", broken)
    with pytest.raises(KakusanError, match=f"cannot write {path}: the disk is full"):
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


def test_a_damaged_safetensors_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "w.safetensors"
    io.save_tensors({"a": torch.arange(64.0), "b": torch.ones(2, 3)}, path)
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-5] ^= 0x10  # one bit inside the data of "a" or "b"
    path.write_bytes(bytes(flipped))
    with pytest.raises(KakusanError, match="damaged: its tensors do not match the checksum"):
        io.load_tensors(path)
    header = bytearray(good)
    header[12] ^= 0x7F  # inside the JSON header
    path.write_bytes(bytes(header))
    with pytest.raises(KakusanError, match="not a readable safetensors file"):
        io.load_tensors(path)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(KakusanError, match=f"{path} is not a readable safetensors file; it is truncated"):
        io.load_tensors(path)
    path.write_bytes(good)
    assert torch.equal(io.load_tensors(path)["a"], torch.arange(64.0))


def test_written_files_and_folders_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "UMASK", 0o022)
    io.write_json({"a": 1}, tmp_path / "x.json")
    io.save_tensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")  # safetensors writes a file of its own
    io.write_npz(tmp_path / "s.npz", {"a": np.zeros(2)})
    staging = io.staging_folder(tmp_path / "ckpt")
    for name in ("x.json", "w.safetensors", "s.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert staging.stat().st_mode & 0o777 == 0o755


def test_leftovers_of_an_interrupted_write_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".w.json.abc123.tmp").write_text("half")
    (tmp_path / ".ckpt.xyz.tmp").mkdir()
    (tmp_path / ".ckpt.xyz.tmp" / "model.safetensors").write_text("half")
    (tmp_path / ".other.json.q.tmp").write_text("not ours to touch")
    io.write_json({"a": 1}, tmp_path / "w.json")
    io.swap_folder(io.staging_folder(tmp_path / "ckpt"), tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.q.tmp", "ckpt", "w.json"]


def test_every_rename_is_followed_by_an_fsync_of_its_folder(tmp_path, monkeypatch):
    events, replace = [], os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("rename", str(b))), replace(a, b)))
    monkeypatch.setattr(io, "fsync_dir", lambda d: events.append(("fsync", str(d))))
    io.write_json({"a": 1}, tmp_path / "w.json")
    (tmp_path / "ckpt").mkdir()
    io.swap_folder(io.staging_folder(tmp_path / "ckpt"), tmp_path / "ckpt")
    d = str(tmp_path)
    assert events == [("rename", f"{d}/w.json"), ("fsync", d), ("rename", f"{d}/ckpt.old"), ("fsync", d),
                      ("rename", f"{d}/ckpt"), ("fsync", d)]


def test_a_read_only_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(io.tempfile, "mkdtemp", read_only)
    with pytest.raises(KakusanError, match=f"cannot write into {tmp_path}: the file system is read-only"):
        io.write_json({"a": 1}, tmp_path / "x.json")
    with pytest.raises(KakusanError, match=f"cannot write into {tmp_path}: the file system is read-only"):
        io.staging_folder(tmp_path / "ckpt")
