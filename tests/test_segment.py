"""EmerDiff: modulation, attention replay, label maps, the SD-layout path, mIoU and the digit-scenes testbed."""
import numpy as np
import pytest
import torch

from kakusan import KakusanError
from kakusan.diffusion import Denoiser
from kakusan.diffusion.process import EDMProcess
from kakusan.nets import UNetConfig
from kakusan.segment import EmerDiffSettings, Probe, matched_iou, probed, segment_image
from kakusan.segment.emerdiff import denoise_run

SMALL = dict(k=3, steps=2, t_m=281)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="tokens", vocab_size=12),
                           EDMProcess()).eval()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    x = torch.full((1, 16, 16), -1.0)
    x[:, 2:8, 3:9], x[:, 9:14, 8:15] = 1.0, 0.3
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_with_lambda_zero_every_difference_map_is_zero(model, image):
    r = segment_image(model, image, None, EmerDiffSettings(lam=0.0, **SMALL))
    assert r["diffs"].shape == (3, 16, 16) and r["diffs"].abs().max() < 1e-6
    r = segment_image(model, image, None, EmerDiffSettings(lam=10.0, **SMALL))
    assert r["diffs"].abs().max() > 1e-3  # so the zero above is the modulation's absence, not a dead pipeline


def test_the_label_map_partitions_the_image_into_at_most_k_segments_and_is_deterministic(model, image):
    r = segment_image(model, image, None, EmerDiffSettings(**SMALL))
    assert r["labels"].shape == (16, 16) and r["labels"].dtype == torch.long
    assert set(r["labels"].unique().tolist()) <= {0, 1, 2} and r["kmeans"].shape == (4, 4)
    assert r["naive"].shape == (16, 16)
    again = segment_image(model, image, None, EmerDiffSettings(**SMALL))
    assert torch.equal(r["labels"], again["labels"]) and torch.equal(r["diffs"], again["diffs"])


def _layer_outputs(model, x, sigma, cond, probe):
    """Every attention layer's output of one network call under ``probe`` (forward hooks on the modules)."""
    unet, outs, handles = model.net.unet, {}, []
    for name in [k[:-len(".processor")] for k in unet.attn_processors]:
        handles.append(unet.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: outs.__setitem__(name, o.detach().clone())))
    try:
        with probed(unet, probe):
            model(x, sigma, cond)
    finally:
        for h in handles:
            h.remove()
    return outs


def test_modulation_adds_c_m_at_the_chosen_layer_only_and_upstream_layers_are_untouched(model):
    unet = model.net.unet
    layers = [k[:-len(".processor")] for k in unet.attn_processors]
    target = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    x, sigma, cond = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3)), 0.8, None
    record = Probe(record=True)
    plain = _layer_outputs(model, x, sigma, cond, record)
    mask = (torch.arange(16) % 3 == 0).float()  # the 4 x 4 layer has 16 tokens
    mod = torch.stack([10 * mask, -10 * mask])
    changed = _layer_outputs(model, x, sigma, cond, Probe(maps=record.maps, mod_layer=target, mod=mod))
    i = layers.index(target)
    for name in layers[:i]:
        assert torch.equal(plain[name], changed[name]), name
    assert torch.allclose(changed[target] - plain[target], mod[:, :, None].expand_as(plain[target]), atol=1e-5)
    assert not torch.allclose(changed[layers[i + 1]], plain[layers[i + 1]])  # the downstream effect exists


def test_replayed_attention_maps_equal_the_recorded_ones(model, image):
    x = image[None] + 0.5 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    grid = torch.tensor([0.5, 0.1, 0.0])
    probe = Probe(record=True)
    with probed(model.net.unet, probe):
        denoise_run(model, x, None, grid, probe)
        recorded = probe.maps
        probe.record, probe.replay, probe.trace = False, True, []
        probe.mod_layer = "up_blocks.0.attentions.0.transformer_blocks.0.attn2"
        probe.mod = 10 * torch.ones(3, 16)
        denoise_run(model, x.expand(3, -1, -1, -1) + 0.3, None, grid, probe)  # other inputs: maps would differ
    assert len(probe.trace) == sum(len(m) for m in recorded) > 0
    for call, name, used in probe.trace:
        assert recorded[call][name].dtype == torch.float16  # kept in half precision
        assert torch.equal(used, recorded[call][name].float())


def test_one_replayed_map_over_a_batch_equals_replaying_it_for_each_sample_alone(model, image):
    x = image[None] + 0.5 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    grid = torch.tensor([0.5, 0.1, 0.0])
    layer = "up_blocks.0.attentions.0.transformer_blocks.0.attn2"
    mod = torch.stack([torch.linspace(-3, 3, 16), torch.zeros(16), 5 * torch.ones(16)])
    probe = Probe(record=True)
    with probed(model.net.unet, probe):
        denoise_run(model, x, None, grid, probe)
        probe.record, probe.replay, probe.mod_layer = False, True, layer
        probe.mod = mod
        together = denoise_run(model, x.expand(3, -1, -1, -1), None, grid, probe)
        alone = []
        for row in mod:
            probe.mod = row[None]
            alone.append(denoise_run(model, x, None, grid, probe))
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # the rows differ, so the batch is not trivial


def test_a_relative_lambda_equals_the_absolute_lambda_times_the_measured_scale(model, image):
    rel = segment_image(model, image, None, EmerDiffSettings(lam_rel=0.7, **SMALL))
    probe = Probe(mod_layer=rel["mod_layer"])  # the scale: RMS of the layer's output in the unmodulated run at t_m
    from kakusan.segment.emerdiff import sigma_at
    sigma_m = sigma_at(model, SMALL["t_m"], 0.5)
    eps = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    with probed(model.net.unet, probe):
        model(image[None] + sigma_m * eps, torch.full((1,), sigma_m), model.net.null_cond(1, "cpu"))
    assert rel["lam"] == pytest.approx(0.7 * probe.scales[0], rel=1e-6) and probe.scales[0] > 0
    ab = segment_image(model, image, None, EmerDiffSettings(lam=rel["lam"], **SMALL))
    assert torch.allclose(ab["diffs"], rel["diffs"], atol=1e-6)


def test_modulating_only_the_first_step_differs_from_every_step_and_chunks_change_nothing(model, image):
    every = segment_image(model, image, None, EmerDiffSettings(chunk=0, **SMALL))
    first = segment_image(model, image, None, EmerDiffSettings(mod_at="first", **SMALL))
    chunked = segment_image(model, image, None, EmerDiffSettings(chunk=1, **SMALL))
    assert not torch.allclose(every["diffs"], first["diffs"], atol=1e-4)
    assert torch.allclose(every["diffs"], chunked["diffs"], atol=1e-5)


def test_ddim_inversion_then_ddim_reconstructs_gaussian_data_to_first_order_in_the_step():
    from kakusan.diffusion import schedules
    from kakusan.diffusion.samplers import invert_ddim, sample_ddim

    s_d = 0.5  # data ~ N(0, s_d^2): the exact denoiser is D(x, sigma) = x s_d^2 / (s_d^2 + sigma^2)

    def denoise(x, sigma):
        return x * s_d**2 / (s_d**2 + sigma**2)
    x0 = s_d * torch.randn(64, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(steps):  # up to sigma 0.5 (t ~ 390 of SD's schedule at sigma_data 0.5) and back down
        down = schedules.karras_sigmas(steps, 0.002, 0.5)[:-1]
        x_t = invert_ddim(denoise, x0, down.flip(0))
        assert x_t.std() > 1.2 * x0.std()  # it reached the noisy end
        return float((sample_ddim(denoise, x_t, down) - x0).norm() / x0.norm())
    assert error(160) < 0.01  # stated bound: 1 % at 160 steps; 11 % at 10, 5 % at 20
    assert error(40) < 0.55 * error(20)  # first order: the error halves when the steps double
    with pytest.raises(ValueError):
        invert_ddim(denoise, x0, schedules.karras_sigmas(4, 0.002, 0.5)[:-1])


def test_matched_iou_ignores_label_names_and_penalises_merges():
    gt = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    assert matched_iou(gt, gt) == 1.0
    assert matched_iou((gt + 1) % 3, gt) == 1.0  # segments carry no names
    merged = torch.where(gt == 1, 0, gt)  # segments 0 and 1 predicted as one: IoU 0.5 for one, 0 for the other
    assert matched_iou(merged, gt) == pytest.approx((0.5 + 0 + 1) / 3)


@pytest.mark.slow
def test_digit_scenes_are_deterministic_with_segments_from_the_strokes():
    from kakusan.data import load_dataset
    from kakusan.data.scenes import make_scenes, scene_words

    pool = load_dataset("mnist-heldout")
    a, b = make_scenes(pool, 6, seed=3), make_scenes(pool, 8, seed=3)
    assert torch.equal(a.images, b.images[:6]) and torch.equal(a.segments, b.segments[:6])
    assert a.images.shape == (6, 1, 48, 48) and a.tokens.shape == (6, 5)
    for img, seg, tok in zip(a.images, a.segments, a.tokens):
        words = scene_words(tok)
        assert 2 <= len(words) <= 4 and int(seg.max()) == len(words)
        assert bool((img[0][seg == 0] <= 0).all()) and bool((img[0][seg > 0] > 0).all())


def test_bad_input_is_refused_in_one_line(model, image, tmp_path):
    from typer.testing import CliRunner

    from kakusan.cli import app
    from kakusan.utils.images import save_pngs

    with pytest.raises(KakusanError, match="k must be >= 2"):
        segment_image(model, image, None, EmerDiffSettings(k=1))
    with pytest.raises(KakusanError, match="outside the schedule"):
        segment_image(model, image, None, EmerDiffSettings(t_m=1000))
    with pytest.raises(KakusanError, match="needs \\(1, H, W\\)"):
        segment_image(model, image.expand(3, -1, -1), None, EmerDiffSettings(**SMALL))
    save_pngs(image[None], tmp_path, ["digit"])
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "digit.png"), "--model", "mnist-s", "--out",
                                 str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2 and "no cross-attention" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "nope.png"), "--model", "mnist-s", "--out",
                                 str(tmp_path / "o2"), "--no-progress"])
    assert r.exit_code == 2 and "no such image" in r.output


@pytest.mark.slow
def test_a_token_model_trains_on_digit_scenes_with_their_sentences(tmp_path):
    from kakusan.diffusion.training import Trainer
    from kakusan.diffusion.training import TrainConfig

    trainer = Trainer(TrainConfig(data="digit-scenes", image_size=16, preset="xs", kimg=0.032, batch_size=16,
                                  sample_kimg=1, sample_grid=4), tmp_path / "run", progress=False)
    assert trainer.objective.model.net.cond_type == "tokens" and trainer.objective.data.tokens.shape[1] == 5
    trainer.train()
    model = Denoiser.from_pretrained(tmp_path / "run")
    assert model.net.config.vocab_size == 12 and list((tmp_path / "run" / "samples").glob("*.png"))
    # a user's sentence is padded to the length the model was trained on, and sampling draws from it
    assert model.info["sentence_length"] == 5
    from kakusan.sampling import sample_to_folder, sentence

    assert sentence("3 7", model).tolist() == [1, 5, 9, 0, 0]
    with pytest.raises(KakusanError, match="at most 4"):
        sentence("1 2 3 4 5", model)
    with pytest.raises(KakusanError, match="unknown word 'x'"):
        sentence("3 x", model)
    out = sample_to_folder(tmp_path / "run", tmp_path / "s", n=3, nfe=3, tokens="3 7,1", progress=False)
    saved = np.load(tmp_path / "s" / "samples.npz")["tokens"]
    assert out["n"] == 3 and saved.tolist() == [[1, 5, 9, 0, 0], [1, 3, 0, 0, 0], [1, 5, 9, 0, 0]]


def test_the_default_modulated_layer_is_the_third_cross_attention_of_the_feature_block(model):
    from kakusan.segment.emerdiff import default_layer, default_mod_layer

    name = "up_blocks.0.attentions.{}.transformer_blocks.0.attn2"
    s = Denoiser.create(UNetConfig(preset="s", image_size=16, cond_type="tokens", vocab_size=12), EDMProcess())
    assert default_layer(s.net.unet) == "up.0.0"
    assert default_mod_layer(s.net.unet, name.format(0)) == name.format(2)  # 3 layers per up block: the paper's
    assert default_mod_layer(model.net.unet, name.format(0)) == name.format(1)  # xs has 2: the last one


def test_the_class_level_protocol_matches_clusters_to_classes_once_for_the_whole_set():
    from kakusan.segment.metrics import class_level

    g = torch.Generator().manual_seed(0)
    classes = [torch.randint(0, 3, (6, 6), generator=g) for _ in range(8)]
    # segments = the classes under per-image random names, features = the class's one-hot: a perfect method
    perms = [torch.randperm(3, generator=g) for _ in classes]
    preds = [p[c] for p, c in zip(perms, classes)]
    feats = [torch.nn.functional.one_hot(c, 3).permute(2, 0, 1).float() for c in classes]
    assert class_level(preds, feats, classes, 3)["miou"] == pytest.approx(1.0)
    # the same segments described by uninformative features: clusters cannot follow classes across images
    flat = [torch.ones(1, 6, 6) * (p == 0).float() for p in preds]
    assert class_level(preds, flat, classes, 3)["miou"] < 0.7
