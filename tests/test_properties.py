"""Property-based tests (hypothesis), issue 14 part 3: every numeric option of the CLI either works or is refused in
one line with exit 2 and nothing written; every degradation keeps shapes, accepts exactly t in 0..T and is the identity
at t = 0."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kakusan import KakusanError
from kakusan.cli import app
from kakusan.cold import DEGRADATIONS, build_degradation

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
CHEAP = ["-n", 1, "--sampler", "euler", "--nfe", 1, "--no-progress"]  # should a bad value slip through: a second


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(r, out, *words):
    """Exit 2, one line, no traceback, naming what is wrong; nothing written at ``out``."""
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists()


# --- sample -----------------------------------------------------------------------------------------------------
BAD_SAMPLE = st.one_of(
    st.tuples(st.just("-n"), st.integers(max_value=0), st.just("n")),
    st.tuples(st.just("--batch-size"), st.integers(max_value=0), st.just("batch_size")),
    st.tuples(st.just("--chunk"), st.integers(max_value=0), st.just("chunk")),
    st.tuples(st.just("--nfe"), st.integers(max_value=0), st.just("steps")),
    st.tuples(st.just("--steps"), st.integers(max_value=0), st.just("steps")),
    st.tuples(st.just("--seed"), st.integers(max_value=-1), st.just("seed")),
    st.tuples(st.just("--label"), st.integers().filter(lambda v: not 0 <= v <= 9), st.just("class")),
)


@FEW
@given(bad=BAD_SAMPLE)
def test_a_bad_count_seed_or_label_is_refused_in_one_line(bad, tmp_path_factory):
    option, value, word = bad
    out = tmp_path_factory.mktemp("s") / "out"
    refused(invoke("sample", "mnist-s", "--out", out, *CHEAP, option, value), out, word)


@FEW
@given(w=st.one_of(NOT_FINITE, st.floats(-1e3, 1e3).filter(lambda v: v != 1)),  # larger weights overflow the samples
       guide=st.sampled_from([None, "uncond"]))
def test_a_guidance_weight_is_finite_and_needs_a_guide(w, guide, tmp_path_factory):
    """Refused without a guide or when not finite; any other weight is accepted and recorded."""
    out = tmp_path_factory.mktemp("s") / "out"
    r = invoke("sample", "mnist-s", "--out", out, *CHEAP, "--guidance", w, *(["--guide", guide] if guide else []))
    if guide is None or not math.isfinite(w):
        refused(r, out, "guidance")
    else:
        assert r.exit_code == 0, r.output
        recorded = json.loads((out / "sampling.json").read_text())
        assert (recorded["guide"], recorded["guidance"]) == (guide, w)
        assert len(np.load(out / "samples.npz")["images"]) == 1


@FEW
@given(lo=st.one_of(st.floats(), NOT_FINITE), hi=st.one_of(st.floats(), NOT_FINITE))
def test_a_guidance_interval_must_be_an_ordered_pair_of_levels(lo, hi, tmp_path_factory):
    if 0 <= lo < hi:
        return  # a valid interval, [lo, inf) included (sampled below)
    out = tmp_path_factory.mktemp("s") / "out"
    refused(invoke("sample", "mnist-s", "--out", out, *CHEAP, "--guide", "uncond", "--guidance", 2,
                   "--interval", f"{lo},{hi}"), out, "interval")


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 10**6), label=st.integers(0, 9), nfe=st.integers(1, 4),
       interval=st.tuples(st.floats(0, 5), st.floats(0.01, 80)).filter(lambda p: p[0] < p[1]))
def test_valid_options_sample_what_was_asked(n, seed, label, nfe, interval, tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "out"
    r = invoke("sample", "mnist-s", "--out", out, "-n", n, "--seed", seed, "--label", label, "--sampler", "euler",
               "--nfe", nfe, "--guide", "uncond", "--guidance", 1.5, "--interval", f"{interval[0]},{interval[1]}",
               "--no-progress")
    assert r.exit_code == 0, r.output
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (n, 1, 32, 32) and np.isfinite(npz["images"]).all()
    assert npz["seeds"].tolist() == list(range(seed, seed + n)) and npz["labels"].tolist() == [label] * n


# --- train --------------------------------------------------------------------------------------------------------
BAD_TRAIN = st.one_of(
    st.tuples(st.just("--image-size"), st.one_of(st.integers(max_value=7), st.integers(min_value=1025)),
              st.just("image_size")),
    st.tuples(st.just("--batch-size"), st.integers(max_value=0), st.just("batch_size")),
    st.tuples(st.just("--kimg"), st.one_of(st.floats(max_value=0), NOT_FINITE), st.just("kimg")),
    st.tuples(st.just("--minutes"), st.one_of(st.floats(max_value=0), NOT_FINITE), st.just("minutes")),
    st.tuples(st.just("--lr"), st.one_of(st.floats(max_value=0), NOT_FINITE), st.just("lr")),
    st.tuples(st.just("--label-dropout"), st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1), NOT_FINITE),
              st.just("label_dropout")),
    st.tuples(st.just("--seed"), st.integers(max_value=-1), st.just("seed")),
    st.tuples(st.just("--warmup-kimg"), st.one_of(st.floats(max_value=-1e-9), NOT_FINITE), st.just("warmup_kimg")),
    st.tuples(st.just("--p-mean"), NOT_FINITE, st.just("p_mean")),
    st.tuples(st.just("--ema"), st.one_of(st.floats(max_value=0), st.floats(min_value=0.29), NOT_FINITE),
              st.just("EMA")),
)


@FEW
@given(bad=BAD_TRAIN)
def test_a_bad_training_number_is_refused_before_anything_is_written(bad, tmp_path_factory):
    option, value, word = bad
    out = tmp_path_factory.mktemp("t") / "run"
    refused(invoke("train", "--data", "mnist", "--out", out, option, value, "--no-progress"), out, word)


# --- degradations -------------------------------------------------------------------------------------------------
KINDS = [(kind, False) for kind in DEGRADATIONS] + [("blur", True)]


@pytest.mark.parametrize("kind,to_mean", KINDS)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_every_degradation_keeps_shapes_and_takes_exactly_t_in_0_to_T(kind, to_mean, data):
    side = data.draw(st.sampled_from([8, 16, 32]), label="side")
    max_steps = int(math.log2(side)) if kind == "pixelate" else 60  # pixelate halves the side T times
    steps = data.draw(st.integers(1, max_steps), label="steps")
    channels = 3 if kind == "desaturate" else data.draw(st.sampled_from([1, 3]), label="channels")  # RGB only
    batch = data.draw(st.integers(1, 5), label="batch")
    seed = data.draw(st.integers(0, 2**31), label="seed")
    d = build_degradation(kind, steps=steps, to_mean=to_mean)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, channels, side, side, generator=g) * 2 - 1
    t = d.sample_t(batch, g)
    assert t.shape == (batch,) and bool(((t >= 1) & (t <= steps) & (t == t.round())).all())  # t ~ U{1..T}
    for level in (t, torch.full((batch,), float(steps))):
        x = d.degrade(x0, level, g)
        assert x.shape == x0.shape and x.dtype == x0.dtype and torch.isfinite(x).all()
    assert torch.allclose(d.degrade(x0, torch.zeros(batch), g), x0, atol=1e-6)  # D(x0, 0) = x0
    outside = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=steps + 1)), label="outside")
    with pytest.raises(KakusanError, match="severity"):
        d.degrade(x0, torch.full((batch,), float(outside)), g)
