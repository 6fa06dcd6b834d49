"""Options written once: the config dataclasses are the command line, the ``--config FILE`` keys and the run's JSON."""
import dataclasses
import json

import pytest
from typer.testing import CliRunner

from kakusan import KakusanError
from kakusan.cli import app
from kakusan.diffusion.train_config import TrainConfig, process_option_classes
from kakusan.distill.config import DistillConfig
from kakusan.utils.options import cli_fields, option, with_options

TINY = ["--image-size", "16", "--preset", "xs", "--batch-size", "16", "--warmup-kimg", "0", "--checkpoint-kimg",
        "0.016", "--sample-kimg", "100", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def help_of(*command):
    return "".join(invoke(*command, "--help").output.split())  # no spaces: the help wraps lines at any blank or dash


@pytest.mark.parametrize("command, classes", [(("train",), (TrainConfig, *process_option_classes())),
                                              (("distill", "train"), (DistillConfig,))])
def test_every_option_field_is_a_flag_with_its_help_and_default(command, classes):
    text = help_of(*command)
    for name, (f, _) in cli_fields(*classes).items():
        flag = "--" + (f.metadata["flag"] or name).replace("_", "-")
        assert flag in text, flag
        assert "".join(f.metadata["help"].split()) in text, name


def test_a_new_field_becomes_a_flag_that_reaches_the_command_and_only_when_given():
    @dataclasses.dataclass
    class Config:
        warmup: float = option(2.0, "Warm-up length.")
        betas: tuple[float, float] = option((0.9, 0.99), "Adam betas.")
        fast: bool = option(False, "Go fast.")
        hidden: dict = option(factory=dict, help="JSON only.", cli=False)

    seen = []

    @with_options(Config)
    def command(out: str = "x", given: dict = None):
        seen.append(given)

    import typer

    t = typer.Typer()
    t.command()(command)
    t.command("other")(lambda: None)
    assert CliRunner().invoke(t, ["command", "--warmup", "3", "--betas", "0.5,0.9", "--fast"]).exit_code == 0
    assert CliRunner().invoke(t, ["command"]).exit_code == 0
    assert seen == [{"warmup": 3.0, "betas": (0.5, 0.9), "fast": True}, {}]
    text = " ".join(CliRunner().invoke(t, ["command", "--help"]).output.split())
    assert "Warm-up length. [2]" in text and "Adam betas. [0.9,0.99]" in text and "--hidden" not in text


def test_a_process_option_of_another_process_is_refused_by_name():
    with pytest.raises(KakusanError, match="--p-mean .*edm.*'blur'"):
        TrainConfig.from_options({"process": "blur", "p_mean": 0.0})
    config = TrainConfig.from_options({"process": "ddpm", "schedule": "cosine"})
    assert config.process_options == {"schedule": "cosine"}
    assert config.build_process().schedule == "cosine"


def test_a_legacy_flat_train_config_reads_into_its_process_options():
    old = {"process": "blur", "steps": 7, "to_mean": False, "p_mean": -1.2, "beta_schedule": "linear",
           "mix_source": "digits", "precision": "fp32"}
    config = TrainConfig.from_dict(old)
    assert config.process_options == {"steps": 7, "to_mean": False, "mix_source": "digits"}
    assert config.build_process().steps == 7


def test_the_same_command_rerun_with_resume_continues_and_a_different_value_is_named(tmp_path):
    run = tmp_path / "run"
    line = ["train", "--data", "digits", "--process", "blur", "--steps", "3", "--out", run, *TINY]
    assert invoke(*line, "--kimg", "0.016").exit_code == 0
    r = invoke(*line, "--kimg", "0.032", "--resume")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["kimg"] == 0.032
    r = invoke(*line, "--kimg", "0.048", "--resume", "--lr", "0.001", "--steps", "5")
    assert r.exit_code == 2
    assert "lr 0.0005 -> 0.001" in r.output and "process_options" in r.output and "'steps': 5" in r.output


def test_a_config_file_gives_the_run_json_keys_and_flags_beside_it_win(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--data", "digits", "--kimg", "0.016", "--out", tmp_path / "first", *TINY).exit_code == 0
    stored = json.loads((tmp_path / "first" / "train_config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**stored, "lr": 0.002}))
    r = invoke("train", "--config", tmp_path / "c.json", "--seed", "3", "--out", run, "--no-progress")
    assert r.exit_code == 0, r.output
    written = json.loads((run / "train_config.json").read_text())
    assert written == {**stored, "lr": 0.002, "seed": 3}
    (tmp_path / "bad.json").write_text(json.dumps({"lr": 0.002, "typo_key": 1}))
    r = invoke("train", "--config", tmp_path / "bad.json", "--out", tmp_path / "bad", "--no-progress")
    assert r.exit_code == 2 and "typo_key" in r.output and not (tmp_path / "bad").exists()


def test_precision_auto_is_bf16_exactly_where_the_cpu_has_amx_and_the_run_records_the_choice(monkeypatch):
    from kakusan.utils import precision

    for amx, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: amx)
        assert precision.resolve_precision("auto", "cpu") == want
        assert TrainConfig().precision == want and TrainConfig(precision="fp32").precision == "fp32"
        assert TrainConfig.from_options({}).to_dict()["precision"] == want
    with pytest.raises(KakusanError, match="precision"):
        precision.resolve_precision("fp16")


def test_a_bf16_denoiser_differs_from_fp32_by_rounding_only():
    import torch

    from kakusan.diffusion import Denoiser
    from kakusan.diffusion.process import EDMProcess
    from kakusan.nets import UNetConfig

    torch.manual_seed(0)
    model = Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="none"), EDMProcess())
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        a = model(x, sigma)
        assert model.set_precision("bf16") == "bf16"
        b = model(x, sigma)
    assert b.dtype == torch.float32 and not torch.equal(a, b) and (a - b).abs().max() < 0.05 * a.abs().max()


def test_a_run_written_before_a_field_existed_resumes_with_its_default(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--data", "digits", "--kimg", "0.016", "--out", run, *TINY).exit_code == 0
    stored = json.loads((run / "train_config.json").read_text())
    del stored["preview_steps"]  # as a run of the version before that option wrote it
    (run / "train_config.json").write_text(json.dumps(stored))
    r = invoke("train", "--out", run, "--resume", "--kimg", "0.032", "--no-progress")
    assert r.exit_code == 0, r.output
