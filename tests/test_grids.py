"""Optimised sampling grids: never worse than Karras' on the error they minimise, stored with the model, used by
``--schedule optimized`` and by the model's default sampling."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kakusan.cli import app
from kakusan.diffusion import Denoiser
from kakusan.diffusion.grids import GridProblem, grid_from_params, optimize_grid, params_from_grid
from kakusan.diffusion.process import EDMProcess
from kakusan.nets.unet import UNetConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "model"
    torch.manual_seed(0)
    Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), EDMProcess(),
                    {"class_names": ["a", "b", "c"]}).save_pretrained(folder)
    return folder


def test_parametrisation_round_trips_and_stays_decreasing():
    grid = torch.tensor([80.0, 3.0, 0.2, 0.0], dtype=torch.float64)
    assert torch.allclose(grid_from_params(params_from_grid(grid, 80.0), 80.0), grid)
    for a in np.random.default_rng(0).normal(0, 3, (20, 4)):
        g = grid_from_params(a, 80.0)
        assert g[-1] == 0 and bool((g[:-2] > g[1:-1]).all()) and g[0] < 80


def test_optimised_grid_is_no_worse_than_karras_and_deterministic(tiny):
    """The optimiser's own "karras_error" is its starting point, so ``error <= karras_error`` would hold even if it
    never moved: the grid it returns is scored afresh against Karras' eq. 5 grid, built here, on a new problem."""
    model = Denoiser.from_pretrained(tiny)
    runs = [optimize_grid(GridProblem(model, "dpmpp3m", n=4, reference=("heun", 5)), 3, max_evals=14,
                          progress=False) for _ in range(2)]
    r = runs[0]
    assert r["evaluations"] == 14
    judge = GridProblem(model, "dpmpp3m", n=4, reference=("heun", 5))
    ramp = torch.linspace(0, 1, 3, dtype=torch.float64)
    karras = torch.cat([(80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, torch.zeros(1)])
    karras_error = judge.error(karras)
    found_error = judge.error(torch.tensor(r["sigmas"], dtype=torch.float64))
    assert found_error == pytest.approx(r["error"], rel=1e-5)  # the error reported is the grid's
    assert r["karras_error"] == pytest.approx(karras_error, rel=1e-5)
    assert found_error < 0.99 * karras_error  # strictly better: 14 evaluations find a grid ~8% better here
    assert len(r["sigmas"]) == 4 and r["sigmas"][-1] == 0 and r["sigmas"] == sorted(r["sigmas"], reverse=True)
    assert runs[0] == runs[1]
    with pytest.raises(Exception, match="one-call-per-step"):
        optimize_grid(GridProblem(model, "heun", n=2, reference=("heun", 3)), 3, max_evals=2, progress=False)


@pytest.mark.slow
def test_cli_stores_grids_and_the_default_that_sample_then_uses(tiny, tmp_path):
    r = runner.invoke(app, ["grid", str(tiny), "--sampler", "dpmpp2m", "--nfe", "2,3", "--n", "4", "--max-evals",
                            "10", "--reference-nfe", "5", "--default-nfe", "3", "--note", "because", "--no-progress"])
    assert r.exit_code == 0, r.output
    solver = json.loads((tiny / "solver.json").read_text())
    assert set(solver["grids"]["dpmpp2m"]) == {"2", "3"}
    assert solver["default"] == {"sampler": "dpmpp2m", "nfe": 3, "schedule": "optimized", "note": "because"}

    model = Denoiser.from_pretrained(tiny)
    grid = model.sampling_grid("dpmpp2m", 3, "optimized")
    assert grid.tolist() == solver["grids"]["dpmpp2m"]["3"]["sigmas"]
    r = runner.invoke(app, ["sample", str(tiny), "--out", str(tmp_path / "s"), "-n", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert (out["sampler"], out["nfe"], out["schedule"]) == ("dpmpp2m", 3, "optimized")
    same = runner.invoke(app, ["sample", str(tiny), "--out", str(tmp_path / "t"), "-n", "2", "--sampler",
                               "dpmpp2m", "--nfe", "3", "--schedule", "optimized", "--no-progress"])
    a, b = (np.load(tmp_path / d / "samples.npz")["images"] for d in ("s", "t"))
    assert same.exit_code == 0 and np.array_equal(a, b)

    missing = runner.invoke(app, ["sample", str(tiny), "--out", str(tmp_path / "u"), "--sampler", "dpmpp2m",
                                  "--nfe", "7", "--schedule", "optimized", "--no-progress"])
    assert missing.exit_code == 2 and "no optimized grid for dpmpp2m at 7 NFE" in missing.output
    assert not (tmp_path / "u").exists()
    bad = runner.invoke(app, ["grid", str(tiny), "--sampler", "heun", "--nfe", "3", "--no-progress"])
    assert bad.exit_code == 2
    assert json.loads((tiny / "solver.json").read_text()) == solver  # a refused run leaves the file as it was


def test_scheduler_option_samples_through_diffusers(tiny, tmp_path):
    r = runner.invoke(app, ["sample", str(tiny), "--out", str(tmp_path / "s"), "-n", "2", "--scheduler",
                            "DEISMultistepScheduler", "--nfe", "4", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["nfe"] == 4
    r = runner.invoke(app, ["sample", str(tiny), "--out", str(tmp_path / "t"), "--scheduler", "UNet2DModel",
                            "--no-progress"])
    assert r.exit_code == 2 and "not a diffusers scheduler" in r.output and not (tmp_path / "t").exists()


def sample_images(model, out, *options):
    """The images of `kakusan sample MODEL --out OUT -n 2 OPTIONS`, which must succeed."""
    r = runner.invoke(app, ["sample", str(model), "--out", str(out), "-n", "2", "--no-progress", *options])
    assert r.exit_code == 0, r.output
    return np.load(out / "samples.npz")["images"]


def test_guidance_and_its_interval_work_through_a_diffusers_scheduler(tiny, tmp_path):
    """The scheduler bridge calls the network only through the bound denoiser, so classifier-free guidance and its
    interval apply: w = 1 equals no guidance bit for bit, w = 3 changes the samples, an empty interval undoes it."""
    def run(name, *extra):
        return sample_images(tiny, tmp_path / name, "--sampler", "unipc", "--nfe", "4", *extra)
    plain = run("plain")
    assert np.array_equal(plain, run("w1", "--guide", "uncond", "--guidance", "1"))
    assert not np.allclose(plain, run("w3", "--guide", "uncond", "--guidance", "3"))
    assert np.array_equal(plain, run("off", "--guide", "uncond", "--guidance", "3", "--interval", "1000,2000"))


@pytest.mark.slow
def test_channels_last_and_compile_sample_the_same_images(tiny, tmp_path):
    """The inference speed-ups of `kakusan sample` change how the network runs, not what it computes (up to float
    rounding), and are recorded in the folder's settings so that --resume keeps them."""
    def run(name, *extra):
        return sample_images(tiny, tmp_path / name, "--sampler", "euler", "--nfe", "2", "--precision", "fp32", *extra)
    plain = run("plain")
    assert np.allclose(plain, run("cl", "--channels-last"), atol=1e-4)
    assert np.allclose(plain, run("compiled", "--compile"), atol=1e-4)
    assert json.loads((tmp_path / "cl" / "sampling.json").read_text())["speed"] == {"compile": False,
                                                                                   "channels_last": True}
