"""Diffusion2GAN: ODE pairs regenerate from their seeds, survive a kill, and refuse what does not belong to them."""
import math

import pytest
import torch

from conftest import tree_bytes
from kakusan import KakusanError
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.process import EDMProcess
from kakusan.diffusion.samplers import PerSampleNoise
from kakusan.distill import generate_pairs, load_pairs, regenerate
from kakusan.distill import pairs as pairs_module
from kakusan.nets import UNetConfig

OPTIONS = dict(sampler="heun", nfe=5, shard_size=4, precision="fp32", progress=False)  # fp32: compared with generate


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher") / "t"
    Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3),
                    EDMProcess()).save_pretrained(folder)
    return folder


def test_pairs_regenerate_bit_identically_from_their_seeds(teacher, tmp_path):
    manifest = generate_pairs(teacher, tmp_path / "p", n=10, seed=5, guide="uncond", guidance=2.0, **OPTIONS)
    assert manifest["nfe"] == 5 and manifest["steps"] == 3 and manifest["guidance"] == 2.0
    pairs = load_pairs(tmp_path / "p")
    assert pairs.seeds.tolist() == list(range(5, 15)) and pairs.labels.tolist() == [s % 3 for s in range(5, 15)]
    assert len(list((tmp_path / "p").glob("shard-*.safetensors"))) == math.ceil(10 / 4)
    # pair 7 computed again from its seed and the manifest: bit-identical, and z is generate's own first draw
    again = regenerate(tmp_path / "p", 7)
    i = 7 - 5
    assert torch.equal(again["x0"], pairs.x0[i]) and torch.equal(again["noise"], pairs.noise[i])
    assert torch.equal(pairs.noise[i:i + 1], PerSampleNoise([7])(torch.empty(1, 1, 16, 16)))
    from kakusan.guidance import guide_from_spec

    model = Denoiser.from_pretrained(teacher)  # alone (batch of 1) it differs by float rounding only
    x0 = generate(model, [7], cond=torch.tensor([7 % 3]), steps=3, progress=False,
                  make_denoise=guide_from_spec(model, "uncond", 2.0))
    assert torch.allclose(x0[0], pairs.x0[i], atol=1e-4)
    assert pairs.manifest["sigma_max"] == 80.0


def test_a_killed_generation_resumes_without_a_duplicated_or_missing_seed(teacher, tmp_path, monkeypatch):
    calls = []
    real = pairs_module.generate

    def dies_on_the_second_shard(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(pairs_module, "generate", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(teacher, tmp_path / "p", n=10, **OPTIONS)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["manifest.json", "shard-00000.safetensors"]
    first = (tmp_path / "p" / "shard-00000.safetensors").read_bytes()
    monkeypatch.setattr(pairs_module, "generate", real)
    generate_pairs(teacher, tmp_path / "p", n=10, **OPTIONS)
    assert (tmp_path / "p" / "shard-00000.safetensors").read_bytes() == first  # kept, not redone
    pairs = load_pairs(tmp_path / "p")
    assert pairs.seeds.tolist() == list(range(10))
    whole = generate_pairs(teacher, tmp_path / "q", n=10, **OPTIONS) and load_pairs(tmp_path / "q")
    assert torch.equal(whole.x0, pairs.x0)


def test_bad_pair_sets_and_teachers_are_refused_without_touching_anything(teacher, tmp_path):
    generate_pairs(teacher, tmp_path / "p", n=6, **OPTIONS)
    before = tree_bytes(tmp_path / "p")
    with pytest.raises(KakusanError, match="other settings \\(grid, nfe, steps\\)"):
        generate_pairs(teacher, tmp_path / "p", n=6, **{**OPTIONS, "nfe": 7})
    assert tree_bytes(tmp_path / "p") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(KakusanError, match="not a pair set"):
        generate_pairs(teacher, tmp_path / "other", n=6, **OPTIONS)
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"
    shard = tmp_path / "p" / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(KakusanError, match="shard-00001.safetensors is not a readable safetensors file; it is trunc"):
        load_pairs(tmp_path / "p")
    with pytest.raises(KakusanError, match="not a pair set"):
        load_pairs(tmp_path / "other")
    from kakusan.cold import build_degradation

    Denoiser.create(UNetConfig(preset="xs", image_size=16), build_degradation("mask", steps=3)).save_pretrained(
        tmp_path / "cold")
    with pytest.raises(KakusanError, match="must be a diffusion model"):
        generate_pairs(tmp_path / "cold", tmp_path / "c", n=2, **OPTIONS)


# --- the ensembled perceptual loss ------------------------------------------------------------------------------
def perceptual(**kw):
    from kakusan.distill.perceptual import EnsembledPerceptualLoss, PerceptualNet

    torch.manual_seed(0)
    return EnsembledPerceptualLoss(PerceptualNet().eval(), **kw)


@pytest.fixture(scope="module")
def digits():
    from kakusan.data import load_dataset

    return load_dataset("mnist-heldout").images[:8]


def test_perceptual_loss_is_zero_for_identical_images_under_any_augmentation_draw(digits):
    loss = perceptual(l1=0.5)
    for seed in range(5):  # identical images stay identical only if both see the same draw
        d = loss(digits, digits.clone(), torch.Generator().manual_seed(seed))
        assert d.shape == (8,) and torch.equal(d, torch.zeros(8))


def test_perceptual_loss_is_positive_for_different_images_and_differentiable(digits):
    loss = perceptual(l1=0.5)
    x = digits.clone().requires_grad_(True)
    d = loss(x, digits.roll(1, 0), torch.Generator().manual_seed(0))
    assert (d > 0).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_one_augmentation_draw_per_call_moves_both_images_alike(digits):
    from kakusan.distill.perceptual import apply_transform, random_transform

    t = random_transform(8, torch.Generator().manual_seed(3))
    again = random_transform(8, torch.Generator().manual_seed(3))
    other = random_transform(8, torch.Generator().manual_seed(4))
    assert torch.equal(t["theta"], again["theta"]) and not torch.equal(t["theta"], other["theta"])
    moved = apply_transform(digits, t)
    assert moved.shape == digits.shape and not torch.allclose(moved, digits)
    assert torch.equal(moved, apply_transform(digits.clone(), again))
    identity = {"theta": torch.eye(2, 3).expand(8, 2, 3), "cut_centre": torch.full((8, 2), 5.0), "cut_half": 0.1}
    assert torch.allclose(apply_transform(digits, identity), digits, atol=1e-5)  # no move, cutout off the image


def test_the_shipped_perceptual_net_ranks_a_small_change_below_another_digit(digits):
    from kakusan.distill.perceptual import EnsembledPerceptualLoss

    loss = EnsembledPerceptualLoss()
    g = torch.Generator().manual_seed(0)
    near = (digits + 0.05 * torch.randn(digits.shape, generator=g)).clamp(-1, 1)
    assert (loss(digits, near, g) < loss(digits, digits.roll(1, 0), g)).all()


# --- the discriminator's losses and the student's training ------------------------------------------------------
def test_mix_and_match_negatives_are_scored_as_fake_and_r1_is_the_gradient_penalty():
    import torch.nn.functional as F

    from kakusan.distill.discriminator import discriminator_loss

    w = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def D(x, c, z):  # linear in x, remembers its inputs: grad_x D = w exactly
        return (w * x).flatten(1).sum(1) + 0.1 * c.float() + (z.flatten(1).mean(1))
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    c, z = torch.tensor([0, 1, 2]), torch.randn(3, 1, 4, 4)
    base, parts = discriminator_loss(D, real, fake, c, z, mix_and_match=False, num_classes=3,
                                     generator=torch.Generator())
    assert torch.isclose(base, F.softplus(-D(real, c, z)).mean() + F.softplus(D(fake, c, z)).mean())
    g = torch.Generator().manual_seed(1)
    mixed, parts = discriminator_loss(D, real, fake, c, z, mix_and_match=True, num_classes=3, generator=g)
    shift = torch.randint(1, 3, (3,), generator=torch.Generator().manual_seed(1))
    wrong_c = (c + shift) % 3
    assert (wrong_c != c).all()
    expected = base + 0.5 * F.softplus(D(real, c, z.roll(1, 0))).mean() + 0.5 * F.softplus(D(real, wrong_c, z)).mean()
    assert torch.isclose(mixed, expected)  # the right image with the wrong z or c counts as fake
    for step, present in ((32, True), (33, False)):  # lazy: every 16 steps, scaled by 16
        loss, parts = discriminator_loss(D, real, fake, c, z, mix_and_match=False, num_classes=3,
                                         generator=torch.Generator(), r1_gamma=0.2, r1_every=16, step=step)
        assert ("r1" in parts) == present
        if present:
            assert abs(parts["r1"] - 0.2 / 2 * float(w.pow(2).sum()) * 16) < 1e-5


@pytest.fixture(scope="module")
def pair_set(teacher, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs") / "p"
    generate_pairs(teacher, folder, n=8, sampler="heun", nfe=3, shard_size=8, progress=False)
    return folder


def distill_config(pair_set, **kw):
    from kakusan.distill.train import DistillConfig

    return DistillConfig(**{**dict(pairs=str(pair_set), batch_size=4, kimg=0.016, warmup_kimg=0.004,
                                   checkpoint_kimg=0.008, sample_kimg=1, log_kimg=0.004, r1_every=2), **kw})


# every discriminator switch of the ablation at once: the paper's multi-scale D, noise, frozen backbone,
# augmentation, unpaired reals, a fraction of mix-and-match, R1 as its own step, the adaptive GAN weight
SWITCHES = dict(disc_scales="paper", disc_noise=True, disc_frozen=True, disc_augment=True, disc_reals="unpaired",
                mix_fraction=0.5, r1_separate=True, adaptive_gan_weight=True, precision="bf16")


@pytest.mark.slow
@pytest.mark.parametrize("switches", [{}, SWITCHES], ids=["paper", "every-switch"])
def test_distil_train_n_steps_equals_half_plus_resume_plus_half(pair_set, tmp_path, monkeypatch, switches):
    from kakusan.distill.train import resume_student, train_student
    from kakusan.utils import io

    train_student(distill_config(pair_set, **switches), tmp_path / "full", progress=False)
    train_student(distill_config(pair_set, kimg=0.008, **switches), tmp_path / "split", progress=False)
    summary = resume_student(tmp_path / "split", progress=False, kimg=0.016)
    assert summary["step"] == 4
    a, b = tmp_path / "full" / "checkpoint", tmp_path / "split" / "checkpoint"
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert "disc.safetensors" in files and "optimizer-disc.safetensors" in files and len(files) == 6
    for f in files:
        x, y = io.load_tensors(a / f), io.load_tensors(b / f)
        assert all(torch.equal(x[k], y[k]) for k in x), f
    rows = [__import__("json").loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_g", "loss_d", "g_gan", "g_recon", "d_wrong_z", "d_wrong_c", "r1"} <= set().union(*rows)


def test_a_student_samples_with_one_evaluation_and_refuses_multi_step_samplers(pair_set, tmp_path):
    from typer.testing import CliRunner

    from kakusan.cli import app

    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    r = run("distill", "train", "--pairs", pair_set, "--out", tmp_path / "s", "--loss", "mse", "--gan-weight", "0",
            "--kimg", "0.008", "--batch-size", "4", "--no-progress")
    assert r.exit_code == 0, r.output
    student = Denoiser.from_pretrained(tmp_path / "s")
    calls = []
    counted = lambda x, s, c: calls.append(float(s)) or student(x, s, c)  # noqa: E731
    out = generate(student, range(3), cond=torch.tensor([0, 1, 2]), steps=18, progress=False,
                   make_denoise=lambda c: (lambda x, s: counted(x, s, c)))
    assert calls == [80.0] and out.shape == (3, 1, 16, 16)  # one evaluation, at sigma_max, whatever steps says
    r = run("sample", tmp_path / "s", "--out", tmp_path / "heun", "-n", "2", "--sampler", "heun", "--no-progress")
    assert r.exit_code == 2 and "one network evaluation" in r.output
    r = run("sample", tmp_path / "s", "--out", tmp_path / "ok", "-n", "2", "--no-progress")
    assert r.exit_code == 0 and '"nfe": 1' in r.output


def test_a_student_starts_from_another_students_weights_and_nothing_else(pair_set, teacher, tmp_path):
    from PIL import Image

    from kakusan.distill.train import DistillObjective, train_student

    train_student(distill_config(pair_set, gan_weight=0, kimg=0.008), tmp_path / "s", progress=False)
    grid = Image.open(sorted((tmp_path / "s" / "samples").glob("*.png"))[-1])
    assert grid.width > 2 * (8 * 18 + 2)  # 8 pairs per row, 2x, plus the margin that names teacher and student rows
    first = Denoiser.from_pretrained(tmp_path / "s")
    started = DistillObjective(distill_config(pair_set, init=str(tmp_path / "s"))).model
    assert all(torch.equal(a, b) for a, b in zip(first.net.state_dict().values(), started.net.state_dict().values()))
    teacher_state = Denoiser.from_pretrained(teacher).net.state_dict()
    assert any(not torch.equal(v, teacher_state[k]) for k, v in first.net.state_dict().items())  # it moved away
    with pytest.raises(KakusanError, match="not a one-step student"):
        DistillObjective(distill_config(pair_set, init=str(teacher)))


def test_pairs_of_another_teacher_are_refused(pair_set, teacher, tmp_path):
    import shutil

    from kakusan.distill.train import train_student
    from kakusan.utils import io

    shutil.copytree(pair_set, tmp_path / "p")
    manifest = io.read_json(tmp_path / "p" / "manifest.json")
    io.write_json({**manifest, "teacher_fingerprint": "0" * 16}, tmp_path / "p" / "manifest.json")
    with pytest.raises(KakusanError, match="not the one that made the pairs"):
        train_student(distill_config(tmp_path / "p"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_pairs_made_in_bf16_record_it_and_regenerate_bit_identically(teacher, tmp_path):
    from kakusan.utils import io

    manifest = generate_pairs(teacher, tmp_path / "p", n=3, seed=0, **{**OPTIONS, "precision": "bf16"})
    assert manifest["precision"] == io.read_json(tmp_path / "p" / "manifest.json")["precision"] == "bf16"
    pairs, again = load_pairs(tmp_path / "p"), regenerate(tmp_path / "p", 1)
    assert torch.equal(again["x0"], pairs.x0[1])
    fp32 = generate_pairs(teacher, tmp_path / "q", n=3, seed=0, **OPTIONS)
    assert fp32["precision"] == "fp32" and not torch.equal(load_pairs(tmp_path / "q").x0, pairs.x0)


def with_grid(teacher, folder, sigmas=(80.0, 5.0, 0.5, 0.0)):
    """A copy of ``teacher`` holding an optimized dpmpp2m grid of 3 steps (its solver.json)."""
    import shutil

    from kakusan.utils import io

    shutil.copytree(teacher, folder)
    io.write_json({"grids": {"dpmpp2m": {"3": {"sigmas": list(sigmas)}}}}, folder / "solver.json")
    return folder


def test_pairs_on_the_optimized_grid_record_it_regenerate_bit_identically_and_refuse_another(teacher, tmp_path):
    from kakusan.utils import io

    model = with_grid(teacher, tmp_path / "t")
    opts = dict(sampler="dpmpp2m", nfe=3, schedule="optimized", shard_size=4, precision="fp32", progress=False)
    manifest = generate_pairs(model, tmp_path / "p", n=6, seed=3, **opts)
    assert manifest["schedule"] == "optimized" and manifest["grid"] == [80.0, 5.0, 0.5, 0.0]
    pairs = load_pairs(tmp_path / "p")
    again = regenerate(tmp_path / "p", 7)
    assert torch.equal(again["x0"], pairs.x0[4]) and torch.equal(again["noise"], pairs.noise[4])
    karras = generate_pairs(model, tmp_path / "k", n=2, seed=3, **{**opts, "schedule": "karras"})
    assert karras["grid"] != manifest["grid"] and not torch.equal(load_pairs(tmp_path / "k").x0, pairs.x0[:2])
    before = sorted((tmp_path / "p").iterdir())
    snapshot = {p.name: p.read_bytes() for p in before}
    for other, word in (({"schedule": "karras"}, "schedule"), ({"guide": "uncond", "guidance": 2.0}, "guid")):
        with pytest.raises(KakusanError, match=word):  # extending a set with another grid or guidance
            generate_pairs(model, tmp_path / "p", n=8, seed=3, **{**opts, **other})
    io.write_json({"grids": {"dpmpp2m": {"3": {"sigmas": [80.0, 4.0, 0.5, 0.0]}}}}, model / "solver.json")
    with pytest.raises(KakusanError, match="grid"):  # the model's stored grid changed since
        generate_pairs(model, tmp_path / "p", n=8, seed=3, **opts)
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "p").iterdir())} == snapshot


def test_the_adaptive_gan_weight_holds_the_ratio_it_is_given():
    from kakusan.distill.train import gan_weight

    torch.manual_seed(0)
    w, x = torch.randn(3, 4, requires_grad=True), torch.randn(4, 5)
    recon, gan = (w @ x).pow(2).mean(), 7 * (w.sin() @ x).sum()
    lam, norms = gan_weight(recon, gan, w, 0.3, adaptive=True)
    g_recon = torch.autograd.grad(recon, w, retain_graph=True)[0]
    g_gan = torch.autograd.grad(lam * gan, w, retain_graph=True)[0]
    assert float(g_gan.norm() / g_recon.norm()) == pytest.approx(0.3, rel=1e-5)
    assert norms["grad_last_recon"] == pytest.approx(float(g_recon.norm()))
    assert gan_weight(recon, gan, w, 0.3, adaptive=False)[0] == 0.3


def test_held_out_pairs_are_never_trained_on_and_their_loss_is_logged(pair_set, tmp_path, monkeypatch):
    import json

    from kakusan.distill.train import DistillObjective, train_student

    seen = []
    local_batch = __import__("kakusan.train.loop", fromlist=["TrainLoop"]).TrainLoop.local_batch
    monkeypatch.setattr("kakusan.train.loop.TrainLoop.local_batch",
                        lambda self, n: seen.append(n) or local_batch(self, n))
    train_student(distill_config(pair_set, holdout=3, gan_weight=0, log_kimg=0.004), tmp_path / "h", progress=False)
    assert set(seen) == {8 - 3}  # indices drawn among the first 5 pairs only
    rows = [json.loads(r) for r in (tmp_path / "h" / "metrics.jsonl").read_text().splitlines()]
    assert any("heldout_recon" in r for r in rows) and all("g_recon" in r for r in rows)
    with pytest.raises(KakusanError, match="--holdout 8 leaves no pair"):
        DistillObjective(distill_config(pair_set, holdout=8))


def test_the_noised_discriminator_gives_a_pair_one_sigma_and_noise_and_augments_afresh():
    from kakusan.distill.discriminator import noised

    seen = []
    D = lambda x, c, z, sigma=None, noise=None: seen.append((x.clone(), sigma, noise)) or x.sum((1, 2, 3))  # noqa
    sigma, noise, g = torch.rand(4) + 0.1, torch.randn(4, 1, 8, 8), torch.Generator().manual_seed(0)
    run = noised(D, sigma, noise, augment=True, generator=g)
    real, fake = torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)
    run(real, None, None), run(fake, None, None), run(real[:1], None, None)
    (xr, sr, nr), (xf, sf, nf), (x1, s1, n1) = seen
    assert torch.equal(sr, sf) and torch.equal(nr, nf) and torch.equal(sr, sigma) and torch.equal(nr, noise)
    assert torch.equal(s1, sigma[:1]) and torch.equal(n1, noise[:1])  # R1's one real: its own pair's draw
    assert not torch.equal(xr, real) and not torch.equal(x1, xr[:1])  # augmented, a fresh draw per call


def test_a_frozen_discriminator_gets_no_backbone_gradients(teacher):
    from kakusan.distill.discriminator import Discriminator

    model = Denoiser.from_pretrained(teacher)
    for frozen in (True, False):
        D = Discriminator(model, frozen=frozen)
        D(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]), torch.randn(2, 1, 16, 16)).sum().backward()
        backbone = [p.grad for p in D.net.parameters()]
        assert all(p.grad is not None for p in D.heads.parameters())
        assert all(g is None for g in backbone) if frozen else any(g is not None for g in backbone)


def test_an_unpaired_real_is_another_pair_of_the_same_class_never_its_own():
    from kakusan.distill.discriminator import same_class_indices

    pool_labels = torch.arange(30) % 3
    own = torch.arange(30).repeat(20)
    j = same_class_indices(pool_labels[own], pool_labels, torch.Generator().manual_seed(0), exclude=own)
    assert (j != own).all() and torch.equal(pool_labels[j], pool_labels[own])
    assert len(set(j.tolist())) == 30  # every other pair of the class can be drawn
    with pytest.raises(KakusanError, match="no other real of class 5"):
        same_class_indices(torch.tensor([5]), pool_labels, torch.Generator(), exclude=torch.tensor([0]))


def test_bad_distillation_options_are_one_line_exit_2_and_touch_nothing(pair_set, tmp_path):
    from typer.testing import CliRunner

    from kakusan.cli import app

    run = lambda *a: CliRunner().invoke(app, ["distill", "train", "--pairs", str(pair_set), *map(str, a)])  # noqa
    for args, words in ((["--holdout", "8"], "--holdout 8 leaves no pair"),
                        (["--gan-weight", "0", "--disc-frozen"], "--disc-frozen: options of the discriminator"),
                        (["--disc-reals", "imagined"], "disc_reals must be")):
        r = run(*args, "--out", tmp_path / "s", "--no-progress")
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and words in r.output, r.output
        assert not (tmp_path / "s" / "checkpoint").exists()


def test_the_papers_multi_scale_discriminator_feeds_every_encoder_block_and_reads_every_decoder_block(teacher):
    from kakusan.distill.discriminator import Discriminator

    model = Denoiser.from_pretrained(teacher)
    x, c = torch.randn(2, 1, 16, 16), torch.tensor([0, 1])
    one, stages, paper = (Discriminator(model, scales=s) for s in ("one", "stages", "paper"))
    ups = model.net.unet.up_blocks
    assert len(one.heads) == 1 and len(stages.heads) == len(model.net.feature_modules())
    assert len(paper.heads) == 1 + sum(len(b.resnets) for b in ups)  # several outputs per decoder scale
    assert len(paper.pyramid) == len(model.net.unet.down_blocks) - 1
    with torch.no_grad():
        _, _, c_in, c_noise = model.process.precondition(torch.full((2,), paper.sigma))
        bare = model.net.features(c_in[:, None, None, None] * x, c_noise, c, places="blocks")
        before = paper.stages(x, c)  # zero-initialised branches: the same features as without them
        for conv in paper.pyramid:
            conv.weight.fill_(1.0)
        after = paper.stages(x, c)
        assert all(torch.equal(before[k], bare[k]) for k in bare)
        assert not torch.equal(after["mid"], bare["mid"])  # the resized input now enters the encoder
        # the hooks live only during D's call: the backbone alone is the teacher's net again
        assert torch.equal(paper.net(x, torch.zeros(2), c), model.net(x, torch.zeros(2), c))
    with pytest.raises(KakusanError, match="unknown discriminator scales"):
        Discriminator(model, scales="all")


def test_resuming_a_trainable_discriminator_as_frozen_with_r1_is_refused_and_keeps_the_checkpoint(pair_set, tmp_path):
    """A frozen D's optimizer has no state for the backbone the stored one trained (R1 and Adam moments on parameters
    that do not exist there): resuming with --disc-frozen is one line, exit 2, and the checkpoint is untouched."""
    from typer.testing import CliRunner

    from kakusan.cli import app
    from kakusan.distill.train import train_student

    train_student(distill_config(pair_set, kimg=0.008, r1_gamma=1.0), tmp_path / "s", progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "s" / "checkpoint").rglob("*") if p.is_file()}
    r = CliRunner().invoke(app, ["distill", "train", "--out", str(tmp_path / "s"), "--resume", "--disc-frozen",
                                 "--kimg", "0.016", "--no-progress"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "disc_frozen False -> True" in r.output, r.output
    assert before == {p: p.read_bytes() for p in (tmp_path / "s" / "checkpoint").rglob("*") if p.is_file()}


def test_a_distillation_run_stored_before_precision_resumes_in_fp32_on_an_amx_cpu(pair_set, tmp_path, monkeypatch):
    from kakusan.distill.train import resume_student, train_student
    from kakusan.utils import io, precision

    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: True)
    run = tmp_path / "old"
    train_student(distill_config(pair_set, kimg=0.008, gan_weight=0, precision="fp32"), run, progress=False)
    stored = io.read_json(run / "train_config.json")
    del stored["precision"]  # as a run written before the field existed
    io.write_json(stored, run / "train_config.json")
    assert resume_student(run, progress=False, kimg=0.016)["step"] == 4
    assert io.read_json(run / "train_config.json")["precision"] == "fp32"


def test_a_distillation_run_records_its_precision_and_one_stored_before_that_resumes_in_fp32(monkeypatch):
    from kakusan.distill.config import DistillConfig
    from kakusan.utils import precision

    for amx, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: amx)
        assert DistillConfig(pairs="p").precision == want  # auto: this machine's choice, written down
    stored = DistillConfig(pairs="p", precision="bf16").to_dict()
    assert DistillConfig.resumed(stored, {}).precision == "bf16"
    del stored["precision"]  # a run written before the field existed ran in fp32, and continues so
    assert DistillConfig.resumed(stored, {}).precision == "fp32"
    with pytest.raises(KakusanError, match="precision 'fp32' -> 'bf16'"):
        DistillConfig.resumed(stored, {"precision": "bf16"})
