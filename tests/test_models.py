"""Model folders as a user handles them: converting the 0.1 layout, exporting a compact copy, describing one."""
import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tree_bytes
from kakusan import KakusanError
from kakusan.cli import app
from kakusan.diffusion import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.models import convert_legacy, describe, export_model
from kakusan.nets import UNetConfig
from kakusan.utils import io


def write_legacy(folder, model, emas):
    """A model folder exactly as kakusan 0.1 wrote it: one flat config, model.safetensors, ema-<std>.safetensors."""
    net = {k: v for k, v in model.net.config.to_dict().items() if k != "kind"}
    net["c_noise_scale"] = 250.0
    io.write_json({"kakusan_version": "0.1.0", "net": net,
                   "process": {"kind": "edm", "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2, "sigma_lo": 0.002,
                               "sigma_hi": 80.0},
                   "class_names": ["a", "b", "c"], "images_seen": 123, "ema_stds": sorted(emas)},
                  folder / "config.json")
    io.save_tensors(model.net.state_dict(), folder / "model.safetensors")
    for std, w in emas.items():
        io.save_tensors(w, folder / f"ema-{std:.3f}.safetensors")


def reference_0_1(weights, x, sigma, labels):
    """What kakusan 0.1 computed: EDM preconditioning with c_noise = ln(sigma) / 4 stretched by 250 for the UNet."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(**UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3).diffusers_kwargs())
    unet.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items()})
    s2 = sigma**2 + 0.25
    with torch.no_grad():
        F = unet(x / s2.sqrt(), torch.log(sigma) / 4 * 250.0, class_labels=labels).sample
    return 0.25 / s2 * x + sigma * 0.5 / s2.sqrt() * F


@pytest.fixture
def legacy(tmp_path):
    torch.manual_seed(0)
    model = Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess())
    ema = {0.1: {k: v + 0.01 * torch.randn_like(v) for k, v in model.net.state_dict().items()}}
    write_legacy(tmp_path / "old", model, ema)
    return tmp_path / "old", model.net.state_dict(), ema[0.1]


def test_a_converted_model_computes_what_0_1_computed(legacy, tmp_path):
    old, raw, ema = legacy
    before = tree_bytes(old)
    r = CliRunner().invoke(app, ["convert", str(old), str(tmp_path / "new")])
    assert r.exit_code == 0, r.output
    assert tree_bytes(old) == before  # the source is only read
    x, labels, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0, 2]), 1.7
    for ema_arg, weights in (("auto", ema), (0.1, ema), ("raw", raw)):
        model = Denoiser.from_pretrained(tmp_path / "new", ema=ema_arg)
        with torch.no_grad():
            ours = model(x, sigma, labels)
        assert torch.allclose(ours, reference_0_1(weights, x, torch.tensor(sigma), labels), atol=1e-5), ema_arg
    assert model.info["class_names"] == ["a", "b", "c"] and model.info["images_seen"] == 123


def test_loading_a_0_1_folder_says_how_to_convert_it_and_bad_conversions_touch_nothing(legacy, tmp_path):
    old, _, _ = legacy
    with pytest.raises(KakusanError, match="kakusan convert"):
        Denoiser.from_pretrained(old)
    (tmp_path / "taken").mkdir()
    with pytest.raises(KakusanError, match="already exists"):
        convert_legacy(old, tmp_path / "taken")
    convert_legacy(old, tmp_path / "new")
    with pytest.raises(KakusanError, match="already in the current layout"):
        convert_legacy(tmp_path / "new", tmp_path / "newer")


def test_export_keeps_only_the_chosen_emas_and_samples_the_same(tmp_path):
    torch.manual_seed(0)
    model = Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess())
    emas = {s: {k: v + s for k, v in model.net.state_dict().items()} for s in (0.05, 0.1)}
    model.save_pretrained(tmp_path / "m", emas)
    export_model(tmp_path / "m", tmp_path / "small", emas=[0.05], card={"command": "kakusan train ..."})
    small = describe(tmp_path / "small")
    assert small["ema_stds"] == [0.05] and small["weights"] == {"default": "ema-0.050", "sets": ["ema-0.050"]}
    a, b = Denoiser.from_pretrained(tmp_path / "m", ema=0.05), Denoiser.from_pretrained(tmp_path / "small")
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    card = json.loads((tmp_path / "small" / "card.json").read_text())
    assert card["command"] == "kakusan train ..." and card["ema_stds"] == [0.05]
    with pytest.raises(KakusanError, match="cannot export"):
        export_model(tmp_path / "m", tmp_path / "other", emas=[0.2])
    with pytest.raises(KakusanError, match="no raw weights"):
        Denoiser.from_pretrained(tmp_path / "small", ema="raw")
    export_model(tmp_path / "m", tmp_path / "raw", emas=[], raw=True, card={"command": "kakusan distill ..."})
    raw = Denoiser.from_pretrained(tmp_path / "raw")
    assert raw.info["weights"] == "raw" and describe(tmp_path / "raw")["weights"]["sets"] == ["raw"]
    assert all(torch.equal(v, raw.net.state_dict()[k]) for k, v in model.net.state_dict().items())
    with pytest.raises(KakusanError, match="holds no raw weights"):
        export_model(tmp_path / "small", tmp_path / "other", emas=[], raw=True)
