"""Guidance: w = 1 is the main model, the interval switches guidance off, and exact guided scores are tilted scores."""
import pytest
import torch

from kakusan.diffusion.exact import GaussianMixture
from kakusan.guidance import make_guided

MAIN = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.2]], [[[0.05, 0], [0, 0.05]]] * 2)
GUIDE = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.2]], [[[0.3, 0.1], [0.1, 0.3]]] * 2)  # a blurrier model


def as_model(mix):
    return lambda x, sigma, cond: mix.denoise(x, sigma)


def test_w_one_returns_the_main_output_exactly():
    x = torch.randn(64, 2, dtype=torch.float64)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    d = make_guided(as_model(MAIN), as_model(GUIDE), 1.0)(None)(x, sigma)
    assert torch.equal(d, MAIN.denoise(x, sigma))


def test_guidance_is_off_outside_the_interval():
    x = torch.randn(64, 2, dtype=torch.float64)
    make = make_guided(as_model(MAIN), as_model(GUIDE), 3.0, interval=(0.2, 1.0))
    den = make(None)
    for s in [0.1, 0.2, 1.5]:  # outside (0.2, 1.0]
        s = torch.tensor(s, dtype=torch.float64)
        assert torch.equal(den(x, s), MAIN.denoise(x, s))
    for s in [0.21, 1.0]:  # inside
        s = torch.tensor(s, dtype=torch.float64)
        assert not torch.allclose(den(x, s), MAIN.denoise(x, s))


def test_exact_guidance_equals_the_tilted_score():
    """score of D_w == grad log [p_main (p_main / p_guide)^(w - 1)], computed by autograd on the exact densities."""
    x = torch.randn(200, 2, dtype=torch.float64, requires_grad=True)
    for w in [1.5, 2.0, 3.0]:
        for sigma in [0.05, 0.4, 2.0]:
            log_tilted = MAIN.log_prob(x, sigma) + (w - 1) * (MAIN.log_prob(x, sigma) - GUIDE.log_prob(x, sigma))
            (grad,) = torch.autograd.grad(log_tilted.sum(), x)
            d_w = make_guided(as_model(MAIN), as_model(GUIDE), w)(None)(x.detach(), torch.tensor(sigma))
            assert torch.allclose((d_w - x.detach()) / sigma**2, grad, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_cfg_batches_both_halves_into_one_call_and_matches_two_calls():
    from kakusan.diffusion.denoiser import Denoiser
    from kakusan.diffusion.process import EDMProcess
    from kakusan.nets import NetConfig

    torch.manual_seed(0)
    model = Denoiser.create(NetConfig(preset="xs", image_size=16, cond_type="class", num_classes=10), EDMProcess()).eval()
    calls = []
    counted = lambda x, s, c: calls.append(x.shape[0]) or model(x, s, c)  # noqa: E731
    x, cond, sigma = torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3]), torch.tensor(1.3)
    with torch.no_grad():
        batched = make_guided(counted, None, 2.5, null_cond=model.null_like)(cond)(x, sigma)
        d_main, d_null = model(x, sigma, cond), model(x, sigma, model.null_cond(3))
    assert calls == [6]
    assert torch.allclose(batched, d_null + 2.5 * (d_main - d_null), atol=1e-5)


def test_autoguidance_loads_the_guide_and_combines_the_two_denoisers():
    from kakusan.diffusion import Denoiser
    from kakusan.guidance import guide_from_spec

    main, guide = Denoiser.from_pretrained("mnist-s"), Denoiser.from_pretrained("mnist-xs-guide", ema=0.05)
    make = guide_from_spec(main, "mnist-xs-guide", 2.0, interval=(0.5, 10.0), guide_ema=0.05)
    x, cond = torch.randn(2, 1, 32, 32), torch.tensor([3, 8])
    with torch.no_grad():
        inside = make(cond)(x, torch.tensor(2.0))
        outside = make(cond)(x, torch.tensor(20.0))
        d_main, d_guide = main(x, 2.0, cond), guide(x, 2.0, cond)
        assert torch.allclose(inside, d_guide + 2.0 * (d_main - d_guide), atol=1e-5)
        assert torch.equal(outside, main(x, 20.0, cond))
    assert guide_from_spec(main, None, 1.0) is None


def test_a_guide_that_does_not_match_the_main_model_is_refused(tmp_path):
    from kakusan import KakusanError
    from kakusan.cold import build_degradation
    from kakusan.diffusion import Denoiser
    from kakusan.diffusion.process import EDMProcess
    from kakusan.guidance import guide_from_spec
    from kakusan.nets import NetConfig

    main = Denoiser.from_pretrained("mnist-s")
    Denoiser.create(NetConfig(preset="xs", image_size=32, cond_type="class", num_classes=3),
                    EDMProcess()).save_pretrained(tmp_path / "three-classes")
    with pytest.raises(KakusanError, match="does not match"):
        guide_from_spec(main, tmp_path / "three-classes", 2.0)
    with pytest.raises(KakusanError, match="needs a guide"):
        guide_from_spec(main, None, 2.0)
    with pytest.raises(KakusanError, match="interval"):
        guide_from_spec(main, "uncond", 2.0, interval=(3.0, 1.0))
    cold = Denoiser.create(NetConfig(preset="xs", image_size=32), build_degradation("mask", steps=4))
    with pytest.raises(KakusanError, match="not defined for a mask model"):
        guide_from_spec(cold, "uncond", 2.0)


@pytest.mark.slow
def test_guidance_sweep_scores_every_setting_on_shared_seeds(tmp_path):
    """guide x guide EMA product, CFG without a guide EMA, one unguided row shared by all, a spread on every FD,
    one CSV row per (setting, sampling, w), and the JSON last line."""
    import csv
    import json

    from typer.testing import CliRunner

    from kakusan.cli import app

    args = ["guidance-sweep", "--model", "mnist-s", "--guide", "ag=mnist-xs-guide", "--guide", "cfg=uncond",
            "--guide-ema", "0.05,0.1", "--w", "1,2", "--n", "40", "--sampling", "euler:2", "--bootstrap", "20",
            "--out", str(tmp_path / "sweep"), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])["euler:2"]
    assert sorted(result) == ["ag g0.05", "ag g0.1", "cfg"]
    unguided = [rows[0] for rows in result.values()]
    assert all(u == unguided[0] for u in unguided) and unguided[0]["w"] == 1
    guided = [rows[1]["fd"] for rows in result.values()]
    assert len(set(guided)) == 3  # the guide EMA and the kind of guide change the samples
    assert all(row["fd_std"] > 0 for rows in result.values() for row in rows)
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 6  # the weights actually loaded, 'auto' resolved; CFG has no guide EMA of its own
    assert {(r["setting"], r["guide_ema"], r["main_ema"]) for r in lines} == {
        ("ag g0.05", "0.050", "0.100"), ("ag g0.1", "0.100", "0.100"), ("cfg", "", "0.100")}
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 0
    from safetensors.torch import load_file
    boot = load_file(str(tmp_path / "sweep" / "bootstrap.safetensors"))
    assert len(boot) == 6 and boot["euler:2|cfg|w=2"].shape == (20,)
    assert load_file(str(tmp_path / "sweep" / "features.safetensors"))["euler:2|cfg|w=2"].shape == (40, 128)
    assert "x unguided" in r.output and "(paired)" in r.output
    from PIL import Image
    compare = Image.open(tmp_path / "sweep" / "compare.png")  # 20 samples: unguided, each guided setting's best
    shown = 1 + sum(min(rows, key=lambda row: row["fd"])["w"] != 1 for rows in result.values())
    assert compare.height == 2 * (shown * 34 + 2) + 24 and compare.width > 20 * 34 * 2
    bad = CliRunner().invoke(app, args[:-3] + ["--sampling", "heun", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "SAMPLER:NFE" in bad.output


def test_sample_autoguidance_uses_the_models_tuned_guidance(tmp_path):
    """--autoguidance = the guide, w, interval and EMAs of the model's guidance.json, nothing else; refused with a
    one-line error where there is none, or together with --guide."""
    import numpy as np
    from typer.testing import CliRunner

    from kakusan.cli import app
    from kakusan.models import export_model
    from kakusan.utils import io

    export_model("mnist-s", tmp_path / "m", emas=[0.05, 0.1])
    io.write_json({"autoguidance": {"guide": "mnist-xs-guide", "w": 2.0, "interval": [0.3, 5], "ema": 0.05,
                                    "guide_ema": 0.05, "note": "test",
                                    "by_sampling": {"euler:3": {"w": 1.5, "interval": None}}}},
                  tmp_path / "m" / "guidance.json")
    base = ["sample", str(tmp_path / "m"), "--n", "3", "--sampler", "euler", "--nfe", "2", "--no-progress"]
    run = lambda *a: CliRunner().invoke(app, [*base, *a])  # noqa: E731
    assert run("--autoguidance", "--out", str(tmp_path / "a")).exit_code == 0
    assert run("--guide", "mnist-xs-guide", "--guidance", "2", "--interval", "0.3,5", "--ema", "0.05",
               "--guide-ema", "0.05", "--out", str(tmp_path / "b")).exit_code == 0
    assert run("--out", str(tmp_path / "c")).exit_code == 0
    a, b, c = (np.load(tmp_path / x / "samples.npz")["images"] for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # a sampler setting with its own tuned w uses it; one without falls back to the default's, with a note
    three = ["sample", str(tmp_path / "m"), "--n", "3", "--sampler", "euler", "--nfe", "3", "--no-progress"]
    assert CliRunner().invoke(app, [*three, "--autoguidance", "--out", str(tmp_path / "t1")]).exit_code == 0
    assert CliRunner().invoke(app, [*three, "--guide", "mnist-xs-guide", "--guidance", "1.5", "--ema", "0.05",
                                    "--guide-ema", "0.05", "--out", str(tmp_path / "t2")]).exit_code == 0
    t1, t2 = (np.load(tmp_path / x / "samples.npz")["images"] for x in ("t1", "t2"))
    assert np.array_equal(t1, t2)
    from kakusan.guidance.guided import tuned_guidance
    assert tuned_guidance(tmp_path / "m", sampling="euler:2")["tuned_for"] == "default"
    assert "no autoguidance tuned for euler:2" in run("--autoguidance", "--out", str(tmp_path / "t3")).output
    r = run("--autoguidance", "--guide", "uncond", "--out", str(tmp_path / "d"))
    assert r.exit_code == 2 and "drop --guide" in r.output
    r = CliRunner().invoke(app, ["sample", "mnist-xs-guide", "--autoguidance", "--n", "1", "--out",
                                 str(tmp_path / "e")])
    assert r.exit_code == 2 and "no tuned autoguidance" in r.output and len(r.output.strip().splitlines()) == 1


def test_paired_summary_ratios_and_gaps_use_the_paired_resamplings():
    from kakusan.guidance.sweep_rows import Row, paired_summary

    noise = torch.linspace(-1, 1, 50)

    def row(name, w, fd, wobble):
        return Row("s", name, w, fd, float((fd + wobble * noise).std()), 0.0, 0.0, 0.0, 0.0, fd + wobble * noise)
    rows = [row("ag", 1, 2.0, 0.5), row("ag", 1.5, 1.0, 0.25), row("cfg", 1, 2.0, 0.5), row("cfg", 1.5, 1.6, 0.5)]
    p = paired_summary(rows)["s"]
    assert p["ag"]["leader"] == "ag" and p["ag"]["gap_to_leader"] == 0 and p["ag"]["gap_std"] == 0
    assert p["ag"]["ratio_to_unguided"] == 0.5 and p["ag"]["w"] == 1.5
    # resampled together the ratio barely moves, though each FD alone moves a lot
    assert p["ag"]["ratio_std"] < 0.1 * p["ag"]["fd_std"]
    assert p["cfg"]["gap_to_leader"] == pytest.approx(0.6)
    assert p["cfg"]["gap_std"] == pytest.approx(float((0.25 * noise).std()))


@pytest.mark.slow
def test_guidance_rescore_reproduces_a_sweep_and_pairs_runs_side_by_side(tmp_path):
    """From the stored features alone: 'split' gives the sweep's own numbers back, 'all' scores against every real
    image, two runs on the same seeds pair row for row; runs that cannot pair, a folder that is no sweep and an
    output folder that is a run are refused with one line, the run untouched."""
    import json
    import shutil

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from kakusan.cli import app
    from kakusan.data import load_dataset
    from kakusan.guidance.rescore import rescore
    from kakusan.metrics import load_featurenet
    from kakusan.metrics.scores import extract, fd_bootstrap, frechet_distance
    from kakusan.utils import io

    run = tmp_path / "sw"
    r = CliRunner().invoke(app, ["guidance-sweep", "--guide", "cfg=uncond", "--w", "1,2", "--n", "20", "--sampling",
                                 "euler:2", "--bootstrap", "10", "--out", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    swept = json.loads(r.output.strip().splitlines()[-1])["euler:2"]["cfg"]
    same = rescore([run], tmp_path / "split", reference="split", bootstrap=10, progress=False)
    for row, again in zip(swept, same["rows"]["euler:2"]["cfg"]):
        assert all(again[k] == pytest.approx(row[k], abs=1e-5) for k in ("w", "fd", "fd_std", "precision", "recall"))
    every = rescore([run], tmp_path / "all", reference="all", bootstrap=10, progress=False)
    real = extract(load_featurenet(), load_dataset("mnist").images)[0]
    stored = load_file(str(run / "features.safetensors"))["euler:2|cfg|w=2"]
    assert every["rows"]["euler:2"]["cfg"][1]["fd"] == pytest.approx(frechet_distance(real, stored))
    assert io.read_json(tmp_path / "all" / "sweep.json")["reference"] == "all"
    # the seed-to-seed spread: the same FD, the bootstrap resampling the samples only (the fixed reference's own)
    fixed = rescore([run], tmp_path / "fixed", reference="all", bootstrap=10, spread="samples", progress=False)
    row, wide = fixed["rows"]["euler:2"]["cfg"][1], every["rows"]["euler:2"]["cfg"][1]
    assert row["fd"] == wide["fd"] and row["fd_std"] != pytest.approx(wide["fd_std"])
    assert row["fd_std"] == pytest.approx(float(fd_bootstrap(real, stored, 10, 0).std()))
    assert io.read_json(tmp_path / "fixed" / "sweep.json")["spread"] == "samples"
    r = CliRunner().invoke(app, ["guidance-sweep", "--guide", "cfg=uncond", "--w", "2", "--n", "20", "--sampling",
                                 "euler:2", "--bootstrap", "10", "--reference", "all", "--spread", "samples",
                                 "--out", str(tmp_path / "sw-fixed"), "--no-progress"])  # the sweep's own option
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["euler:2"]["cfg"][0]["fd_std"] == pytest.approx(
        row["fd_std"], abs=1e-5)
    shutil.copytree(run, tmp_path / "twin")
    pair = rescore([run, tmp_path / "twin"], tmp_path / "pair", bootstrap=10, progress=False)["paired"]["euler:2"]
    assert set(pair) == {"sw/cfg", "twin/cfg"}
    assert pair["twin/cfg"]["gap_to_leader"] == 0 or pair["sw/cfg"]["gap_to_leader"] == 0
    assert pair["twin/cfg"]["gap_std"] == 0  # identical samples resampled on the same indices
    io.write_json({**io.read_json(run / "sweep.json"), "seed": 7}, tmp_path / "twin" / "sweep.json")
    csv_before = (run / "sweep.csv").read_bytes()
    for args, message in (([str(run), str(tmp_path / "twin")], "sampled on different (seed, n)"),
                          ([f"{run}+{tmp_path / 'twin'}"], "need disjoint seed ranges"),
                          ([str(tmp_path / "all")], "not a finished guidance sweep (no features.safetensors)"),
                          ([str(run), "--out", str(run)], "is one of the runs"),
                          ([str(run), "--out", str(tmp_path / "twin")], "holds a sampled sweep"),
                          ([str(run), "--spread", "real", "--out", str(tmp_path / "x")], "'samples', 'both' or 'auto'")):
        bad = CliRunner().invoke(app, ["guidance-rescore", *args, "--no-progress"])
        assert bad.exit_code == 2 and message in bad.output and len(bad.output.strip().splitlines()) == 1
    assert (run / "sweep.csv").read_bytes() == csv_before


@pytest.mark.slow
def test_guidance_rescore_pools_runs_on_disjoint_seeds_into_one_sample_set(tmp_path):
    """Two sweeps on seeds 0-9 and 10-19, pooled as RUN+RUN, score exactly as one sweep on seeds 0-19 (the same
    samples, the same bootstrap), class accuracy weighted by n; pools pair with pools on the same seed ranges."""
    from typer.testing import CliRunner

    from kakusan import KakusanError
    from kakusan.cli import app
    from kakusan.guidance.rescore import rescore

    def sweep(name, n, seed, w="2"):
        r = CliRunner().invoke(app, ["guidance-sweep", "--guide", "cfg=uncond", "--w", w, "--n", str(n), "--seed",
                                     str(seed), "--sampling", "euler:2", "--bootstrap", "10", "--out",
                                     str(tmp_path / name), "--no-progress"])
        assert r.exit_code == 0, r.output
        return tmp_path / name

    whole, a, b = sweep("whole", 20, 0), sweep("a", 10, 0), sweep("b", 10, 10)
    one = rescore([whole], tmp_path / "one", bootstrap=10, progress=False)["rows"]["euler:2"]["cfg"][0]
    pooled = rescore([f"{a}+{b}"], tmp_path / "pooled", bootstrap=10, progress=False)["rows"]["euler:2"]["cfg"][0]
    for key in ("fd", "fd_std", "precision", "recall", "class_acc"):
        assert pooled[key] == pytest.approx(one[key], abs=1e-6), key
    a3, b3 = sweep("a3", 10, 0, "3"), sweep("b3", 10, 10, "3")
    pair = rescore([f"{a}+{b}", f"{b3}+{a3}"], tmp_path / "pair", bootstrap=10, progress=False)  # any order
    assert set(pair["rows"]["euler:2"]) == {"a+b/cfg", "b3+a3/cfg"}
    with pytest.raises(KakusanError, match="only runs of the same rows can be pooled"):
        rescore([f"{a}+{b3}"], tmp_path / "mixed", bootstrap=10, progress=False)


@pytest.mark.slow
def test_a_killed_guidance_sweep_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Parts of CHUNK samples are kept while a sweep runs: a sweep killed after some parts, resumed, samples only
    the missing parts and writes the same files as one never stopped; a finished or interrupted folder is never
    overwritten, and a resume with other arguments is refused."""
    from typer.testing import CliRunner

    import kakusan.sampling
    from kakusan import KakusanError
    from kakusan.cli import app
    from kakusan.guidance import sweep as sw

    monkeypatch.setattr(sw, "CHUNK", 8)  # n = 20: parts of 8, 8, 4 per row; two rows (w = 1, 2)
    settings = sw.settings_product({"cfg": "uncond"})

    def run(out, **kw):
        return sw.guidance_sweep("mnist-s", settings, [1, 2], tmp_path / out, n=20, samplings=["euler:2"],
                                 bootstrap=10, progress=False, **kw)

    run("whole")
    real, calls = kakusan.sampling.generate, []  # the sweep samples by its producer

    def killed_after_four(*a, **kw):
        calls.append(len(a[1]))
        if len(calls) > 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(kakusan.sampling, "generate", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        run("cut")
    assert not (tmp_path / "cut" / "sweep.csv").exists()
    assert len(list((tmp_path / "cut" / sw.PARTS).glob("row*.safetensors"))) == 4
    with pytest.raises(KakusanError, match="holds an interrupted sweep; --resume"):
        run("cut")
    with pytest.raises(KakusanError, match="started with other seed"):
        run("cut", resume=True, seed=1)
    calls.clear()
    monkeypatch.setattr(kakusan.sampling, "generate", lambda *a, **kw: calls.append(len(a[1])) or real(*a, **kw))
    run("cut", resume=True)
    assert calls == [8, 4]  # the second row's last two parts only
    assert not (tmp_path / "cut" / sw.PARTS).exists()
    for name in ("sweep.csv", "features.safetensors", "bootstrap.safetensors"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    before = (tmp_path / "whole" / "sweep.csv").read_bytes()
    r = CliRunner().invoke(app, ["guidance-sweep", "--guide", "cfg=uncond", "--w", "1,2", "--n", "20", "--sampling",
                                 "euler:2", "--bootstrap", "10", "--out", str(tmp_path / "whole"), "--no-progress"])
    assert r.exit_code == 2 and "already holds a finished sweep" in r.output and len(r.output.strip().splitlines()) == 1
    assert (tmp_path / "whole" / "sweep.csv").read_bytes() == before
