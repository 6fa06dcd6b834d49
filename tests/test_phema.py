"""Post-hoc EMA (EDM2 App. C.3): the least-squares profile fit, on the closed form, on real EMA dynamics and on a
trained run's snapshots."""
import numpy as np
import pytest
import torch
from torch import nn

from kakusan import KakusanError
from kakusan.train.ema import PowerEMA
from kakusan.train.phema import posthoc_ema, profile, profile_error, solve_coefficients

STORED = (0.05, 0.10)
TIMES = np.repeat(np.arange(1, 21) / 20 * 200_000, 2)  # a snapshot every 5% of training
STDS = np.tile(STORED, 20)


@pytest.mark.parametrize("target", [0.07, 0.15])
def test_solved_weights_reproduce_the_target_power_profile(target):
    x = solve_coefficients(TIMES, STDS, 200_000, target)
    tau = np.linspace(1e-6, 200_000, 200_001)  # quadrature, independent of the closed-form inner products
    fit = sum(xi * profile(tau, t, s) for xi, t, s in zip(x, TIMES, STDS))
    true = profile(tau, 200_000, target)
    err = np.sqrt(np.trapezoid((fit - true) ** 2, tau) / np.trapezoid(true**2, tau))
    assert err < 0.02, err
    assert abs(err - profile_error(TIMES, STDS, x, 200_000, target)) < 1e-3
    assert abs(np.trapezoid(fit, tau) - 1) < 0.01  # the fit averages: its weights sum to one
    # the nearest single stored profile is a much worse fit than the combination
    single = min(profile_error(TIMES[-2:], STDS[-2:], np.eye(2)[i], 200_000, target) for i in range(2))
    assert single > 5 * err


def test_a_stored_length_is_reconstructed_from_itself():
    x = solve_coefficients(TIMES, STDS, 200_000, 0.10)
    one_hot = np.zeros(len(TIMES))
    one_hot[-1] = 1  # the newest snapshot's 0.10 EMA
    assert np.abs(x - one_hot).max() < 1e-6
    assert profile_error(TIMES, STDS, x, 200_000, 0.10) < 1e-6


def test_snapshots_after_the_target_time_are_not_used():
    x = solve_coefficients(TIMES, STDS, 100_000, 0.07)
    assert np.all(x[TIMES > 100_000] == 0) and abs(x.sum() - 1) < 0.01
    with pytest.raises(KakusanError, match="no snapshot"):
        solve_coefficients(TIMES, STDS, 1_000, 0.07)


def test_reconstruction_matches_a_tracked_ema_on_real_dynamics():
    """Weights that wander (a random walk with drift) through PowerEMA: the 0.07 EMA rebuilt from snapshots of the 0.05
    and 0.10 EMAs lands on the 0.07 EMA tracked during the same run, far closer than either stored one."""
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(16, 16)
    emas = PowerEMA(net, stds=(*STORED, 0.07))
    batch, steps, snaps = 64, 2000, []
    drift = torch.randn(16, 16, generator=g) * 0.01
    for k in range(1, steps + 1):
        with torch.no_grad():
            net.weight += drift + 0.05 * torch.randn(16, 16, generator=g)
        emas.update(net, k * batch, batch)
        if k % (steps // 20) == 0:
            snaps += [(k * batch, s, emas.state()[s]["weight"].clone()) for s in STORED]
    times, stds, weights = zip(*snaps)
    x = solve_coefficients(times, stds, steps * batch, 0.07)
    rebuilt = sum(float(xi) * w.double() for xi, w in zip(x, weights))
    tracked = emas.state()[0.07]["weight"].double()
    gap = min((emas.state()[s]["weight"].double() - tracked).norm() for s in STORED)
    assert (rebuilt - tracked).norm() < 0.1 * gap, ((rebuilt - tracked).norm(), gap)


def _toy_run(path, stds, every=0.5):
    from kakusan.guidance.toy import ToyObjective
    from kakusan.guidance.tree import toy_classes
    from kakusan.train import LoopConfig, TrainLoop

    torch.manual_seed(0)
    objective = ToyObjective(toy_classes()["A"], width=16, lr=5e-3)
    config = LoopConfig(batch_size=100, kimg=6, lr=5e-3, warmup_kimg=0, ema_stds=list(stds), checkpoint_kimg=6,
                        sample_kimg=100, log_kimg=6, snapshot_every_kimg=every)
    TrainLoop(objective, config, path, progress=False).train()


@pytest.mark.slow
def test_posthoc_ema_of_a_run_matches_the_ema_tracked_in_training(tmp_path):
    """Two runs that differ only in the EMAs they track (EMAs do not touch training): the 0.07 rebuilt from the
    first run's snapshots matches the 0.07 the second run tracked; the result loads as an ordinary weight set,
    the fit is deterministic, and an existing output is refused untouched."""
    from kakusan.diffusion.denoiser import Denoiser

    _toy_run(tmp_path / "a", STORED)
    _toy_run(tmp_path / "b", (*STORED, 0.07), every=6)
    assert len(list((tmp_path / "a" / "snapshots").glob("kimg-*"))) == 12
    result = posthoc_ema(tmp_path / "a", [0.07, 0.10], tmp_path / "post")
    assert result["lengths"]["0.070"]["profile_error"] < 0.02
    post = Denoiser.from_pretrained(tmp_path / "post", ema=0.07).net.state_dict()
    tracked = Denoiser.from_pretrained(tmp_path / "b" / "checkpoint", ema=0.07).net.state_dict()
    stored = {s: Denoiser.from_pretrained(tmp_path / "a" / "checkpoint", ema=s).net.state_dict() for s in STORED}
    for key in tracked:
        gap = min((stored[s][key] - tracked[key]).norm() for s in STORED)
        assert (post[key] - tracked[key]).norm() <= 0.2 * gap + 1e-6, key
    same = Denoiser.from_pretrained(tmp_path / "post", ema=0.10).net.state_dict()
    assert all(torch.allclose(same[k], stored[0.10][k], atol=1e-5) for k in same)
    assert Denoiser.from_pretrained(tmp_path / "post").info["weights"] == "ema-0.100"  # the default is unchanged
    posthoc_ema(tmp_path / "a", [0.07], tmp_path / "again")
    again = Denoiser.from_pretrained(tmp_path / "again", ema=0.07).net.state_dict()
    assert all(torch.equal(again[k], post[k]) for k in post)
    assert posthoc_ema(tmp_path / "a", [0.07], tmp_path / "early", at_kimg=3.2)["target_kimg"] == 3.0
    with pytest.raises(KakusanError, match="snapshots end at 6 kimg"):  # past the run's end: not silently its end
        posthoc_ema(tmp_path / "a", [0.07], tmp_path / "late", at_kimg=12)
    assert not (tmp_path / "late").exists()
    before = sorted(p.name for p in (tmp_path / "post").rglob("*"))
    with pytest.raises(KakusanError, match="already exists"):
        posthoc_ema(tmp_path / "a", [0.08], tmp_path / "post")
    assert sorted(p.name for p in (tmp_path / "post").rglob("*")) == before


def test_cli_ema_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from kakusan.cli import app

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["ema", str(tmp_path / "empty"), "--std", "0.07"])
    assert r.exit_code == 2 and "holds no snapshots" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["ema", str(tmp_path / "empty"), "--std", "0.5"])
    assert r.exit_code == 2 and "sigma_rel" in r.output
