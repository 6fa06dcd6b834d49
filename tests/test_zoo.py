"""The shipped models: each loads from safetensors + JSON, carries a card, and samples out of the box."""
import json

import pytest
from typer.testing import CliRunner

from kakusan.cli import app
from kakusan.diffusion import Denoiser
from kakusan.utils import io
from kakusan.zoo import ZOO_DIR, available

MODELS = ["mnist-s", "mnist-s-guide", "mnist-xs-guide"]


def test_every_shipped_folder_has_a_card_with_its_command():
    names = available()
    assert set(MODELS) <= set(names)
    for name in names + ["featurenet-mnist", "perceptual-mnist"]:
        card = io.read_json(ZOO_DIR / name / "card.json")
        assert card["command"].startswith("kakusan ") and "seed" in card
        assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl") for p in (ZOO_DIR / name).iterdir())


def test_shipped_size_budget():
    size = sum(p.stat().st_size for p in ZOO_DIR.rglob("*") if p.is_file())
    assert size < 40 * 2**20  # the package's budget (issue 13: keep the zoo under ~40 MB)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_models_load_and_agree_on_conditioning(name):
    m = Denoiser.from_pretrained(name)
    assert m.cond_type == "class" and m.num_classes == 10
    assert m.info["ema_stds"] and m.info["images_seen"] > 0


def test_guide_saw_about_a_sixteenth_of_the_images():
    main, guide = Denoiser.from_pretrained("mnist-s"), Denoiser.from_pretrained("mnist-xs-guide")
    assert 12 <= main.info["images_seen"] / guide.info["images_seen"] <= 20
    assert sum(p.numel() for p in guide.parameters()) < sum(p.numel() for p in main.parameters()) / 4


def test_mnist_s_ships_its_tuned_autoguidance_with_a_shorter_trained_guide_of_its_own_kind():
    from kakusan.guidance.guided import tuned_guidance

    t = tuned_guidance("mnist-s")
    assert t["guide"] == "mnist-s-guide" and t["w"] > 1 and "guidance-sweep" in t["note"]
    main, guide = Denoiser.from_pretrained("mnist-s", ema=t["ema"]), Denoiser.from_pretrained(t["guide"],
                                                                                              ema=t["guide_ema"])
    assert 12 <= main.info["images_seen"] / guide.info["images_seen"] <= 20
    assert main.info["train_config"]["preset"] == guide.info["train_config"]["preset"]  # same capacity, less training
    heun = tuned_guidance("mnist-s", sampling="heun:35")  # Heun 35's own w, guided inside an interval
    assert heun["tuned_for"] == "heun:35" and heun["guide"] == t["guide"] and heun["interval"][0] < heun["interval"][1]


def test_sample_shipped_model_by_name(tmp_path):
    r = CliRunner().invoke(app, ["sample", "mnist-s", "--out", str(tmp_path / "s"), "-n", "4", "--steps", "2",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["n"] == 4


@pytest.mark.slow
def test_the_scene_model_reads_sentences_and_segments_a_held_out_scene(tmp_path):
    from kakusan.data import load_dataset
    from kakusan.sampling import sentence
    from kakusan.segment import EmerDiffSettings, segment_image

    m = Denoiser.from_pretrained("digit-scenes-s")
    assert m.cond_type == "tokens" and m.image_shape == (1, 48, 48) and m.info["sentence_length"] == 5
    assert sentence("3 7", m).tolist() == [1, 5, 9, 0, 0]
    scenes = load_dataset("digit-scenes-heldout", image_size=48)
    r = segment_image(m, scenes.images[0], scenes.tokens[0], EmerDiffSettings(k=4, steps=2))
    assert r["labels"].shape == (48, 48) and len(r["labels"].unique()) <= 4


@pytest.mark.slow
def test_shipped_model_samples_and_reports_with_its_default_few_step_setting(tmp_path):
    """mnist-s ships optimised grids and a default (DPM-Solver++(3M) on its grid, chosen by bench/nfe.py); sample and
    report use it, say why, and fall back to Karras' grid where no grid is stored for the asked number of steps."""
    m = Denoiser.from_pretrained("mnist-s")
    own = m.default_sampling()
    assert own["schedule"] == "optimized" and m.stored_grid(own["sampler"], own["nfe"]) is not None
    r = CliRunner().invoke(app, ["report", "mnist-s", "--out", str(tmp_path / "r"), "--n", "20", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert (out["sampler"], out["nfe"], out["schedule"]) == (own["sampler"], own["nfe"], "optimized")
    html = (tmp_path / "r" / "report.html").read_text()
    assert f"{own['sampler']}, {own['nfe']} NFE, optimized grid" in html and "1.05x of Heun" in html
    r = CliRunner().invoke(app, ["sample", "mnist-s", "--out", str(tmp_path / "s"), "-n", "2", "--steps", "7",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["schedule"] == "auto"
