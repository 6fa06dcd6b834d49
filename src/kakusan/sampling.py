"""Sampling a model into a folder: grid.png, images/NNNNNN.png and samples.npz (images in [-1, 1], labels, seeds) —
the task behind ``kakusan sample``, for Gaussian and cold models alike, with optional guidance."""
from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import KakusanError
from .diffusion.denoiser import Denoiser
from .diffusion.generate import generate
from .diffusion.samplers import nfe_of, steps_for_nfe
from .guidance import guide_from_spec
from .models import model_folder
from .utils import io
from .utils.dist import process_state
from .utils.images import save_grid, save_pngs



def parse_labels(model: Denoiser, labels: str | list | None, n: int) -> torch.Tensor | None:
    """Per-sample labels: None cycles through all classes; names or indices otherwise."""
    names = model.info.get("class_names", [])
    if model.cond_type == "none" or not names:
        if labels is not None:
            raise KakusanError("this model is unconditional; it takes no labels")
        return None
    if labels is None:
        return torch.arange(n) % len(names)
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = []
    for item in items:
        item = str(item).strip()
        if item in names:
            out.append(names.index(item))
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
            out.append(int(item))
        else:
            raise KakusanError(f"unknown class {item!r}; this model knows {names}")
    return torch.tensor(out)[torch.arange(n) % len(out)]


def sentence(words: str, model: Denoiser) -> torch.Tensor:
    """A token model's sentence from class names, e.g. "3 7" -> [<bos>, word(3), word(7)], padded with the null token
    to the length the model was trained with (``info["sentence_length"]``; a label's sentence otherwise)."""
    from .data.datasets import BOS_TOKEN, NULL_TOKEN, TOKENS_PER_LABEL

    if model.cond_type != "tokens":
        raise KakusanError("tokens: this model is not token-conditioned (kakusan train --cond tokens)")
    names = list(model.info.get("class_names") or [])
    ids = [BOS_TOKEN]
    for w in words.split():
        if w not in names:
            raise KakusanError(f"tokens: unknown word {w!r}; the model knows {' '.join(names)}")
        ids.append(names.index(w) + 2)
    length = int(model.info.get("sentence_length", TOKENS_PER_LABEL))
    if len(ids) > length:
        raise KakusanError(f"tokens: {words!r} has {len(ids) - 1} words; the model was trained on at most {length - 1}")
    return torch.tensor(ids + [NULL_TOKEN] * (length - len(ids)))


def parse_sentences(model: Denoiser, sentences: str, n: int) -> torch.Tensor:
    """(n, L) token ids of comma-separated sentences, e.g. "3 7,1 2 5", cycled over the n samples."""
    rows = torch.stack([sentence(s, model) for s in sentences.split(",")])
    return rows[torch.arange(n) % len(rows)]


def check_finite(images: torch.Tensor, model, seeds: list[int]) -> None:
    """Refuse samples with NaN or infinite values before they are written (damaged weights, a diverged run)."""
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise KakusanError(f"{model}: {bad} of {len(images)} samples (seeds {seeds[0]}..{seeds[-1]}) hold NaN or "
                           "infinite values (damaged or diverged weights?); they were not written")


def sampler_options(name: str, run, given: dict) -> dict:
    """The options given (not None) that sampler ``run`` takes, read from its signature; any other is an error."""
    takes = {p.name for p in inspect.signature(run).parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name not in ("noise", "progress", "callback")}
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - takes)
    if unknown:
        raise KakusanError(f"sampler {name!r} takes no {', '.join(unknown)} (it takes: {', '.join(sorted(takes))})")
    return given


MANIFEST = "sampling.json"  # the settings of a sample folder: what --resume must match
CHUNKS = "chunks"  # chunks/NNNNNN.npz: one finished chunk of images each (removed once samples.npz is assembled)
GRID_MAX = 100  # grid.png shows the first images only


def speed_up(den, compile: bool = False, channels_last: bool = False):
    """Optional inference speed-ups at a fixed shape (bench/throughput.py on this CPU, batch 64: channels-last x1.08,
    torch.compile x1.19 after a ~47 s warm-up); off by default, and part of a sample folder's settings since they may
    change the last bits of the samples."""
    if channels_last:
        den = den.to(memory_format=torch.channels_last)
    if compile:
        den.net = torch.compile(den.net, dynamic=False)
    return den


def choose_sampling(den, sampler: str | None, nfe: int | None, steps: int | None,
                    schedule: str) -> tuple[str, int, str]:
    """(sampler, nfe, schedule): what was given, the rest from the model's defaults (solver.json: e.g. dpmpp3m at
    4 NFE on its optimized grid) when no sampler is given — the stored grid only where it has one for that many
    calls —, else 35 NFE."""
    own = den.default_sampling()
    if sampler is not None:
        return sampler, nfe if nfe is not None else 35, schedule
    nfe = nfe if nfe is not None else own["nfe"]
    calls = nfe_of(own["sampler"], steps) if steps is not None else nfe
    if schedule == "auto" and (own["schedule"] != "optimized" or den.stored_grid(own["sampler"], calls) is not None):
        schedule = own["schedule"]
    return own["sampler"], nfe, schedule


def sample_to_folder(model: str | Path, out: str | Path, *, n: int = 64, sampler: str | None = None,
                     steps: int | None = None, nfe: int | None = None, schedule: str = "auto", seed: int = 0,
                     labels=None, tokens=None, ema="auto", batch_size: int = 64, progress: bool = True,
                     guide: str | Path | None = None, guidance: float = 1.0,
                     interval: tuple[float, float] | None = None,
                     guide_ema="auto", chunk: int = 1000, resume: bool = False, compile: bool = False,
                     channels_last: bool = False, **options) -> dict:
    """Sample ``model`` (optionally guided by ``guide``: a model, or ``'uncond'`` for classifier-free guidance)
    into ``out``: images/NNNNNN.png (one per seed), samples.npz (images in [-1, 1], seeds, labels or tokens) and
    grid.png (the first images). ``tokens``: comma-separated sentences for a token model (e.g. "3 7,1 2 5"), instead of
    labels. ``options``: sampler options (eta for ddim, churn for euler/heun, symmetry_noise for a cold model's
    alg1/alg2). Images are clamped to [-1, 1] before they are written, and refused if not finite.

    Any n streams: the seeds are cut into chunks of ``chunk``; each chunk is generated, checked and written (its PNGs,
    then chunks/NNNNNN.npz, which marks it done) before the next starts, so memory does not grow with n.
    ``resume=True`` continues a killed run in ``out`` (same settings, checked against sampling.json) with no seed
    missing or doubled. Under ``accelerate launch`` process r of P takes chunks r, r + P, ...; the main process then
    assembles samples.npz and grid.png — the same bytes as one process, since every chunk is batched the same way."""
    if n < 1 or chunk < 1 or batch_size < 1:
        raise KakusanError("n, chunk and batch_size must be >= 1")
    if seed < 0:
        raise KakusanError(f"seed must be >= 0 (got {seed})")
    if steps is not None and steps < 1:
        raise KakusanError(f"steps must be >= 1 (got {steps})")
    den = speed_up(Denoiser.from_pretrained(model_folder(model), ema=ema), compile, channels_last)
    sampler, nfe, schedule = choose_sampling(den, sampler, nfe, steps, schedule)
    options = sampler_options(sampler, den.process.sampler(sampler), options)  # fails before any work
    steps = steps if steps is not None else steps_for_nfe(sampler, nfe)
    den.sampling_grid(sampler, steps, schedule)  # fails before any work (e.g. no optimized grid for this NFE)
    if tokens is not None and labels is not None:
        raise KakusanError("give labels or tokens, not both")
    y = parse_labels(den, labels, n) if tokens is None else None
    cond = parse_sentences(den, tokens, n) if tokens is not None else den.cond_from_labels(y)
    make_denoise = guide_from_spec(den, guide, guidance, interval, guide_ema)
    seeds = list(range(seed, seed + n))
    manifest = {"model": str(model), "weights": den.info.get("weights"), "n": n, "seed": seed, "sampler": sampler,
                "steps": steps, "schedule": schedule, "labels": None if labels is None else str(labels),
                "tokens": tokens, "guide": None if guide is None else str(guide), "guidance": guidance,
                "interval": None if interval is None else list(interval), "guide_ema": str(guide_ema),
                "options": options, "batch_size": batch_size, "chunk": chunk,
                **({"speed": {"compile": compile, "channels_last": channels_last}} if compile or channels_last else {})}
    state = process_state()
    out, fresh = _start_folder(Path(out), manifest, resume, state)
    bounds = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    todo = [i for i in range(state.process_index, len(bounds), state.num_processes) if not _done(out, i)]
    show = progress and state.is_main_process
    t0, made = time.time(), 0
    try:
        for i in tqdm(todo, desc="sampling", unit="chunk", disable=not show or len(todo) < 2, dynamic_ncols=True):
            a, b = bounds[i]
            images = generate(den, seeds[a:b], cond=None if cond is None else cond[a:b], sampler=sampler,
                              steps=steps, schedule=schedule, batch_size=batch_size, progress=show and len(todo) < 2,
                              make_denoise=make_denoise, **options)
            check_finite(images, model, seeds[a:b])
            images = images.clamp(-1, 1)
            save_pngs(images, out / "images", [f"{s:06d}" for s in seeds[a:b]])
            io.write_npz(out / CHUNKS / f"{i:06d}.npz", {"images": images.numpy()})  # the chunk's done-mark, last
            made += b - a
    except BaseException:
        if fresh and state.num_processes == 1 and not made:  # leave no trace of a start that made nothing
            _remove_start(out, fresh)
        raise
    seconds = time.time() - t0
    state.wait_for_everyone()
    if state.is_main_process:
        nrow = len(den.info.get("class_names", [])) if labels is None and y is not None else None
        extra = {"labels": y.numpy()} if y is not None else {}
        if tokens is not None:
            extra["tokens"] = cond.numpy()
        _assemble(out, bounds, np.array(seeds), extra, nrow)
    state.wait_for_everyone()
    grid_len = len(den.sampling_grid(sampler, steps, schedule)) - 1
    return {"out": str(out), "grid": str(out / "grid.png"), "n": n, "sampler": sampler, "steps": grid_len,
            "schedule": schedule, "sampling_note": _default_note(den, sampler, nfe_of(sampler, grid_len), schedule),
            "guide": str(guide) if guide else None, "guidance": guidance, "interval": interval,
            "nfe": nfe_of(sampler, grid_len), "weights": den.info.get("weights"), "generated_here": made,
            "processes": state.num_processes, "seconds": round(seconds, 2),
            "img_s": round(made / seconds, 2) if made and seconds > 0 else None}


def _default_note(den, sampler: str, nfe: int, schedule: str) -> str:
    """The model's note on its default sampling (e.g. how it was chosen), if that is what was used."""
    own = den.default_sampling()
    return own["note"] if (own["sampler"], own["nfe"], own["schedule"]) == (sampler, nfe, schedule) else ""


def _done(out: Path, i: int) -> bool:
    return (out / CHUNKS / f"{i:06d}.npz").is_file()


def _start_folder(out: Path, manifest: dict, resume: bool, state) -> tuple[Path, str | None]:
    """A new or empty ``out`` gets the manifest; ``resume`` needs the same manifest. Returns the folder and, for a
    fresh start, whether the folder was "new" or "empty" before (None for a resume)."""
    manifest = json.loads(json.dumps(manifest))  # tuples as lists, as read back
    if resume and (out / MANIFEST).is_file():
        stored = io.read_json(out / MANIFEST)
        changed = sorted(k for k in set(stored) | set(manifest) if stored.get(k) != manifest.get(k))
        if changed:
            raise KakusanError(f"{out} holds samples drawn with other settings ({', '.join(changed)}); resume with "
                               "the same options or choose another output folder")
        if state.is_main_process:
            io.remove_staging(out, out / "images", out / CHUNKS)
        return out, None
    fresh = "empty" if out.is_dir() else "new"
    if state.is_main_process:
        io.require_empty_output(out)
        try:
            io.write_json(manifest, out / MANIFEST)
        except BaseException:
            _remove_start(out, fresh)
            raise
    state.wait_for_everyone()
    return out, fresh


def _remove_start(out: Path, fresh: str) -> None:
    for name in (MANIFEST, "images", CHUNKS):
        p = out / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if fresh == "new" and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _assemble(out: Path, bounds: list, seeds: np.ndarray, extra: dict, nrow: int | None) -> None:
    """samples.npz streamed from the chunk files (one in memory at a time), grid.png from the first images, then the
    chunk files are removed."""
    parts = lambda: (np.load(out / CHUNKS / f"{i:06d}.npz")["images"] for i in range(len(bounds)))  # noqa: E731
    first = next(parts())
    shape = (len(seeds), *first.shape[1:])
    io.write_npz(out / "samples.npz", {"seeds": seeds, **extra}, stream=("images", shape, np.float32, parts()))
    shown = []
    for part in parts():
        shown.append(part[: GRID_MAX - sum(len(x) for x in shown)])
        if sum(len(x) for x in shown) >= min(GRID_MAX, len(seeds)):
            break
    save_grid(torch.from_numpy(np.concatenate(shown)), out / "grid.png", nrow=nrow or None)
    shutil.rmtree(out / CHUNKS, ignore_errors=True)
