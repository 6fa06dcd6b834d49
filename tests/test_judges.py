"""The judge panel: shipped judges of different kinds that see different things, floors at the samples' n, paired
comparisons and the panel's verdict, and the commands a user runs (in a fresh process)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kakusan import KakusanError
from kakusan.data import load_dataset, mnist_split
from kakusan.metrics import PANEL, compare_sets, load_judge, load_panel, panel_scores, verdict
from kakusan.metrics.panel import canonical_correlations
from kakusan.metrics.scores import extract
from kakusan.utils import io


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def split(mnist):
    """(reference images, their labels, held-out images with classes cycled 0-9 as samples are drawn, their labels):
    the data set is sorted by class, so no slice of it is a sample of digits, and a random draw's class imbalance
    alone lifts a classifier judge's FD several times over its floor at n = 200."""
    train, held = mnist_split(5)
    held = held.reshape(10, -1).T.flatten()  # 100 per class, sorted by class -> cycled
    return mnist.images[train], mnist.labels[train], mnist.images[held], mnist.labels[held]


@pytest.fixture(scope="module")
def panel():
    return load_panel()


def test_the_panel_ships_judges_of_every_kind_each_with_a_card(panel):
    assert [j.name for j in panel] == list(PANEL)
    assert {j.kind for j in panel} == {"classifier", "autoencoder", "random", "pixels"}
    assert sum(j.kind == "classifier" for j in panel) >= 2
    for j in panel:
        assert j.card["about"] and j.card["features"] == extract(j.net, torch.zeros(2, 1, 32, 32))[0].shape[1]
        if j.kind == "classifier":
            assert j.card["held_out_accuracy"] > 0.95 and "split" in j.card
        if j.kind == "autoencoder":
            assert j.card["held_out_reconstruction_mse"] < 0.1
    splits = {j.card["split"] for j in panel if "split" in j.card}
    assert len(splits) == sum("split" in j.card for j in panel)  # every trained judge has a split of its own


@pytest.mark.slow
def test_no_judge_is_a_linear_map_of_another(panel, mnist):
    """Mean canonical correlation of two judges' features on 2,000 real digits: below 0.99 for every pair, and 1 for
    a judge that is a linear map of another (the test's own positive control)."""
    x = mnist.images[:2000]
    feats = {j.name: extract(j.net, x)[0] for j in panel}
    mixed = feats["featurenet-mnist"] @ torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    assert canonical_correlations(feats["featurenet-mnist"], mixed).mean() > 0.999
    names = list(feats)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert canonical_correlations(feats[a], feats[b]).mean() < 0.99, (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("n", [200, 400])
def test_each_judge_floor_is_at_the_samples_n(panel, split, n):
    real, real_labels, held, labels = split
    rows = panel_scores(panel, held, real, labels, n=n, reference="split", bootstrap=5, real_labels=real_labels)
    assert [r["judge"] for r in rows] == list(PANEL)
    for r in rows:
        assert r["n"] == n and r["floor_n"] == n and r["fd_over_floor"] == pytest.approx(r["fd"] / r["floor_fd"])
    # held-out real digits score like the floor (same n): within a factor 2.5 under every judge
    assert all(0.4 < r["fd_over_floor"] < 2.5 for r in rows), [(r["judge"], r["fd_over_floor"]) for r in rows]
    assert {r["judge"] for r in rows if r["class_acc"] is not None} == {"featurenet-mnist", "resnet-mnist"}
    assert all(r["class_acc"] > 0.9 for r in rows if r["class_acc"] is not None)


@pytest.mark.parametrize("z, expected", [
    ({"a": 3, "b": 1.5}, "holds"), ({"a": -2, "b": -1.1}, "reversed"), ({"a": 3, "b": 0.5}, "depends on the judge"),
    ({"a": 3, "b": -3}, "depends on the judge"), ({"a": 0.9, "b": -0.9}, "inside the spread")])
def test_verdict(z, expected):
    assert verdict(z) == expected


def test_verdict_threshold_is_in_spreads():
    assert verdict({"a": 1.5, "b": 1.5}, beyond=2) == "inside the spread" and verdict({"a": 2.1}, beyond=2) == "holds"


@pytest.mark.slow
def test_compare_real_digits_beat_blurred_ones_under_every_judge(panel, split):
    real, real_labels, held, labels = split
    held, labels = held[:500], labels[:500]
    blurred = F.avg_pool2d(held, 3, stride=1, padding=1, count_include_pad=False)
    r = compare_sets(panel, {"real": (held, labels), "blur": (blurred, labels), "same": (held, labels)}, real,
                     real_labels=real_labels, bootstrap=20)
    by = {(p["a"], p["b"]): p for p in r["pairs"]}
    assert by["real", "blur"]["verdict"] == "holds"
    assert all(row["ratio"] < 1 and row["z"] > 1 for row in by["real", "blur"]["rows"])
    assert by["blur", "same"]["verdict"] == "reversed"
    same = by["real", "same"]  # a set against itself: ratio exactly 1 with no spread — the resampling is paired
    assert same["verdict"] == "inside the spread"
    assert all(row["ratio"] == 1 and row["gap"] == 0 and row["gap_std"] == 0 for row in same["rows"])


def test_compare_refuses_sets_of_different_sizes(panel, mnist):
    with pytest.raises(KakusanError, match="same seeds"):
        compare_sets(panel[:1], {"a": (mnist.images[:50], None), "b": (mnist.images[50:110], None)}, mnist.images)


def test_an_unknown_judge_is_one_clear_error():
    with pytest.raises(KakusanError, match="unknown judge 'lenet'"):
        load_judge("lenet")


@pytest.mark.slow
def test_train_judge_writes_a_loadable_judge_with_its_card(tmp_path):
    from kakusan.metrics.judges import train_judge

    card = train_judge("autoencoder-mnist", tmp_path / "ae", epochs=1, progress=False)
    assert card["kind"] == "autoencoder" and card["split"].startswith("mnist_split(seed=3)")
    j = load_judge(tmp_path / "ae")
    assert j.name == "ae" and extract(j.net, torch.zeros(3, 1, 32, 32))[0].shape == (3, 64)
    # stored in float16 (the zoo's size budget), computed in float32
    stored = io.load_tensors(tmp_path / "ae" / card["weights"])
    assert card["weights_dtype"] == "float16" and all(t.dtype == torch.float16 for t in stored.values())
    assert all(p.dtype == torch.float32 for p in j.net.parameters())
    assert all(torch.equal(p, stored[k].float()) for k, p in j.net.state_dict().items())
    with pytest.raises(KakusanError, match="already holds a judge"):
        train_judge("autoencoder-mnist", tmp_path / "ae", epochs=1, progress=False)


def kakusan(*args):
    """The command as a user runs it: a fresh interpreter (nothing imported beforehand)."""
    return subprocess.run([sys.executable, "-m", "kakusan.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def sample_sets(tmp_path_factory, split):
    folder = tmp_path_factory.mktemp("sets")
    held, labels = split[2][:300].numpy(), split[3][:300].numpy()
    np.savez(folder / "real.npz", images=held, labels=labels)
    np.savez(folder / "noisy.npz", images=np.clip(held + 0.3 * np.random.default_rng(0).standard_normal(held.shape),
                                                  -1, 1).astype(np.float32), labels=labels)
    return folder


@pytest.mark.slow
def test_eval_prints_one_row_per_judge_and_judge_picks_one(sample_sets, tmp_path):
    r = kakusan("eval", sample_sets / "real.npz", "--bootstrap", "5", "--csv", tmp_path / "rows.csv")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.strip().splitlines()[-1])["rows"]
    assert [row["judge"] for row in rows] == list(PANEL)
    assert all(any(line.startswith(name) for line in r.stdout.splitlines()) for name in PANEL)
    assert len((tmp_path / "rows.csv").read_text().strip().splitlines()) == 1 + len(PANEL)
    r = kakusan("eval", sample_sets / "real.npz", "--judge", "pixels", "--bootstrap", "0")
    assert r.returncode == 0, r.stderr
    assert [row["judge"] for row in json.loads(r.stdout.strip().splitlines()[-1])["rows"]] == ["pixels"]


@pytest.mark.slow
def test_compare_command_writes_its_table_and_verdict(sample_sets, tmp_path):
    r = kakusan("compare", f"real={sample_sets / 'real.npz'}", f"noisy={sample_sets / 'noisy.npz'}",
                "--bootstrap", "10", "--out", tmp_path / "cmp")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["pairs"][0]["verdict"] == "holds" and '"real beats noisy" holds' in r.stdout
    assert len((tmp_path / "cmp" / "compare.csv").read_text().strip().splitlines()) == 1 + len(PANEL)
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["sets"]["noisy"].endswith("noisy.npz")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["eval", "SETS/real.npz", "--judge", "lenet"], "unknown judge 'lenet'"),
    (["compare", "SETS/real.npz"], "at least two sample sets"),
    (["eval", "SETS/real.npz", "--weights", "x", "--judge", "pixels", "--judge", "random-cnn"], "pick that judge"),
])
def test_bad_panel_input_is_one_line_exit_2(sample_sets, args, message):
    r = kakusan(*[a.replace("SETS", str(sample_sets)) for a in args])
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
