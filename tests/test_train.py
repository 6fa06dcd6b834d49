"""Training: exact resume, determinism, the NaN guard, EMA, snapshots."""
import pytest
import torch

from conftest import tree_bytes
from kakusan.diffusion.denoiser import Denoiser
from kakusan.diffusion.generation import generate
from kakusan import KakusanError
from kakusan.diffusion.training import Trainer
from kakusan.train import TrainingDiverged
from kakusan.train.ema import PowerEMA, std_to_gamma
from kakusan.train.loop import batch_indices
from kakusan.utils import io


def weights(folder):
    """Every weight file below a checkpoint: the model's raw weights and EMAs, and the optimizer state."""
    return {str(p.relative_to(folder)): io.load_tensors(p) for p in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.slow
def test_train_n_steps_equals_half_plus_resume_plus_half(tmp_path, tiny_config):
    Trainer(tiny_config(kimg=0.096), tmp_path / "full", progress=False).train()
    Trainer(tiny_config(kimg=0.048), tmp_path / "split", progress=False).train()
    Trainer(tiny_config(kimg=0.096), tmp_path / "split", resume=True, progress=False).train()
    a, b = weights(tmp_path / "full" / "checkpoint"), weights(tmp_path / "split" / "checkpoint")
    assert io.read_json(tmp_path / "split" / "checkpoint" / "train_state.json")["step"] == 6
    assert len(a) == 4 and a.keys() == b.keys()  # raw, two EMAs, optimizer
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}:{k} differs after resume"
    # training did change the weights
    init = Trainer(tiny_config(), tmp_path / "fresh", progress=False).model.net.state_dict()
    raw = a["model/unet/diffusion_pytorch_model.raw.safetensors"]
    assert any(not torch.equal(init[k], raw[k.removeprefix("unet.")]) for k in init)


@pytest.mark.slow
def test_same_seed_same_samples_whatever_the_batch(tmp_path, tiny_config):
    Trainer(tiny_config(kimg=0.032), tmp_path / "run", progress=False).train()
    model = Denoiser.from_pretrained(tmp_path / "run" / "checkpoint")
    labels = torch.arange(6) % 10
    a = generate(model, range(6), cond=labels, steps=4, batch_size=6, progress=False)
    again = generate(model, range(6), cond=labels, steps=4, batch_size=6, progress=False)
    made = []  # what an outer progress bar is told: images per batch
    b = generate(model, range(6), cond=labels, steps=4, batch_size=4, progress=False, on_batch=made.append)
    c = generate(model, range(1, 7), cond=labels, steps=4, batch_size=6, progress=False)
    assert torch.equal(a, again)  # bitwise on CPU
    assert torch.allclose(a, b, atol=1e-4)  # per-sample seeds: the batch split changes only float rounding
    assert made == [4, 2]
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()


@pytest.mark.slow
def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_config):
    Trainer(tiny_config(kimg=0.032), tmp_path / "run", progress=False).train()
    before = tree_bytes(tmp_path / "run" / "checkpoint")
    trainer = Trainer(tiny_config(kimg=0.096), tmp_path / "run", resume=True, progress=False)
    trainer.objective.denoising_loss = lambda *a: torch.tensor(float("nan"))
    with pytest.raises(TrainingDiverged, match="checkpoint"):
        trainer.train()
    assert tree_bytes(tmp_path / "run" / "checkpoint") == before


@pytest.mark.slow
def test_a_new_run_never_overwrites_an_existing_one(tmp_path, tiny_config):
    Trainer(tiny_config(kimg=0.016), tmp_path / "run", progress=False).train()
    before = tree_bytes(tmp_path / "run")
    with pytest.raises(KakusanError, match="resume it"):
        Trainer(tiny_config(kimg=0.016), tmp_path / "run", progress=False)
    assert tree_bytes(tmp_path / "run") == before


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_scratch_or_restarts(tmp_path, tiny_config):
    import json

    Trainer(tiny_config(kimg=0.064), tmp_path / "full", progress=False).train()
    full = weights(tmp_path / "full" / "checkpoint")
    rows = lambda run: [(r["kimg"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    for name, resume in (("resumed", True), ("restarted", False)):
        run = tmp_path / name  # what a kill before the first checkpoint leaves: the config, a log, a cut write
        run.mkdir()
        (run / "train_config.json").write_bytes((tmp_path / "full" / "train_config.json").read_bytes())
        (run / "metrics.jsonl").write_text('{"kimg": 0.016, "loss": 9.0}\n{"kimg": 0.03')
        (run / ".checkpoint.abc.tmp").mkdir()
        (run / ".checkpoint.abc.tmp" / "model.safetensors").write_bytes(b"half")
        Trainer(tiny_config(kimg=0.064), run, resume=resume, progress=False).train()
        got = weights(run / "checkpoint")
        assert got.keys() == full.keys() and all(torch.equal(got[f][k], full[f][k]) for f in full for k in full[f])
        assert rows(run) == rows(tmp_path / "full")  # the dead attempt's rows are gone, none is doubled
        assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_resumed_log_has_each_row_once(tmp_path, tiny_config):
    import json

    run = tmp_path / "run"
    Trainer(tiny_config(kimg=0.064, checkpoint_kimg=0.032), run, progress=False).train()
    io.write_text((run / "metrics.jsonl").read_text() + '{"kimg": 0.08, "loss": 1.0}\n', run / "metrics.jsonl")
    Trainer(tiny_config(kimg=0.096), run, resume=True, progress=False).train()
    kimgs = [json.loads(line)["kimg"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kimgs == sorted(set(kimgs)) and kimgs[-1] == 0.096  # the row past the checkpoint was dropped


@pytest.mark.slow
def test_snapshots_and_run_folder_layout(tmp_path, tiny_config):
    Trainer(tiny_config(kimg=0.064, snapshot_kimg=[0.032], sample_kimg=0.064), tmp_path / "run", progress=False).train()
    run = tmp_path / "run"
    snap = Denoiser.from_pretrained(run / "snapshots" / "kimg-0000.032", ema=0.05)  # 32 images: 3 decimals
    assert snap.info["images_seen"] == 32
    assert (run / "metrics.jsonl").exists() and (run / "loss.png").exists()
    assert list((run / "samples").glob("*.png"))
    final = Denoiser.from_pretrained(run / "checkpoint")
    assert final.info["images_seen"] == 64 and final.info["ema_stds"] == [0.05, 0.1]


@pytest.mark.slow
def test_snapshots_and_sample_grids_leave_the_training_trajectory_untouched(tmp_path, tiny_config):
    """Post-hoc EMA relies on this: a run repeated with snapshots (and grids) is the same run, bit for bit."""
    Trainer(tiny_config(kimg=0.064, sample_kimg=1), tmp_path / "plain", progress=False).train()
    Trainer(tiny_config(kimg=0.064, sample_kimg=0.016, snapshot_every_kimg=0.016), tmp_path / "snaps",
            progress=False).train()
    assert len(list((tmp_path / "snaps" / "snapshots").iterdir())) == 4
    a, b = weights(tmp_path / "plain" / "checkpoint"), weights(tmp_path / "snaps" / "checkpoint")
    assert a.keys() == b.keys() and all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


def test_batch_indices_cover_each_epoch_once():
    idx = torch.cat([batch_indices(3, 10, 4, s) for s in range(5)])  # 20 indices = 2 epochs
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert not torch.equal(idx[:10], idx[10:])


def test_power_ema_profile_has_the_requested_relative_std():
    """EDM2 eq. 3: the averaging profile t^gamma on [0, 1] (training length = 1) has standard deviation sigma_rel."""
    for s in [0.05, 0.1, 0.2]:
        g = std_to_gamma(s)
        t = torch.linspace(0, 1, 200001, dtype=torch.float64)
        w = t**g / (t**g).sum()
        mean = (w * t).sum()
        std = ((w * (t - mean) ** 2).sum()).sqrt()
        assert abs(float(std) - s) < 1e-4


def test_power_ema_tracks_a_constant_and_averages_a_ramp():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(-5.0)  # the EMA's starting copy, far from the constant
    ema = PowerEMA(net, [0.05, 0.1])
    with torch.no_grad():
        net.weight.fill_(3.0)
    for step in range(1, 51):  # beta = 0 at the first update, so every EMA is the constant from then on
        ema.update(net, step, 1)
        assert [float(w["weight"]) for w in ema.weights.values()] == pytest.approx([3.0, 3.0], abs=1e-6)

    net = torch.nn.Linear(1, 1, bias=False)
    ema = PowerEMA(net, [0.1])
    for step in range(1, 101):
        with torch.no_grad():
            net.weight.fill_(float(step))
        ema.update(net, step, 1)
    avg = float(ema.weights[0.1]["weight"])
    assert 70 < avg < 100  # a weighted average of the ramp that favours recent values


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(cond="tokens"), dict(process="ddpm", cond="none"),
                                dict(process="ddpm", beta_schedule="cosine")])
def test_other_conditionings_and_processes_train_and_sample(tmp_path, tiny_config, kw):
    from kakusan.sampling import sample_to_folder

    summary = Trainer(tiny_config(kimg=0.032, **kw), tmp_path / "run", progress=False).train()
    assert summary["step"] == 2
    model = Denoiser.from_pretrained(tmp_path / "run" / "checkpoint")
    assert model.cond_type == kw.get("cond", "class")
    assert model.process.kind == kw.get("process", "edm")
    for sampler in ["heun", "ddpm"]:
        out = sample_to_folder(tmp_path / "run", tmp_path / sampler, n=3, sampler=sampler, steps=3, progress=False)
        assert out["n"] == 3


def test_token_model_reads_its_condition_through_cross_attention(tmp_path, tiny_config):
    """Changing only the token sequence changes the output: the condition flows through cross-attention."""
    from kakusan.data import tokens_for_labels

    trainer = Trainer(tiny_config(kimg=0.016, cond="tokens"), tmp_path / "run", progress=False)
    unet = trainer.model.net.unet
    assert any("attn2" in name for name, _ in unet.named_modules())  # cross-attention layers exist
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.nn.init.normal_(trainer.model.net.token_embedding.weight)
        a = trainer.model(x, torch.tensor(1.0), tokens_for_labels(torch.tensor([3, 3])))
        b = trainer.model(x, torch.tensor(1.0), tokens_for_labels(torch.tensor([3, 5])))
    assert torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_recipe_options_reach_the_saved_model(tmp_path, tiny_config):
    """--time-conditioning scale-shift builds AdaGN blocks and --p-mean/--p-std set the training noise levels;
    both are stored with the weights, so the loaded model is the trained one."""
    config = tiny_config(kimg=0.016, time_conditioning="scale-shift", p_mean=-0.5, p_std=0.8)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    block = trainer.model.net.unet.down_blocks[0].resnets[0]
    assert block.time_emb_proj.out_features == 2 * block.conv1.out_channels  # a scale and a shift per channel
    sigma = trainer.model.process.sample_t(20000, torch.Generator().manual_seed(0))
    assert abs(float(sigma.log().mean()) + 0.5) < 0.02 and abs(float(sigma.log().std()) - 0.8) < 0.02
    trainer.train()
    model = Denoiser.from_pretrained(tmp_path / "run" / "checkpoint")
    assert model.net.config.time_conditioning == "scale-shift" and model.process.p_mean == -0.5
    with pytest.raises(KakusanError, match="time conditioning"):
        tiny_config(time_conditioning="film").validate()
