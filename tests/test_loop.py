"""The generic training loop with objectives other than a denoiser: two players with two optimizers (the shape of the
distillation GAN), exact resume, the learning-rate schedule, trackers, the resume rule."""
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tree_bytes
from kakusan import KakusanError
from kakusan.train import LoopConfig, Objective, TrainingDiverged, TrainLoop
from kakusan.train.loop import lr_at
from kakusan.utils import io

DATA = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 0.5 + torch.tensor([1.0, -0.5])


class TwoPlayers(Objective):
    """A tiny GAN: generator G(z) = A z + b against a logistic discriminator; alternating steps, two optimizers."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.G, self.D = nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        self.modules = {"model": self.G, "disc": self.D}
        self.optimizers = {"model": torch.optim.Adam(self.G.parameters(), lr=1e-2, betas=(0.5, 0.9)),
                           "disc": torch.optim.Adam(self.D.parameters(), lr=2e-2, betas=(0.5, 0.9))}

    def train_step(self, loop):
        g = loop.generator
        real = DATA[loop.local_batch(len(DATA))]
        z = torch.randn(real.shape, generator=g)
        fake = self.G(z)
        loss_d = nn.functional.softplus(self.D(fake.detach())).mean() + nn.functional.softplus(-self.D(real)).mean()
        loop.optimize("disc", loss_d, self.D.parameters())
        loss_g = nn.functional.softplus(-self.D(self.G(z))).mean()  # non-saturating
        loop.optimize("model", loss_g, self.G.parameters())
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}

    def preview(self, ema_weights):
        return None

    def write_model(self, folder, ema_weights, raw=True, info=None):
        io.save_tensors(self.G.state_dict(), Path(folder) / "g.safetensors")
        for std, w in (ema_weights or {}).items():
            io.save_tensors(w, Path(folder) / f"g.ema-{std:.3f}.safetensors")

    def read_model_weights(self, folder, which):
        name = "g.safetensors" if which == "raw" else f"g.ema-{which:.3f}.safetensors"
        return io.load_tensors(Path(folder) / name)


def config(**kw):
    return LoopConfig(**{**dict(batch_size=16, kimg=0.32, lr=1e-2, warmup_kimg=0.032, lr_decay_kimg=0.16,
                                ema_stds=[0.1], checkpoint_kimg=0.064, log_kimg=0.032, sample_kimg=1), **kw})


def test_two_player_objective_resumes_exactly(tmp_path):
    TrainLoop(TwoPlayers(), config(), tmp_path / "full", progress=False).train()
    TrainLoop(TwoPlayers(), config(kimg=0.16), tmp_path / "split", progress=False).train()
    summary = TrainLoop(TwoPlayers(), config(), tmp_path / "split", resume=True, progress=False).train()
    assert summary["step"] == 20
    a, b = (tmp_path / "full" / "checkpoint"), (tmp_path / "split" / "checkpoint")
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert names == ["disc.safetensors", "model/g.ema-0.100.safetensors", "model/g.safetensors",
                     "optimizer-disc.safetensors", "optimizer-model.safetensors"]
    for name in names:
        x, y = io.load_tensors(a / name), io.load_tensors(b / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    # both players were trained: each one's weights moved away from its initial weights
    init = TwoPlayers()
    for name, module in (("model/g.safetensors", init.G), ("disc.safetensors", init.D)):
        trained = io.load_tensors(a / name)
        assert any(not torch.equal(v, trained[k]) for k, v in module.state_dict().items()), name
    rows = [r for r in map(__import__("json").loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())]
    assert {"loss_d", "loss_g", "lr"} <= rows[0].keys()


def test_each_optimizer_follows_the_schedule_from_its_own_base_rate(tmp_path):
    loop = TrainLoop(TwoPlayers(), config(), tmp_path / "run", progress=False)
    loop.train()
    cfg = config()
    for images, expected in [(16, 1e-2 * 0.5), (32, 1e-2), (160, 1e-2), (640, 1e-2 / 2)]:
        assert lr_at(1e-2, cfg, images) == pytest.approx(expected)
    # the last step ran at images_seen = 304: warm-up over, decayed by sqrt(0.304 / 0.16)
    factor = (0.304 / 0.16) ** -0.5
    assert loop.objective.optimizers["model"].param_groups[0]["lr"] == pytest.approx(1e-2 * factor)
    assert loop.objective.optimizers["disc"].param_groups[0]["lr"] == pytest.approx(2e-2 * factor)


def test_a_diverging_player_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    TrainLoop(TwoPlayers(), config(kimg=0.064), tmp_path / "run", progress=False).train()
    before = tree_bytes(tmp_path / "run" / "checkpoint")
    objective = TwoPlayers()
    loop = TrainLoop(objective, config(), tmp_path / "run", resume=True, progress=False)
    with torch.no_grad():
        objective.D[0].weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="disc"):
        loop.train()
    assert tree_bytes(tmp_path / "run" / "checkpoint") == before


def test_the_loop_logs_to_an_accelerate_tracker(tmp_path):
    from accelerate.tracking import GeneralTracker

    class Recorder(GeneralTracker):
        name, requires_logging_directory = "recorder", False
        rows, configs = [], []

        def __init__(self):
            super().__init__()

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.configs.append(values)

        def log(self, values, step=None, **kwargs):
            self.rows.append((step, values))

    recorder = Recorder()
    TrainLoop(TwoPlayers(), config(kimg=0.064), tmp_path / "run", progress=False, trackers=[recorder]).train()
    assert [step for step, _ in recorder.rows] == [2, 4]
    assert {"loss_d", "loss_g", "lr"} <= recorder.rows[0][1].keys()
    assert recorder.configs and recorder.configs[0]["batch_size"] == "16"


def test_a_tracker_that_is_not_installed_is_a_clear_error(tmp_path):
    import accelerate.tracking

    if accelerate.tracking.is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    with pytest.raises(KakusanError, match="pip install tensorboard"):
        TrainLoop(TwoPlayers(), config(log_with="tensorboard"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_resuming_with_other_settings_is_refused_before_anything_is_touched(tmp_path):
    TrainLoop(TwoPlayers(), config(kimg=0.064), tmp_path / "run", progress=False).train()
    before = tree_bytes(tmp_path / "run")
    with pytest.raises(KakusanError, match="other settings \\(lr, seed\\)"):
        TrainLoop(TwoPlayers(), config(kimg=0.128, lr=1.0, seed=3), tmp_path / "run", resume=True, progress=False)
    assert tree_bytes(tmp_path / "run") == before
    TrainLoop(TwoPlayers(), config(kimg=0.128), tmp_path / "run", resume=True, progress=False).train()  # longer: fine


def test_resume_may_change_only_the_training_length():
    stored = config().to_dict()
    assert LoopConfig.resumed(stored, {"kimg": 1.0}).kimg == 1.0
    assert LoopConfig.resumed({**stored, "minutes": 5}, {}).minutes is None  # a budget is per invocation
    with pytest.raises(KakusanError, match="only kimg and minutes"):
        LoopConfig.resumed(stored, {"lr": 1.0})
