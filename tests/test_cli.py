"""The command line: help, a tiny end-to-end run, and bad input that must fail cleanly without touching files."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tree_bytes
from kakusan.cli import app

runner = CliRunner()
TINY = ["--image-size", "16", "--preset", "xs", "--batch-size", "16", "--kimg", "0.032", "--warmup-kimg", "0.016",
        "--sample-kimg", "100", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("cmd", ["train", "sample", "info"])
def test_help(cmd):
    r = invoke(cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_help_keeps_the_defaults_in_square_brackets():
    r = invoke("train", "--help")
    assert "[50]" in r.output and "[0.05,0.1]" in r.output  # not eaten as markup


def test_a_bug_is_one_line_with_exit_1_and_debug_shows_its_traceback(monkeypatch, tmp_path):
    import kakusan.sampling

    def bug(*a, **k):
        raise ValueError("an internal bug")
    monkeypatch.setattr(kakusan.sampling, "sample_to_folder", bug)
    r = invoke("sample", "mnist-s", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "Traceback" not in r.output  # not reported as the user's fault, and no traceback
    assert r.output.strip().splitlines() == ["error: internal error (ValueError: an internal bug); this is a bug in "
                                             "kakusan: rerun with --debug for the traceback and report it"]
    r = invoke("--debug", "sample", "mnist-s", "--out", tmp_path / "o")
    assert isinstance(r.exception, ValueError)


def test_an_os_error_is_one_line_with_exit_2(monkeypatch, tmp_path):
    import errno

    import kakusan.sampling

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o"))
    monkeypatch.setattr(kakusan.sampling, "sample_to_folder", full)
    r = invoke("sample", "mnist-s", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.output.strip() == f"error: {tmp_path / 'o'}: No space left on device"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = invoke("train", "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    return out


def test_train_sample_info(run, tmp_path):
    r = invoke("sample", run, "--out", tmp_path / "s", "-n", "12", "--nfe", "5", "--no-progress")
    assert r.exit_code == 0, r.output
    npz = np.load(tmp_path / "s" / "samples.npz")
    assert npz["images"].shape == (12, 1, 16, 16) and npz["labels"].tolist() == [i % 10 for i in range(12)]
    from kakusan.diffusion import Denoiser, generate

    raw = generate(Denoiser.from_pretrained(run), range(12), cond=torch.arange(12) % 10, steps=3, progress=False)
    assert raw.abs().max() > 1 and np.abs(npz["images"]).max() <= 1  # the sampler leaves [-1, 1]; the files do not
    assert (tmp_path / "s" / "grid.png").exists() and len(list((tmp_path / "s" / "images").glob("*.png"))) == 12
    info = json.loads(invoke("info", run).output)
    assert info["images_seen"] == 32 and info["ema_stds"] == [0.05, 0.1] and info["resumable"]


@pytest.mark.parametrize("sampler", ["euler", "ddim", "ddpm"])
def test_other_samplers_and_labels(run, tmp_path, sampler):
    r = invoke("sample", run, "--out", tmp_path / sampler, "-n", "4", "--steps", "3", "--sampler", sampler,
               "--label", "7", "--no-progress")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / sampler / "samples.npz")["labels"].tolist() == [7] * 4


def test_sampling_into_a_nonempty_folder_fails_and_keeps_it(run, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "mine.txt").write_text("keep me")
    r = invoke("sample", run, "--out", tmp_path / "s", "-n", "2", "--no-progress")
    assert r.exit_code != 0 and "not empty" in r.output
    assert (tmp_path / "s" / "mine.txt").read_text() == "keep me" and len(list((tmp_path / "s").iterdir())) == 1


def test_training_into_an_existing_run_fails_and_keeps_it(run):
    before = tree_bytes(run)
    r = invoke("train", "--out", run, *TINY)
    assert r.exit_code != 0 and "resume it" in r.output
    assert tree_bytes(run) == before


@pytest.mark.parametrize("args,message", [
    (["--data", "/no/such/dir"], "neither a built-in"),
    (["--preset", "huge"], "unknown preset"),
    (["--lr", "-1"], "lr must be"),
    (["--process", "vp"], "unknown process"),
])
def test_bad_training_options(tmp_path, args, message):
    r = invoke("train", "--out", tmp_path / "r", *TINY, *args)
    assert r.exit_code == 2 and message in r.output


def test_bad_image_folder_fails_naming_the_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.png").write_bytes(b"garbage")
    r = invoke("train", "--out", tmp_path / "r", *TINY, "--data", tmp_path / "imgs")
    assert r.exit_code == 2 and "bad.png" in r.output
    assert not (tmp_path / "r").exists()


def test_bad_sample_inputs(run, tmp_path):
    assert invoke("sample", tmp_path / "nothing", "--out", tmp_path / "o").exit_code == 2
    r = invoke("sample", run, "--out", tmp_path / "o", "--label", "cat", "--no-progress")
    assert r.exit_code == 2 and "unknown class" in r.output
    r = invoke("sample", run, "--out", tmp_path / "o2", "--ema", "0.3", "--no-progress")
    assert r.exit_code == 2 and "no EMA" in r.output
    assert invoke("info", tmp_path).exit_code == 2


@pytest.mark.slow
def test_resume_extends_a_run(run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    r = invoke("train", "--out", copy, "--resume", "--kimg", "0.048", "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", copy).output)["images_seen"] == 48
    r = invoke("train", "--out", copy, "--resume", "--preset", "s")
    assert r.exit_code == 2 and "only kimg and minutes" in r.output


def test_non_finite_samples_are_refused_before_anything_is_written(run, tmp_path, monkeypatch):
    import kakusan.sampling

    real = kakusan.sampling.generate
    monkeypatch.setattr(kakusan.sampling, "generate",
                        lambda *a, **k: real(*a, **k).index_fill_(0, torch.tensor([1]), float("nan")))
    r = invoke("sample", run, "--out", tmp_path / "s", "-n", "3", "--nfe", "3", "--no-progress")
    assert r.exit_code == 2 and "1 of 3 samples (seeds 0..2) hold NaN" in r.output and not (tmp_path / "s").exists()
    images = np.zeros((4, 1, 16, 16), np.float32)
    images[2, 0, 3, 3] = np.inf
    np.savez(tmp_path / "bad.npz", images=images)
    r = invoke("eval", tmp_path / "bad.npz")
    assert r.exit_code == 2 and "1 of 4 images hold NaN or infinite values" in r.output
