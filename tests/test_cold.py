"""Cold degradations and the cold samplers: identities that must hold exactly, on real digits."""
import pytest
import torch

from kakusan.cold import (DEGRADATIONS, Blur, Mask, Pixelate, build_degradation, gaussian_blur, restore_direct,
                          sample_alg1, sample_alg2)
from kakusan.diffusion.samplers import PerSampleNoise
from kakusan.cold.sampling import sample_flat_prior
from kakusan.data import load_dataset

KINDS = sorted(DEGRADATIONS)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist").images[::250][:16]  # 16 digits of several classes


def rgb(x):
    return torch.cat([x, x.flip(-1), x.flip(-2)], dim=1)  # 3 different channels, so desaturation changes them


def make(kind, x):
    d = build_degradation(kind, steps=None if kind == "pixelate" else 8)
    x = rgb(x) if kind == "desaturate" else x
    return d, x, d.nuisance(x, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_severity_is_identity(kind, digits):
    d, x, z = make(kind, digits)
    assert torch.allclose(d.apply(x, torch.zeros(len(x)), z), x, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_distance_to_x0_never_decreases_with_t(kind, digits):
    d, x, z = make(kind, digits)
    dist = torch.stack([(d.apply(x, torch.full((len(x),), t), z) - x).flatten(1).norm(dim=1)
                        for t in range(d.steps + 1)])  # (T+1, B)
    assert (dist[-1] > 0.5).all(), "the fully degraded image should differ from x0"
    assert (dist[1:] >= dist[:-1] - 1e-4).all()


@pytest.mark.parametrize("kind", KINDS)
def test_alg2_with_perfect_restorer_recovers_x0(kind, digits):
    d, x, z = make(kind, digits)
    x_T = d.apply(x, torch.full((len(x),), d.steps), z)
    perfect = lambda x_t, t: x  # noqa: E731
    out = sample_alg2(perfect, x_T, d, d.steps, z)
    assert torch.allclose(out, x, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_severity_matches_one_at_a_time(kind, digits):
    d, x, z = make(kind, digits)
    t = torch.arange(len(x)) % (d.steps + 1)
    batched = d.apply(x, t, z)
    for i in range(len(x)):
        zi = None if z is None else z[i:i + 1]
        assert torch.allclose(batched[i:i + 1], d.apply(x[i:i + 1], t[i:i + 1], zi), atol=1e-5)


@pytest.mark.parametrize("to_mean", [False, True])
def test_closed_form_blur_equals_composition_of_step_kernels(digits, to_mean):
    d = Blur(steps=12, std=0.7, growth=1.2, to_mean=to_mean)
    x = digits
    for t in range(d.steps + 1):
        composed = x
        for i in range(t):
            composed = d.apply_step(composed, i)
        assert torch.allclose(d.apply(x, torch.full((len(x),), t)), composed, atol=1e-5), t
    flat = d.apply(x, torch.full((len(x),), d.steps))
    if to_mean:  # the last step is the flat per-image mean
        assert torch.allclose(flat, x.mean(dim=(2, 3), keepdim=True).expand_as(x), atol=1e-5)


def test_gaussian_blur_is_a_true_gaussian_away_from_the_border():
    x = torch.zeros(1, 1, 65, 65)
    x[0, 0, 32, 32] = 1
    y = gaussian_blur(x, torch.tensor([4.0]))[0, 0].double()
    r = torch.arange(65, dtype=torch.float64) - 32
    expect = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / 8) / (2 * torch.pi * 4)
    assert torch.allclose(y, expect, atol=1e-6)
    assert abs(y.sum() - 1) < 1e-6  # mass preserved


def test_pixelate_is_block_average(digits):
    d = Pixelate(steps=3)
    y = d.apply(digits, torch.full((len(digits),), 2))
    blocks = digits.unfold(2, 4, 4).unfold(3, 4, 4).mean(dim=(-1, -2))
    assert torch.allclose(y[:, :, ::4, ::4], blocks, atol=1e-6)
    assert torch.allclose(y, blocks.repeat_interleave(4, 2).repeat_interleave(4, 3), atol=1e-6)


def test_mask_hole_follows_its_centre(digits):
    d = Mask(steps=10)
    centre = torch.tensor([[5, 20]] * len(digits))
    y = d.apply(digits, torch.full((len(digits),), 10), centre)
    assert torch.allclose(y[:, :, 5, 20], torch.full_like(y[:, :, 5, 20], d.fill))  # the centre is fully masked
    assert torch.allclose(y[:, :, 31, 0], digits[:, :, 31, 0], atol=1e-3)  # far corner barely touched


@pytest.mark.parametrize("d", [Blur(steps=20, std=1.0), Mask(steps=20)], ids=["blur", "mask"])
def test_alg2_cancels_an_input_dependent_restorer_error_to_first_order_and_alg1_does_not(digits, d):
    """The paper's point (Bansal et al. 2022, sec. 3.3): for D(x, s) ~ x + s e, as blur and mask are step by step,
    Alg 2 only passes on the one-step difference D(err, s - 1) - D(err, s) of the restorer's error, Alg 1 all of it.
    The error here depends on the restorer's input x_t (R leaks 0.2 x_t), so it changes from step to step and does not
    telescope away as a constant bias would (for blur, Alg 2 with R = x0 + c is exact whatever c)."""
    x = digits
    z = d.nuisance(x, torch.Generator().manual_seed(0))
    x_T = d.apply(x, torch.full((len(x),), d.steps), z)
    leaky = lambda x_t, t: x + 0.2 * x_t  # noqa: E731
    assert torch.allclose(restore_direct(leaky, x_T, d, d.steps, z), x + 0.2 * x_T)
    err1 = (sample_alg1(leaky, x_T, d, d.steps, z) - x).abs().mean()
    err2 = (sample_alg2(leaky, x_T, d, d.steps, z) - x).abs().mean()
    assert err2 > 1e-3, "the error must not cancel exactly, else this test shows nothing about first order"
    assert err2 < 0.25 * err1, (err1, err2)  # measured: about 0.12 (blur) and 0.05 (mask)


def test_flat_prior_generation_telescopes_and_is_seeded():
    images = load_dataset("mnist").images
    d = build_degradation("blur", to_mean=True, images=images)
    colours = sample_flat_prior(d.prior_fit, 20000, torch.Generator().manual_seed(0))
    real = images.mean(dim=(2, 3))
    assert abs(colours.mean() - real.mean()) < 0.01 and abs(colours.std() - real.std()) < 0.01
    shape = 0.1 * images[:1]
    R = lambda x, t: shape.expand_as(x)  # noqa: E731
    # Alg 2 telescopes: x_0 = x_T - D(x0_hat, T) + x0_hat = flat colour + (shape - its mean)
    noise = PerSampleNoise([3, 4, 3])
    grid = d.sampling_grid("alg2", steps=1)  # a cold model always walks its own T..0
    assert grid.tolist() == list(range(d.steps, -1, -1))
    out = d.sampler("alg2")(R, d.prior(noise, (1, 32, 32), grid), grid, noise=noise, symmetry_noise=0.0)
    offset = out - (shape - shape.mean())
    assert torch.allclose(offset, offset.mean(dim=(2, 3), keepdim=True).expand_as(offset), atol=1e-5)
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])


# --- training and the command line ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind,extra", [("blur", {"to_mean": True, "steps": 5}), ("mask", {"steps": 5}),
                                        ("mix", {"steps": 5}), ("pixelate", {})])
def test_cold_models_train_save_load_and_restore(tmp_path, tiny_config, kind, extra):
    from kakusan.cold.restore import restore_all
    from kakusan.diffusion import Denoiser
    from kakusan.diffusion.training import Trainer

    cfg = tiny_config(kimg=0.032, process=kind, data="mnist-train", sample_kimg=0.032, **extra)
    Trainer(cfg, tmp_path / "run", progress=False).train()
    assert list((tmp_path / "run" / "samples").glob("*.png")), "a training preview grid"
    model = Denoiser.from_pretrained(tmp_path / "run" / "checkpoint")
    assert model.process.kind == kind and model.cond_type == "none"
    assert model.process.to_config() == Trainer(cfg, tmp_path / "other", progress=False).model.process.to_config()
    clean = load_dataset("mnist-heldout", 16).images[:3]
    rows = restore_all(model, clean, progress=False)
    assert set(rows) == {"clean", "degraded", "direct", "alg1", "alg2"}
    assert all(v.shape == clean.shape and torch.isfinite(v).all() for v in rows.values())


@pytest.mark.slow
def test_a_resumed_cold_run_equals_an_uninterrupted_one(tmp_path, tiny_config):
    from kakusan.diffusion.training import Trainer
    from kakusan.utils import io

    cfg = dict(process="mask", steps=5, data="mnist-train", checkpoint_kimg=0.032)
    Trainer(tiny_config(kimg=0.064, **cfg), tmp_path / "full", progress=False).train()
    Trainer(tiny_config(kimg=0.032, **cfg), tmp_path / "split", progress=False).train()
    Trainer.resume(tmp_path / "split", progress=False, kimg=0.064).train()
    a, b = tmp_path / "full" / "checkpoint", tmp_path / "split" / "checkpoint"
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert len(files) == 4
    for f in files:
        x, y = io.load_tensors(a / f), io.load_tensors(b / f)
        assert all(torch.equal(x[k], y[k]) for k in x), f


@pytest.mark.slow
def test_l1_is_the_default_loss_of_cold_models(tiny_config, tmp_path):
    from kakusan.diffusion.training import DiffusionObjective

    assert DiffusionObjective(tiny_config(process="blur")).l1
    assert not DiffusionObjective(tiny_config()).l1
    assert not DiffusionObjective(tiny_config(process="blur", loss="l2")).l1


@pytest.mark.slow
def test_cli_restore_and_generate(tmp_path):
    from typer.testing import CliRunner

    from kakusan.cli import app

    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    tiny = ["--image-size", "16", "--preset", "xs", "--batch-size", "16", "--kimg", "0.032", "--warmup-kimg",
            "0.016", "--sample-kimg", "100", "--no-progress", "--data", "mnist-train", "--steps", "4"]
    r = run("train", "--out", tmp_path / "blur", "--process", "blur", "--to-mean", *tiny)
    assert r.exit_code == 0, r.output
    r = run("restore", tmp_path / "blur", "--out", tmp_path / "strip", "-n", "5", "--no-progress")
    assert r.exit_code == 0, r.output
    import numpy as np
    npz = np.load(tmp_path / "strip" / "restored.npz")
    assert npz["alg2"].shape == (5, 1, 16, 16) and (tmp_path / "strip" / "strip.png").exists()
    r = run("sample", tmp_path / "blur", "--out", tmp_path / "gen", "-n", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "gen" / "samples.npz")["images"].shape == (3, 1, 16, 16)
    # bad input: a non-cold model cannot restore; unknown process; --to-mean without blur
    r = run("train", "--out", tmp_path / "edm", *tiny[:-2])
    assert r.exit_code == 0, r.output
    r = run("restore", tmp_path / "edm", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "cold model" in r.output and not (tmp_path / "x").exists()
    r = run("train", "--out", tmp_path / "bad", "--process", "smudge", *tiny)
    assert r.exit_code == 2 and "unknown process" in r.output
    r = run("train", "--out", tmp_path / "bad", "--process", "mask", "--to-mean", *tiny)
    assert r.exit_code == 2 and "to_mean applies to the blur degradation only" in r.output
