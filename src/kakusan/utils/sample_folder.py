"""A sample folder, the one writer of sampled images: images/NNNNNN.png (one per seed), samples.npz (images in
[-1, 1], seeds and the per-sample arrays such as labels or tokens), grid.png (the first images) and sampling.json
(the settings, what a resume must match).

It owns every file of the folder, the resume of a killed run and the split of the work between processes; it does
not know how the images are made (a producer hands it finished batches: :class:`kakusan.sampling.SampleProducer`).
Every write goes through :mod:`kakusan.utils.io` (atomic; a full or read-only disk is one error naming the file).

The work is cut into chunks, numbered 0, 1, ...; a chunk is written as its PNGs, then chunks/NNNNNN.npz, which marks
it done. Under ``accelerate launch`` process r of P takes chunks r, r + P, ...; :meth:`SampleFolder.finish` has the
main process assemble samples.npz and grid.png from the chunk files — the same bytes as one process made.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import KakusanError
from . import io
from .dist import process_state
from .images import save_grid, save_pngs

MANIFEST = "sampling.json"  # the settings of a sample folder: what --resume must match
CHUNKS = "chunks"  # chunks/NNNNNN.npz: one finished chunk of images each (removed once samples.npz is assembled)
GRID_MAX = 100  # grid.png shows the first images only


class SampleFolder:
    """The sample folder ``out`` for ``chunks`` chunks of work described by ``manifest`` (JSON-able settings).

    A new or empty ``out`` is started with the manifest; ``resume=True`` continues the run in ``out`` if it was
    started with the same manifest (anything else is refused, nothing touched). Used as a context manager, a fresh
    start that fails before any chunk is written leaves no trace (single process)."""

    def __init__(self, out: str | Path, manifest: dict, chunks: int, *, resume: bool = False, state=None):
        self.out, self.chunks = Path(out), chunks
        self.state = state if state is not None else process_state()
        self.made = 0  # images written by this process
        self.fresh = self._start(json.loads(json.dumps(manifest)), resume)  # tuples as lists, as read back

    def todo(self) -> list[int]:
        """The chunks this process still has to write: its share (r, r + P, ...), less those done."""
        mine = range(self.state.process_index, self.chunks, self.state.num_processes)
        return [i for i in mine if not (self.out / CHUNKS / f"{i:06d}.npz").is_file()]

    def write(self, index: int, seeds: list[int], images: torch.Tensor) -> None:
        """Chunk ``index``: a PNG per seed, then its chunk file (the done-mark, last)."""
        save_pngs(images, self.out / "images", [f"{s:06d}" for s in seeds])
        io.write_npz(self.out / CHUNKS / f"{index:06d}.npz", {"images": images.numpy()})
        self.made += len(seeds)

    def finish(self, seeds, arrays: dict | None = None, nrow: int | None = None) -> None:
        """Once every process has written its chunks: samples.npz (images, ``seeds``, ``arrays`` such as labels or
        tokens) streamed from the chunk files, grid.png (``nrow`` per row) from the first images; then the chunk
        files are removed."""
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            self._assemble(np.array(seeds), arrays or {}, nrow)
        self.state.wait_for_everyone()

    def __enter__(self) -> SampleFolder:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None and self.fresh and self.state.num_processes == 1 and not self.made:
            self._remove_start()  # leave no trace of a start that made nothing

    def _start(self, manifest: dict, resume: bool) -> str | None:
        """Whether the folder was "new" or "empty" before a fresh start; None for a resume."""
        out = self.out
        if resume and (out / MANIFEST).is_file():
            stored = io.read_json(out / MANIFEST)
            changed = sorted(k for k in set(stored) | set(manifest) if stored.get(k) != manifest.get(k))
            if changed:
                raise KakusanError(f"{out} holds samples drawn with other settings ({', '.join(changed)}); resume "
                                   "with the same options or choose another output folder")
            if self.state.is_main_process:
                io.remove_staging(out, out / "images", out / CHUNKS)
            return None
        self.fresh = "empty" if out.is_dir() else "new"
        if self.state.is_main_process:
            io.require_empty_output(out)
            try:
                io.write_json(manifest, out / MANIFEST)
            except BaseException:
                self._remove_start()
                raise
        self.state.wait_for_everyone()
        return self.fresh

    def _remove_start(self) -> None:
        for name in (MANIFEST, "images", CHUNKS):
            p = self.out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self.fresh == "new" and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def _assemble(self, seeds: np.ndarray, arrays: dict, nrow: int | None) -> None:
        out = self.out
        parts = lambda: (np.load(out / CHUNKS / f"{i:06d}.npz")["images"] for i in range(self.chunks))  # noqa: E731
        first = next(parts())
        shape = (len(seeds), *first.shape[1:])
        io.write_npz(out / "samples.npz", {"seeds": seeds, **arrays}, stream=("images", shape, np.float32, parts()))
        shown = []
        for part in parts():
            shown.append(part[: GRID_MAX - sum(len(x) for x in shown)])
            if sum(len(x) for x in shown) >= min(GRID_MAX, len(seeds)):
                break
        save_grid(torch.from_numpy(np.concatenate(shown)), out / "grid.png", nrow=nrow or None)
        shutil.rmtree(out / CHUNKS, ignore_errors=True)
