"""EmerDiff on a Stable Diffusion 1.x folder in SD's full layout, built here with random weights (no downloads):
UNet from SD 1.5's config at reduced width, VAE, a tiny CLIP text encoder and tokenizer, scheduler config."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kakusan.cli import app
from kakusan.utils import io

SD15_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, flip_sin_to_cos=True, freq_shift=0,
                 act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, norm_eps=1e-5)
WIDTH = dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=32, cross_attention_dim=32)  # SD 1.5: 320..1280, 768
SCHEDULER = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1}


def make_sd_folder(root, unet_overrides=None, text=True, fp16_unet=False):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from kakusan.segment.sd import write_toy_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SD15_UNET, **WIDTH, **(unet_overrides or {})})
    if fp16_unet:
        unet.half().save_pretrained(root / "unet", variant="fp16")
    else:
        unet.save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                  layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=64,
                  scaling_factor=0.18215).save_pretrained(root / "vae")
    io.write_json(SCHEDULER, root / "scheduler" / "scheduler_config.json")
    if text:
        vocab = write_toy_tokenizer(root / "tokenizer")
        CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=77, bos_token_id=0,
                                     eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return make_sd_folder(tmp_path_factory.mktemp("sd15-layout"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return [str(root / "a.png"), str(root / "b.png")]


def segment(photos, sd, out, *extra):
    return CliRunner().invoke(app, ["segment", *photos, "--sd", str(sd), "--out", str(out), "--k", "3", "--steps",
                                    "2", "--no-progress", *extra])


def test_an_sd15_layout_folder_segments_photos_through_the_cli(sd, photos, tmp_path):
    r = segment(photos, sd, tmp_path / "o1")
    assert r.exit_code == 0, r.output
    labels = np.load(tmp_path / "o1" / "a.labels.npy")
    assert labels.shape == (64, 64) and labels.max() < 3  # pixels (8 x 8 latent x 8), not latent positions
    for name in ("a.labels.png", "a.overlay.png", "b.labels.npy", "segment.json"):
        assert (tmp_path / "o1" / name).is_file()
    summary = io.read_json(tmp_path / "o1" / "segment.json")
    assert "up_blocks.1.attentions.0" in summary["feature_layer"] and summary["dtype"] == "float32"
    assert segment(photos, sd, tmp_path / "o2").exit_code == 0
    assert np.array_equal(labels, np.load(tmp_path / "o2" / "a.labels.npy"))  # deterministic
    r = segment(photos, sd, tmp_path / "o1")
    assert r.exit_code == 2 and "not empty" in r.output  # an earlier result is never overwritten
    r = segment(photos, sd, tmp_path / "o3", "--dtype", "bfloat16", "--chunk", "2", "--null-prompt")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "o3" / "a.labels.npy").shape == (64, 64)


def test_the_empty_prompt_is_clip_of_the_empty_string(sd):
    from transformers import CLIPTextModel, CLIPTokenizer

    from kakusan.segment.sd import load_sd

    _, _, cond, null = load_sd(sd)
    tok = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    enc = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    with torch.no_grad():
        want = enc(tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids)[0][0]
    assert cond.shape == (77, 32) and torch.allclose(cond, want) and torch.allclose(null, want)
    assert want.abs().mean() > 0.1  # not the all-zero stand-in
    _, _, cat, null2 = load_sd(sd, prompt="a cat")
    assert not torch.allclose(cat, want) and torch.allclose(null2, want)


def test_fp16_variant_weights_are_loaded(tmp_path, photos):
    from kakusan.segment.sd import load_sd

    root = make_sd_folder(tmp_path / "sd", fp16_unet=True)
    assert not (root / "unet" / "diffusion_pytorch_model.safetensors").exists()
    model, _, _, _ = load_sd(root)
    assert next(model.net.unet.parameters()).dtype == torch.float32  # loaded, then held in the dtype asked for
    model, _, _, _ = load_sd(root, dtype="bfloat16")
    assert next(model.net.unet.parameters()).dtype == torch.bfloat16
    assert segment(photos, root, tmp_path / "o").exit_code == 0


@pytest.mark.parametrize("case, message", [
    ("v-prediction", "only eps-prediction"), ("sd2", "SD 2.x UNet"), ("sdxl", "SDXL-style UNet"),
    ("no-tokenizer", "no tokenizer/"), ("no-text", "no text_encoder/ + tokenizer/")])
def test_a_folder_that_is_not_sd1x_is_refused_in_one_line_and_nothing_is_written(tmp_path, photos, case, message):
    import shutil

    overrides = {"sd2": {"use_linear_projection": True}, "sdxl": {"addition_embed_type": "text_time",
                                                                  "addition_time_embed_dim": 8,
                                                                  "projection_class_embeddings_input_dim": 80}}
    if case == "sdxl":  # write the config only: the refusal comes before any weight is read
        make_sd_folder(tmp_path / "sd", text=False)
        cfg = io.read_json(tmp_path / "sd" / "unet" / "config.json")
        io.write_json({**cfg, **overrides["sdxl"]}, tmp_path / "sd" / "unet" / "config.json")
    else:
        make_sd_folder(tmp_path / "sd", overrides.get(case), text=case != "no-text")
    if case == "v-prediction":
        io.write_json({**SCHEDULER, "prediction_type": "v_prediction"},
                      tmp_path / "sd" / "scheduler" / "scheduler_config.json")
    if case == "no-tokenizer":
        shutil.rmtree(tmp_path / "sd" / "tokenizer")
    r = segment(photos, tmp_path / "sd", tmp_path / "out")
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
