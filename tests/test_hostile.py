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


def _images(folder):
    """A folder of awkward but valid images, each 20 x 20."""
    from PIL import Image
    import numpy as np

    folder.mkdir()
    ramp = (np.arange(400).reshape(20, 20) * 160).astype(np.uint16)  # 0 .. 63,840 of 65,535
    Image.fromarray(ramp).save(folder / "deep16.png")  # a 16-bit grey PNG
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(folder / "palette.png", transparency=0)
    Image.new("RGBA", (20, 20), (0, 0, 255, 128)).save(folder / "alpha.png")
    frames = [Image.new("L", (20, 20), v) for v in (200, 10)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    return folder


def test_awkward_images_load_with_their_values(tmp_path):
    from kakusan.data.datasets import load_folder

    ds = load_folder(_images(tmp_path / "img"), channels=3)
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    x = {n: ds.images[i] for i, n in enumerate(names)}
    deep = x["deep16.png"][0]
    assert deep.min() == -1 and 0.9 < deep.max() < 0.96  # 63,840 / 65,535 of white: scaled, not clipped to white
    assert len(deep.unique()) > 200  # the ramp keeps its steps
    assert x["cmyk.jpg"][0].mean() > 0.9 and x["cmyk.jpg"][1:].mean() < -0.9  # cyan-free red
    assert torch.allclose(x["palette.png"][:, 0, 0], torch.tensor([1.0, -1, -1]))
    assert torch.allclose(x["alpha.png"][:, 0, 0], torch.tensor([-1.0, -1, 1]))
    assert torch.allclose(x["animated.gif"], torch.tensor(200 / 127.5 - 1))  # the first frame


@pytest.mark.parametrize("bad", ["corrupt", "bomb", "not an image"])
def test_a_bad_image_in_a_data_folder_is_one_line_naming_it(tmp_path, monkeypatch, bad):
    import numpy as np
    from PIL import Image

    folder = _images(tmp_path / "img")
    target = folder / "z.png"
    if bad == "corrupt":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8)).save(target)
        target.write_bytes(target.read_bytes()[:200])  # cut inside the pixel data
    elif bad == "bomb":
        Image.new("L", (64, 64), 9).save(target)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 px > twice the limit: PIL's bomb error
    else:
        target.write_text("hello")
    before = tree_bytes(folder)
    r = CliRunner().invoke(app, ["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--image-size", "16",
                                 "--preset", "xs", "--kimg", "0.016", "--no-progress"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot read image {target}"), r.output
    assert tree_bytes(folder) == before


@pytest.mark.parametrize("guide", ["mnist-s",          # a 32x32 guide for a 16x16 model
                                   "digit-scenes-s",   # token conditioning for a class-conditional model
                                   "five"])            # five classes for a three-class model
def test_a_guide_that_does_not_fit_is_one_line_exit_2_and_untouched(good, tmp_path, guide):
    main = tmp_path / "main"
    shutil.copytree(good, main)
    if guide == "five":
        guide = tmp_path / "five"
        Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=5),
                        EDMProcess()).save_pretrained(guide)
    before = tree_bytes(main)
    r = CliRunner().invoke(app, ["sample", str(main), "--guide", str(guide), "--guidance", "2", "--out",
                                 str(tmp_path / "s"), "-n", "2", "--steps", "2", "--no-progress"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert f"guide {guide} does not match" in lines[0], lines[0]
    assert tree_bytes(main) == before and not (tmp_path / "s").exists()
