"""Quality metrics: zero on identical sets, monotone in added noise, a floor on disjoint real halves."""
import warnings

import numpy as np
import pytest
import torch

from kakusan.data import load_dataset
from kakusan.metrics import evaluate, load_featurenet, precision_recall
from kakusan import KakusanError
from kakusan.metrics.scores import (REAL_STREAM, disjoint_halves, extract, fd_bootstrap, frechet_distance,
                                    kernel_distance, reference_sets, score_features)


@pytest.fixture(scope="module")
def net():
    return load_featurenet()


@pytest.fixture(scope="module")
def mnist():
    """MNIST in a fixed random order (the stored order is sorted by class)."""
    d = load_dataset("mnist")
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))
    d.images, d.labels = d.images[perm], d.labels[perm]
    return d


@pytest.mark.slow
def test_identical_sets_score_zero(net, mnist):
    f, _ = extract(net, mnist.images[:500])
    g, _ = extract(net, mnist.images[500:1000])
    assert abs(frechet_distance(f, f)) < 1e-3 * frechet_distance(f, g)  # round-off only, vs two real sets
    # KID is an unbiased MMD estimate: for two sets of one distribution it is 0 within its subset spread
    kid, kid_std = kernel_distance(f, g)
    assert abs(kid) < 2 * kid_std
    assert precision_recall(f, f) == (1.0, 1.0)


@pytest.mark.slow
def test_fd_and_kid_grow_monotonically_with_noise(net, mnist):
    g = torch.Generator().manual_seed(0)
    ref, _ = extract(net, mnist.images[:500])
    base = mnist.images[500:1000]
    fds, kids = [], []
    for s in [0.0, 0.1, 0.2, 0.4, 0.8]:
        noisy = (base + s * torch.randn(base.shape, generator=g)).clamp(-1, 1)
        f, _ = extract(net, noisy)
        fds.append(frechet_distance(ref, f))
        kids.append(kernel_distance(ref, f)[0])
    assert all(a < b for a, b in zip(fds, fds[1:])), fds
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


def test_precision_recall_see_missing_and_spurious_modes():
    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g) + 10])
    one_mode = torch.randn(300, 4, generator=g)  # covers half of the real data
    p, r = precision_recall(real, one_mode)
    assert p > 0.9 and 0.3 < r < 0.6
    far = torch.randn(300, 4, generator=g) + 100  # nothing real-looking
    assert precision_recall(real, far)[0] == 0.0


def test_floor_uses_disjoint_real_halves():
    a, b = disjoint_halves(5000, 1000, seed=3)
    assert len(a) == len(b) == 1000 and not set(a.tolist()) & set(b.tolist())


def test_halves_stratified_by_class_keep_the_sets_proportions_exactly():
    """With labels each half holds every class in the whole set's proportion (largest remainders), not a random
    draw's; an odd class at n = half the set still fits; too large an n is a one-line error."""
    labels = torch.arange(10).repeat_interleave(torch.tensor([500, 500, 300, 300, 300, 300, 300, 300, 300, 201]))
    a, b = disjoint_halves(len(labels), 1000, seed=1, labels=labels)
    assert len(a) == len(b) == 1000 and not set(a.tolist()) & set(b.tolist())
    for half in (a, b):
        counts = torch.bincount(labels[half], minlength=10)
        share = torch.bincount(labels).double() * 1000 / len(labels)
        assert ((counts - share).abs() < 1).all()
    assert not torch.equal(a, disjoint_halves(len(labels), 1000, seed=2, labels=labels)[0])
    half = len(labels) // 2  # every class but the odd one gives exactly half of itself to each set
    assert len(disjoint_halves(len(labels), half, labels=labels)[0]) == half
    with pytest.raises(KakusanError, match="do not fit"):
        disjoint_halves(len(labels), half + 1, labels=labels)


@pytest.mark.slow
def test_evaluate_reports_floor_and_class_accuracy(net, mnist):
    idx = torch.arange(4000, 4300)
    r = evaluate(net, mnist.images[idx], mnist.images[:4000], mnist.labels[idx])
    assert r["n"] == 300 and r["class_acc"] > 0.95
    assert r["floor"]["fd"] > 0 and r["fd"] < 3 * r["floor"]["fd"]  # real images score like the floor
    wrong = evaluate(net, mnist.images[idx], mnist.images[:4000], (mnist.labels[idx] + 1) % 10)
    assert wrong["class_acc"] < 0.05


def test_evaluate_does_not_warn_about_torchmetrics_feature_buffers_and_the_filter_stays_local(net, mnist, recwarn):
    buffer_warnings = lambda: [w for w in recwarn if "will save all extracted features" in str(w.message)]  # noqa: E731
    evaluate(net, mnist.images[4000:4020], mnist.images[:4000])  # scores and floor: two FDs and two KIDs
    assert buffer_warnings() == []
    warnings.warn("Metric `Kernel Inception Distance` will save all extracted features in buffer.", UserWarning)
    assert len(buffer_warnings()) == 1  # silenced where the metrics are made, not by a global filter


@pytest.mark.slow
def test_eval_cli_on_npz_and_errors(tmp_path, mnist):
    from typer.testing import CliRunner

    from kakusan.cli import app
    np.savez(tmp_path / "s.npz", images=mnist.images[:100].numpy(), labels=mnist.labels[:100].numpy())
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "s.npz"), "--ref", "mnist"])
    assert r.exit_code == 0, r.output
    assert "floor" in r.output and "class acc" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "s.npz"), "--n", "3000"])
    assert r.exit_code == 0  # n is capped at the number of samples
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "s.npz"), "--judge", "inception"])
    assert r.exit_code == 2 and "weights" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "s.npz"), "--reference", "all"])
    assert r.exit_code == 0 and "100 samples vs all of mnist" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "s.npz"), "--reference", "half"])
    assert r.exit_code == 2 and "'split' or 'all'" in r.output and len(r.output.strip().splitlines()) == 1


def test_metrics_evaluate_stays_the_function_after_every_submodule_is_imported():
    """A submodule named like a function of its package replaces that function on first import (``kakusan eval``
    used to turn ``kakusan.metrics.evaluate`` into a module for every later lazy import)."""
    import importlib
    import pkgutil

    import kakusan.metrics

    for info in pkgutil.iter_modules(kakusan.metrics.__path__):
        importlib.import_module(f"kakusan.metrics.{info.name}")
    assert callable(kakusan.metrics.evaluate)


def test_fd_bootstrap_equals_torchmetrics_fd_of_each_resampling_and_pairs_sets_of_one_size():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(600, 16, generator=g) @ torch.randn(16, 16, generator=g)
    a = real[:300] + 0.3 * torch.randn(300, 16, generator=g)
    b = a + 0.05 * torch.randn(300, 16, generator=g)  # a near-copy: its resamplings track a's when paired
    boot_a, boot_b = fd_bootstrap(real, a, 20, seed=5), fd_bootstrap(real, b, 20, seed=5)
    idx = torch.Generator().manual_seed(5)
    for i in range(3):  # the same index draws, in order, as fd_bootstrap makes them
        pick = torch.randint(300, (300,), generator=idx)
        assert boot_a[i].item() == pytest.approx(frechet_distance(real, a[pick]), rel=1e-8)
    assert torch.equal(boot_a, fd_bootstrap(real, a, 20, seed=5))
    assert (boot_a - boot_b).std() < 0.2 * boot_a.std()  # paired: the gap's spread is far below either FD's
    assert not torch.equal(boot_a, fd_bootstrap(real, a, 20, seed=6))


def test_fd_bootstrap_resampling_the_reference_too_keeps_the_sample_draws_and_pairs():
    """resample_real: each FD is torchmetrics' FD of a resampled real set against the same sample resampling as
    without it (so rows stay paired), and the spread grows by the reference's own part."""
    g = torch.Generator().manual_seed(4)
    real = torch.randn(400, 8, generator=g) @ torch.randn(8, 8, generator=g)
    fake = real[:200] + 0.4 * torch.randn(200, 8, generator=g)
    both, fixed = fd_bootstrap(real, fake, 30, seed=2, resample_real=True), fd_bootstrap(real, fake, 30, seed=2)
    idx, idx_real = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2 + REAL_STREAM)
    for i in range(3):
        pick, pick_real = torch.randint(200, (200,), generator=idx), torch.randint(400, (400,), generator=idx_real)
        assert both[i].item() == pytest.approx(frechet_distance(real[pick_real], fake[pick]), rel=1e-8)
        assert fixed[i].item() == pytest.approx(frechet_distance(real, fake[pick]), rel=1e-8)
    assert torch.equal(both, fd_bootstrap(real, fake, 30, seed=2, resample_real=True))
    assert both.std() > fixed.std()


@pytest.mark.slow
def test_evaluate_against_all_real_images_uses_the_whole_set_and_more_than_half_of_it(net, mnist):
    """reference='all': the FD is against every real image's features, n may exceed half the set (refused with a
    one-line error for 'split'), the floor is two disjoint halves of at most half, and the spread resamples both."""
    real, samples = mnist.images[:600], mnist.images[600:1000]
    r = evaluate(net, samples, real, reference="all", bootstrap=10)
    f_real, f_fake = extract(net, real)[0], extract(net, samples)[0]
    assert r["n"] == 400 and r["reference"] == "all" and r["fd"] == pytest.approx(frechet_distance(f_real, f_fake))
    assert r["floor"]["n"] == 300 and r["floor"]["fd"] > 0
    assert torch.equal(r["fd_boot"], fd_bootstrap(f_real, f_fake, 10, 0, resample_real=True))
    ref = reference_sets(net, real, 400, reference="all")  # its bootstrap draws: computed once, shared by every set
    first, second = score_features(ref, f_fake, bootstrap=10), score_features(ref, f_fake.flip(0)[:350], bootstrap=10)
    assert list(ref["draws"]) == [(10, 0)] and torch.equal(first["fd_boot"], r["fd_boot"])
    assert torch.equal(second["fd_boot"], fd_bootstrap(f_real, f_fake.flip(0)[:350], 10, 0, resample_real=True))
    split = evaluate(net, samples[:300], real, bootstrap=10)
    a, b = disjoint_halves(600, 300, 0)
    assert split["reference"] == "split" and split["floor"]["n"] == 300
    assert split["fd"] == pytest.approx(frechet_distance(extract(net, real[b])[0], f_fake[:300]))
    with pytest.raises(KakusanError, match="at most 300 samples, or against the whole reference set"):
        evaluate(net, samples, real)
    with pytest.raises(KakusanError, match="'split' or 'all'"):
        evaluate(net, samples, real, reference="half")
