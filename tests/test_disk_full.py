"""A full or read-only disk under training and sampling (issue 14, part 2): one line naming the folder, exit 2, the
last good checkpoint and every finished file intact, and the work continues once there is room again.

Where the tests may mount (root), a small tmpfs is the disk, really filled and really remounted read-only; elsewhere
those tests skip, and the simulated ones (the file system's ENOSPC raised by the writer) still run."""
import errno
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tree_bytes
from kakusan.cli import app
from kakusan.utils import io

TINY = ["--image-size", "16", "--preset", "xs", "--batch-size", "16", "--warmup-kimg", "0.016",
        "--checkpoint-kimg", "0.032", "--sample-kimg", "100", "--no-progress"]
SAMPLE = ["--nfe", "3", "--chunk", "4", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(r, *words):
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(w in lines[0] for w in words), lines[0]


@pytest.fixture
def disk(tmp_path):
    """A 64 MB tmpfs of our own, or a skip where this process may not mount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the simulated tests stand in")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk):
    """Write zeros into ``disk`` until the file system says it is full; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def remount(disk, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True, capture_output=True)


@pytest.mark.slow
def test_training_on_a_full_disk_keeps_the_last_checkpoint_and_resumes_once_there_is_room(disk):
    run = disk / "run"
    assert invoke("train", "--out", run, "--kimg", "0.032", *TINY).exit_code == 0
    kept = tree_bytes(run / "checkpoint")
    filler = fill(disk)
    r = invoke("train", "--out", run, "--resume", "--kimg", "0.064", "--no-progress")
    one_line_error(r, str(run), "the disk is full")
    assert tree_bytes(run / "checkpoint") == kept
    filler.unlink()
    assert invoke("train", "--out", run, "--resume", "--kimg", "0.064", "--no-progress").exit_code == 0
    assert io.read_json(run / "checkpoint" / "train_state.json")["images_seen"] == 64


@pytest.mark.slow
def test_a_read_only_disk_is_one_line_and_nothing_changes(disk):
    run = disk / "run"
    assert invoke("train", "--out", run, "--kimg", "0.032", *TINY).exit_code == 0
    before = tree_bytes(disk)
    remount(disk, "ro")
    try:
        one_line_error(invoke("train", "--out", run, "--resume", "--kimg", "0.064", "--no-progress"),
                       "read-only")
        one_line_error(invoke("sample", run, "--out", disk / "samples", "-n", "4", *SAMPLE), "read-only")
    finally:
        remount(disk, "rw")
    assert tree_bytes(disk) == before


def test_sampling_onto_a_full_disk_is_one_line_naming_the_folder(disk):
    filler = fill(disk)
    r = invoke("sample", "mnist-s", "--out", disk / "samples", "-n", "8", *SAMPLE)
    one_line_error(r, str(disk / "samples"), "the disk is full")
    filler.unlink()
    assert not (disk / "samples").exists()  # a start that made nothing leaves nothing


def test_a_disk_that_fills_during_sampling_keeps_the_finished_chunks_and_resume_completes(tmp_path, monkeypatch):
    write_npz, calls = io.write_npz, []

    def fills_at_the_second_chunk(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise io._error(OSError(errno.ENOSPC, "No space left on device"), path.parent, "write into")
        return write_npz(path, *a, **k)
    monkeypatch.setattr(io, "write_npz", fills_at_the_second_chunk)
    out = tmp_path / "s"
    one_line_error(invoke("sample", "mnist-s", "--out", out, "-n", "12", *SAMPLE), str(out / "chunks"), "disk is full")
    finished = tree_bytes(out)
    assert "chunks/000000.npz" in finished and len([k for k in finished if k.endswith(".png")]) >= 4
    monkeypatch.setattr(io, "write_npz", write_npz)
    assert invoke("sample", "mnist-s", "--out", out, "-n", "12", "--resume", *SAMPLE).exit_code == 0
    after = tree_bytes(out)
    # the finished images untouched (the chunk files are done-marks, folded into samples.npz at the end)
    assert [k for k in finished if after.get(k) != finished[k] and not k.startswith("chunks/")] == []
    assert invoke("sample", "mnist-s", "--out", tmp_path / "clean", "-n", "12", *SAMPLE).exit_code == 0
    assert np.array_equal(np.load(out / "samples.npz")["images"], np.load(tmp_path / "clean" / "samples.npz")["images"])


@pytest.mark.slow
def test_training_whose_checkpoint_write_fails_keeps_the_last_good_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert invoke("train", "--out", run, "--kimg", "0.032", *TINY).exit_code == 0
    kept = tree_bytes(run / "checkpoint")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io.tempfile, "mkstemp", full)  # every new file and staging folder: ENOSPC
    monkeypatch.setattr(io.tempfile, "mkdtemp", full)
    one_line_error(invoke("train", "--out", run, "--resume", "--kimg", "0.064", "--no-progress"), str(run),
                   "the disk is full")
    assert tree_bytes(run / "checkpoint") == kept


# --- every writer, on a disk with a few kilobytes left -------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Inputs of the writers, on the ordinary disk: a tiny run with snapshots, a cold restorer, a pair set."""
    root = tmp_path_factory.mktemp("made")
    assert invoke("train", "--out", root / "run", "--kimg", "0.032", "--snapshot-every-kimg", "0.016",
                  *TINY).exit_code == 0
    assert invoke("train", "--out", root / "cold", "--process", "blur", "--steps", "3", "--kimg", "0.016",
                  *TINY).exit_code == 0
    return root


def nearly_fill(disk, room=16 << 10):
    """Fill ``disk`` but ``room`` bytes: enough for folders and small JSON files, not for weights or images."""
    filler = fill(disk)
    os_size = filler.stat().st_size
    with open(filler, "r+b") as f:
        f.truncate(max(0, os_size - room))
    return filler


WRITERS = {
    # the first large write of this run is its snapshot at 16 images (the first checkpoint comes at 32)
    "snapshot": lambda m, d: ["train", "--out", d / "run", "--kimg", "0.032", "--snapshot-kimg", "0.016", *TINY],
    "samples": lambda m, d: ["sample", "mnist-s", "--out", d / "s", "-n", "8", *SAMPLE],
    "restore": lambda m, d: ["restore", m / "cold", "--out", d / "r", "-n", "4", "--no-progress"],
    "export": lambda m, d: ["export", m / "run", "--out", d / "e"],
    "posthoc-ema": lambda m, d: ["ema", m / "run", "--std", "0.08", "--out", d / "p"],
    "pairs": lambda m, d: ["distill", "pairs", "--teacher", m / "run", "-n", "8", "--nfe", "3", "--shard-size", "4",
                           "--out", d / "pairs", "--no-progress"],
    "report": lambda m, d: ["report", "mnist-s", "--out", d / "rep", "--n", "20", "--nfe", "3", "--no-progress"],
    "eval-csv": lambda m, d: ["eval", "mnist-s", "--n", "20", "--judge", "pixels", "--csv", d / "rows.csv"],
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_on_a_full_disk_is_one_line_with_exit_2(writer, made, disk):
    args = WRITERS[writer](made, disk)
    if writer == "eval-csv":
        assert invoke("sample", "mnist-s", "--out", made / "ev", "-n", "20", *SAMPLE).exit_code == 0
        args[1] = made / "ev"
    nearly_fill(disk, room=0 if writer == "eval-csv" else 16 << 10)  # a CSV of one row is smaller than 16 kB
    before = tree_bytes(made)
    r = invoke(*args)
    one_line_error(r, "the disk is full", *(["snapshots"] if writer == "snapshot" else []))
    assert tree_bytes(made) == before  # the inputs untouched
