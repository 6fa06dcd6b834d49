"""Every kind of model, used the way a user does: each command a fresh ``kakusan`` process, so that a command which
works only because an earlier one imported something (a process class, a net) fails here.

Per process kind: train a few images, then ``info``, ``sample`` (a clean one-line refusal where the process cannot
generate), ``restore`` (cold models) and ``export``; the one-step student of a distillation run alike."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KAKUSAN = str(Path(sys.executable).with_name("kakusan"))
TINY = ["--image-size", "16", "--preset", "xs", "--batch-size", "8", "--kimg", "0.008", "--warmup-kimg", "0",
        "--checkpoint-kimg", "0.008", "--sample-kimg", "100", "--no-progress"]
# process -> its own training flags (a few steps keep the cold models quick) and whether it can generate
KINDS = {
    "edm": ([], True),
    "ddpm": (["--beta-schedule", "cosine"], True),
    "blur": (["--steps", "4"], False),
    "blur-to-mean": (["--steps", "4", "--to-mean"], True),
    "pixelate": ([], False),
    "mask": (["--steps", "4"], False),
    "desaturate": (["--channels", "3", "--steps", "4"], False),
    "snow": (["--steps", "4"], False),
    "mix": (["--steps", "4"], True),
    "noise": (["--steps", "4"], True),
}


def kakusan(*args, ok=True):
    """One command in a fresh process (the environment a user's shell gives, one thread)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([KAKUSAN, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert r.returncode == 0, f"kakusan {' '.join(map(str, args))}:\n{r.stderr[-2000:]}"
    return r


def refused(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]


def use_everywhere(run, tmp_path, kind, generates, cold):
    info = json.loads(kakusan("info", run).stdout)
    assert info["process"]["kind"] == kind and "class_name" in info["process"]
    r = kakusan("sample", run, "--n", "2", "--out", tmp_path / "samples", "--no-progress", ok=generates)
    if generates:
        assert (tmp_path / "samples" / "samples.npz").is_file()
    else:
        refused(r, "generation")
    if cold:
        kakusan("restore", run, "--n", "2", "--out", tmp_path / "restore", "--no-progress")
        assert (tmp_path / "restore" / "strip.png").is_file()
    kakusan("export", run, "--out", tmp_path / "export")
    exported = json.loads((tmp_path / "export" / "config.json").read_text())["process"]
    assert exported["kind"] == kind and exported["class_name"] == info["process"]["class_name"]


def chain(name, tmp_path):
    """Train a model of kind ``name`` and use it, each command a fresh process."""
    if name == "one-step":
        kakusan("train", "--data", "mnist", *TINY, "--out", tmp_path / "teacher")
        kakusan("distill", "pairs", "--teacher", tmp_path / "teacher", "--n", "4", "--nfe", "3", "--shard-size", "4",
                "--out", tmp_path / "pairs", "--no-progress")
        kakusan("distill", "train", "--pairs", tmp_path / "pairs", "--loss", "mse", "--gan-weight", "0", "--kimg",
                "0.004", "--batch-size", "4", "--out", tmp_path / "run", "--no-progress")
        return use_everywhere(tmp_path / "run", tmp_path, "one-step", generates=True, cold=False)
    flags, generates = KINDS[name]
    kind = name.split("-")[0]
    kakusan("train", "--process", kind, "--data", "mnist", *flags, *TINY, "--out", tmp_path / "run")
    use_everywhere(tmp_path / "run", tmp_path, kind, generates, cold=kind not in ("edm", "ddpm"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every chain, two at a time (one thread each: the start-up of a process is what takes the time)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name):
        try:
            chain(name, tmp_path_factory.mktemp(name))
        except BaseException as e:  # noqa: BLE001 - reported by the test of that kind
            return e
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(NAMES, pool.map(run, NAMES)))


NAMES = [*KINDS, "one-step"]


@pytest.mark.parametrize("name", NAMES)
def test_each_kind_of_model_trains_and_is_used_from_fresh_processes(name, outcomes):
    if outcomes[name] is not None:
        raise outcomes[name]
