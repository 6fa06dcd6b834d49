"""Producing samples, apart from writing them: the task behind ``kakusan sample``, for Gaussian and cold models
alike, with optional guidance.

:class:`SampleProducer` turns a model, a sampler, a guidance hook and seeds into batches of finished images (one per
seed, the same image for the same seed whatever the chunk or process); :func:`plan_samples` builds one from the
user's options (labels, token sentences, guide, EMA, ...), checking them all before any work; the one writer of a
sample folder (grid.png, images/NNNNNN.png, samples.npz, sampling.json, resume, several processes) is
:class:`kakusan.utils.sample_folder.SampleFolder`, and :func:`write_samples` joins the two.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from . import KakusanError
from .data.tokens import TOKENS_PER_LABEL, parse_sentence
from .data.tokens import parse_sentences as data_sentences
from .diffusion.denoiser import Denoiser
from .diffusion.generation import generate
from .diffusion.samplers import nfe_of, steps_for_nfe
from .guidance import guide_from_spec
from .models import model_folder
from .utils.dist import process_state
from .utils.sample_folder import SampleFolder


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
    to the length the model was trained with (``info["sentence_length"]``; a label's sentence otherwise), by the
    rules of :mod:`kakusan.data.tokens`."""
    return parse_sentence(words, *_vocabulary(model))


def parse_sentences(model: Denoiser, sentences: str, n: int) -> torch.Tensor:
    """(n, L) token ids of comma-separated sentences, e.g. "3 7,1 2 5", cycled over the n samples."""
    return data_sentences(sentences, *_vocabulary(model), n)


def _vocabulary(model: Denoiser) -> tuple[list[str], int]:
    """(class names, sentence length) of a token model."""
    if model.cond_type != "tokens":
        raise KakusanError("tokens: this model is not token-conditioned (kakusan train --cond tokens)")
    return list(model.info.get("class_names") or []), int(model.info.get("sentence_length", TOKENS_PER_LABEL))


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


@dataclass(frozen=True)
class SampleBatch:
    """One chunk of finished samples."""

    index: int  # the chunk's number in its producer (0, 1, ...)
    seeds: list[int]  # one image per seed, in order
    images: torch.Tensor  # (N, C, H, W), finite, clamped to [-1, 1]


class SampleProducer:
    """Images of ``den`` for ``seeds``, chunk by chunk: the seeds are cut into chunks of ``chunk``, and each chunk is
    generated (:func:`kakusan.diffusion.generation.generate`) in batches of ``batch_size`` — a chunk's images are the
    same bytes whichever chunks are made, in which order, by which process. ``cond``: the per-seed condition (class
    labels (N,), token ids (N, L)) or None; ``make_denoise``: the guidance hook (None: unguided); ``options``: the
    sampler's own options. Samples that are not finite are refused (naming ``name``), the rest clamped to [-1, 1]."""

    def __init__(self, den, seeds: Iterable[int], *, cond: torch.Tensor | None = None, sampler: str, steps: int,
                 schedule: str = "auto", options: dict | None = None, make_denoise: Callable | None = None,
                 batch_size: int = 64, chunk: int = 1000, name: str | Path | None = None):
        self.den, self.seeds, self.cond = den, [int(s) for s in seeds], cond
        self.sampler, self.steps, self.schedule, self.options = sampler, steps, schedule, dict(options or {})
        self.make_denoise, self.batch_size, self.name = make_denoise, batch_size, name or "model"
        self.bounds = [(a, min(a + chunk, len(self.seeds))) for a in range(0, len(self.seeds), chunk)]

    def __len__(self) -> int:
        return len(self.bounds)

    def batch(self, index: int, *, progress: bool = False, on_batch: Callable | None = None) -> SampleBatch:
        """Chunk ``index``; ``on_batch(k)`` is told after each batch of k images (e.g. a progress bar's update)."""
        a, b = self.bounds[index]
        seeds = self.seeds[a:b]
        images = generate(self.den, seeds, cond=None if self.cond is None else self.cond[a:b], sampler=self.sampler,
                          steps=self.steps, schedule=self.schedule, batch_size=self.batch_size, progress=progress,
                          make_denoise=self.make_denoise, on_batch=on_batch, **self.options)
        check_finite(images, self.name, seeds)
        return SampleBatch(index, seeds, images.clamp(-1, 1))

    def batches(self, indices: Iterable[int] | None = None, *, progress: bool = False,
                on_batch: Callable | None = None) -> Iterator[SampleBatch]:
        """The chunks ``indices`` (default: all) in order; ``progress``: a bar over chunks (over batches for one)."""
        indices = list(range(len(self)) if indices is None else indices)
        one = len(indices) < 2
        for i in tqdm(indices, desc="sampling", unit="chunk", disable=not progress or one, dynamic_ncols=True):
            yield self.batch(i, progress=progress and one, on_batch=on_batch)


@dataclass
class SamplePlan:
    """A producer built from the user's options, and what a sample folder keeps beside its images."""

    producer: SampleProducer
    settings: dict  # every option that decides the samples, JSON-able (sampling.json: what a resume must match)
    arrays: dict  # per-sample arrays stored with the images: "labels" (N,) and/or "tokens" (N, L)
    nrow: int | None  # images per row of grid.png (one per class when the labels cycle through every class)
    summary: dict  # what was used: n, sampler, steps, schedule, sampling_note, guide, guidance, interval, nfe, weights


def plan_samples(model: str | Path, *, n: int = 64, sampler: str | None = None, steps: int | None = None,
                 nfe: int | None = None, schedule: str = "auto", seed: int = 0, labels=None, tokens=None,
                 ema="auto", batch_size: int = 64, guide: str | Path | None = None, guidance: float = 1.0,
                 interval: tuple[float, float] | None = None, guide_ema="auto", chunk: int = 1000,
                 compile: bool = False, channels_last: bool = False, precision: str = "auto",
                 **options) -> SamplePlan:
    """Load ``model`` and check every option before any work (the options of :func:`sample_to_folder`); seeds
    ``seed .. seed + n - 1``, labels cycled (default: every class in turn) or token sentences cycled."""
    if n < 1 or chunk < 1 or batch_size < 1:
        raise KakusanError("n, chunk and batch_size must be >= 1")
    if seed < 0:
        raise KakusanError(f"seed must be >= 0 (got {seed})")
    if steps is not None and steps < 1:
        raise KakusanError(f"steps must be >= 1 (got {steps})")
    den = speed_up(Denoiser.from_pretrained(model_folder(model), ema=ema), compile, channels_last)
    precision = den.set_precision(precision)  # the guide follows the main model's
    sampler, nfe, schedule = choose_sampling(den, sampler, nfe, steps, schedule)
    options = sampler_options(sampler, den.process.sampler(sampler), options)  # fails before any work
    steps = steps if steps is not None else steps_for_nfe(sampler, nfe)
    grid_len = len(den.sampling_grid(sampler, steps, schedule)) - 1  # fails early (e.g. no optimized grid here)
    if tokens is not None and labels is not None:
        raise KakusanError("give labels or tokens, not both")
    y = parse_labels(den, labels, n) if tokens is None else None
    cond = parse_sentences(den, tokens, n) if tokens is not None else den.cond_from_labels(y)
    make_denoise = guide_from_spec(den, guide, guidance, interval, guide_ema)
    settings = {"model": str(model), "weights": den.info.get("weights"), "n": n, "seed": seed, "sampler": sampler,
                "steps": steps, "schedule": schedule, "labels": None if labels is None else str(labels),
                "tokens": tokens, "guide": None if guide is None else str(guide), "guidance": guidance,
                "interval": None if interval is None else list(interval), "guide_ema": str(guide_ema),
                "options": options, "batch_size": batch_size, "chunk": chunk, "precision": precision,
                **({"speed": {"compile": compile, "channels_last": channels_last}} if compile or channels_last else {})}
    producer = SampleProducer(den, range(seed, seed + n), cond=cond, sampler=sampler, steps=steps, schedule=schedule,
                              options=options, make_denoise=make_denoise, batch_size=batch_size, chunk=chunk,
                              name=model)
    arrays = {**({"labels": y.numpy()} if y is not None else {}),
              **({"tokens": cond.numpy()} if tokens is not None else {})}
    nrow = len(den.info.get("class_names", [])) if labels is None and y is not None else None
    summary = {"n": n, "sampler": sampler, "steps": grid_len, "schedule": schedule,
               "sampling_note": _default_note(den, sampler, nfe_of(sampler, grid_len), schedule),
               "guide": str(guide) if guide else None, "guidance": guidance, "interval": interval,
               "nfe": nfe_of(sampler, grid_len), "weights": den.info.get("weights"), "precision": precision}
    return SamplePlan(producer, settings, arrays, nrow, summary)


def write_samples(plan: SamplePlan, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Produce ``plan``'s samples into the sample folder ``out``, chunk by chunk (memory does not grow with n);
    ``resume=True`` continues a killed run there (same settings) with no seed missing or doubled; under ``accelerate
    launch`` each process makes its share. Returns ``plan.summary`` with the folder and the speed."""
    state = process_state()
    folder = SampleFolder(out, plan.settings, len(plan.producer), resume=resume, state=state)
    t0 = time.time()
    with folder:
        for batch in plan.producer.batches(folder.todo(), progress=progress and state.is_main_process):
            folder.write(batch.index, batch.seeds, batch.images)
    seconds = time.time() - t0
    folder.finish(plan.producer.seeds, plan.arrays, plan.nrow)
    made = folder.made
    return {"out": str(folder.out), "grid": str(folder.out / "grid.png"), **plan.summary, "generated_here": made,
            "processes": state.num_processes, "seconds": round(seconds, 2),
            "img_s": round(made / seconds, 2) if made and seconds > 0 else None}


def sample_to_folder(model: str | Path, out: str | Path, *, resume: bool = False, progress: bool = True,
                     **options) -> dict:
    """Sample ``model`` (optionally guided by ``guide``: a model, or ``'uncond'`` for classifier-free guidance)
    into ``out``: images/NNNNNN.png (one per seed), samples.npz (images in [-1, 1], seeds, labels or tokens) and
    grid.png (the first images). ``options``: those of :func:`plan_samples` — n, sampler, steps, nfe, schedule, seed,
    labels, ``tokens`` (comma-separated sentences for a token model, e.g. "3 7,1 2 5", instead of labels), ema,
    batch_size, guide, guidance, interval, guide_ema, ``chunk`` (seeds per chunk written), compile, channels_last —
    and the sampler's own (eta for ddim, churn for euler/heun, symmetry_noise for a cold model's alg1/alg2)."""
    return write_samples(plan_samples(model, **options), out, resume=resume, progress=progress)


def _default_note(den, sampler: str, nfe: int, schedule: str) -> str:
    """The model's note on its default sampling (e.g. how it was chosen), if that is what was used."""
    own = den.default_sampling()
    return own["note"] if (own["sampler"], own["nfe"], own["schedule"]) == (sampler, nfe, schedule) else ""
