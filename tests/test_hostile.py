"""Hostile model folders: every damage a disk or a hand edit can do ends in one line naming the file, exit 2, and
nothing on disk changed (issue 14, part 3)."""
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from conftest import tree_bytes
from kakusan.cli import app
from kakusan.diffusion import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.nets import UNetConfig
from kakusan.utils import io

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "model"
    torch.manual_seed(0)
    Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess(),
                    {"class_names": ["a", "b", "c"]}).save_pretrained(folder)
    return folder


def _edit_json(path, change):
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def _flip(path, where):
    data = bytearray(path.read_bytes())
    data[where(len(data))] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated weights": (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:1000]),
                          "is not a readable safetensors file; it is truncated or damaged"),
    "bit flip in the weights": (lambda f: _flip(f / WEIGHTS, lambda n: n - 7), "do not match the checksum"),
    "bit flip in the header": (lambda f: _flip(f / WEIGHTS, lambda n: 20), "not a readable safetensors file"),
    "foreign safetensors": (lambda f: io.save_tensors({"other.weight": torch.ones(2)}, f / WEIGHTS), "incomplete"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{net: "), "config.json is not valid JSON"),
    "config not an object": (lambda f: (f / "config.json").write_text("[1, 2]"), "is not a model config"),
    "config missing a key": (lambda f: _edit_json(f / "config.json", lambda c: c.pop("process")),
                             "config.json is not a valid model config (missing key 'process')"),
    "config with an unknown key": (lambda f: _edit_json(f / "config.json", lambda c: c["net"].update(colour=1)),
                                   "config.json is not a valid model config"),
    "config with a wrong type": (lambda f: _edit_json(f / "config.json", lambda c: c["process"].update(sigma_min="x")),
                                 "config.json is not a valid model config"),
    "config from a newer kakusan": (lambda f: _edit_json(f / "config.json", lambda c: c.update(kakusan_version="9.0.0")),
                                    "newer than this kakusan"),
    "weights that do not fit the architecture": (
        lambda f: _edit_json(f / "unet" / "config.json", lambda c: c.update(block_out_channels=[16, 32, 48])),
        "the weights do not fit the architecture"),
    "config naming another architecture": (
        lambda f: _edit_json(f / "unet" / "config.json", lambda c: c.update(layers_per_block=2)),
        "the weights do not fit the architecture"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_model_folder_is_one_line_exit_2_and_untouched(good, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(good, folder)
    spoil, message = DAMAGES[damage]
    spoil(folder)
    before = tree_bytes(folder)
    r = CliRunner().invoke(app, ["sample", str(folder), "--out", str(tmp_path / "s"), "-n", "2", "--steps", "2",
                                 "--no-progress"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert tree_bytes(folder) == before and not (tmp_path / "s").exists()


def test_the_undamaged_folder_samples(good, tmp_path):
    r = CliRunner().invoke(app, ["sample", str(good), "--out", str(tmp_path / "s"), "-n", "2", "--steps", "2",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
