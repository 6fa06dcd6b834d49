"""Guide search: metrics against the guidance weight w for many ways to guide one main model, each FD with a
bootstrap spread, on one or more sampler settings.

A *setting* is a guide (a model, or ``uncond`` for classifier-free guidance), the guide's EMA length, the main model's
EMA length and an optional guidance interval (Kynkäänniemi et al. 2024). Karras et al. 2024 (Sec. 5, Table 1) find
that the result depends strongly on which bad model guides: its capacity, its training length and the EMA lengths of
both models, which post-hoc EMA (``kakusan ema``) lets one choose after training. Every setting is sampled on the
same seeds and class-cycled labels, so rows differ by the guidance alone; w = 1 (no guidance) is sampled once per
main EMA and sampler setting and shared. Writes ``sweep.csv`` (one row per setting, sampler and w), ``sweep.png``,
``bootstrap.safetensors`` (every row's resampled FDs, paired across rows), ``features.safetensors`` (every row's
evaluation features, to score again against another reference: :mod:`kakusan.guidance.rescore`), ``sweep.json``
(model, n, seed, reference) and ``compare.png`` (the same seeds
unguided and at each setting's best w). Samples are made by :class:`kakusan.sampling.SampleProducer` and kept in
parts of :data:`CHUNK` images under ``partial/`` while the sweep runs, so a killed sweep resumes (``resume=True``)
where it stopped and ends exactly as an uninterrupted one. The rows and what is made of them: :mod:`.sweep_rows`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from ..data import load_dataset
from ..diffusion.denoiser import Denoiser
from ..diffusion.samplers import steps_for_nfe
from ..metrics import load_featurenet
from ..metrics.scores import extract, reference_sets, score_features
from ..sampling import SampleProducer
from ..utils import io
from .guided import guide_from_spec, load_guide, make_guided
from .sweep_rows import FIELDS, Row, plot_compare, plot_sweep, save_rows, summarize, write_csv

PREVIEW = 20  # samples per row of compare.png
CHUNK = 512  # images per stored part: a multiple of generate's batch (64), so parts never change how a batch is cut
PARTS = "partial"  # the folder of stored parts while a sweep runs


@dataclass(frozen=True)
class Setting:
    """One way to guide the main model."""

    guide: str  # a model folder / shipped name (autoguidance), or 'uncond' (classifier-free guidance)
    guide_ema: str = "auto"  # ignored for 'uncond' (the guide is the main model)
    main_ema: str = "auto"
    interval: tuple[float, float] | None = None

    def describe(self) -> str:
        parts = [self.guide if self.guide == "uncond" else f"{self.guide}@{self.guide_ema}", f"main@{self.main_ema}"]
        return " ".join(parts + ([f"interval {self.interval[0]:g}-{self.interval[1]:g}"] if self.interval else []))


def settings_product(guides: dict[str, str], guide_emas=("auto",), main_emas=("auto",),
                     intervals=(None,)) -> dict[str, Setting]:
    """{name: Setting} for every guide x guide EMA x main EMA x interval (CFG takes no guide EMA); names say which."""
    out = {}
    for name, guide in guides.items():
        for g_ema in (("auto",) if guide == "uncond" else guide_emas):
            for m_ema in main_emas:
                for iv in intervals:
                    label = name + (f" g{g_ema}" if len(guide_emas) > 1 and guide != "uncond" else "")
                    label += f" m{m_ema}" if len(main_emas) > 1 else ""
                    label += (f" [{iv[0]:g},{iv[1]:g}]" if iv else " no-interval") if len(intervals) > 1 else ""
                    out[label] = Setting(guide, str(g_ema), str(m_ema), iv)
    return out


def resolve_sampling(model: Denoiser, spec: str) -> tuple[str, int, str]:
    """'default' (the model's own sampling) or 'SAMPLER:NFE[:SCHEDULE]' -> (sampler, nfe, schedule)."""
    if spec == "default":
        own = model.default_sampling()
        return own["sampler"], own["nfe"], own["schedule"]
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise KakusanError(f"a sampler setting is 'default' or SAMPLER:NFE[:SCHEDULE], e.g. heun:35 (got {spec!r})")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else "auto"


def guidance_sweep(model, settings: dict[str, Setting], ws, out: str | Path, *, n: int = 1000,
                   samplings=("heun:35",), seed: int = 0, bootstrap: int = 100, reference: str = "split",
                   spread: str = "auto", resume: bool = False, progress: bool = True) -> dict:
    """Sample and score every setting x sampler setting x w; returns the rows (``table``: a list of :class:`Row`;
    ``rows``: their numbers by sampler and guide setting), the best w of each (setting, sampling) and the paired
    comparison. ``reference``: what the samples are scored against, ``spread``: what the bootstrap resamples
    (:func:`kakusan.metrics.scores.reference_sets`). ``resume``: continue the interrupted sweep in ``out`` (started
    with the same arguments)."""
    out = Path(out)
    if bootstrap < 2:
        raise KakusanError(f"the FD spread needs at least 2 bootstrap resamplings (got {bootstrap})")
    net = load_featurenet()
    data = load_dataset("mnist")
    ref = reference_sets(net, data.images, n, seed, reference, data.labels, spread)  # bad input: before sampling
    manifest = {"model": str(model), "settings": {k: asdict(v) for k, v in settings.items()}, "ws": list(ws), "n": n,
                "samplings": list(samplings), "seed": seed, "bootstrap": bootstrap, "reference": reference,
                "spread": spread}
    parts = open_sweep_folder(out, json.loads(json.dumps(manifest)), resume)
    models = SweepModels(model)
    first = models.main(next(iter(settings.values())).main_ema if settings else "auto")
    labels = torch.arange(n) % len(first.info.get("class_names", range(10)))
    resolved = {spec: resolve_sampling(first, spec) for spec in samplings}
    jobs = [(name, spec, w) for spec in samplings for name in settings for w in ws]
    bar = tqdm(total=len(jobs) * n, desc="guidance sweep", unit="img", disable=not progress, dynamic_ncols=True)
    rows, unguided = [], {}  # w = 1 is sampled once per (main EMA, sampler setting) and shared
    for row, (name, spec, w) in enumerate(jobs):  # the bar counts images, so its ETA holds within a long row too
        bar.set_postfix_str(f"{name} w={w:g} {spec}")
        s = settings[name]
        key = (s.main_ema, spec)
        if w == 1 and key in unguided:
            bar.update(n)
            scores = unguided[key]
        else:
            main, (sampler, nfe, schedule) = models.main(s.main_ema), resolved[spec]
            producer = SampleProducer(main, range(seed, seed + n), cond=labels, sampler=sampler,
                                      steps=steps_for_nfe(sampler, nfe), schedule=schedule,
                                      make_denoise=models.hook(main, s, w), chunk=CHUNK, name=model)
            scores = score_samples(sample_parts(producer, parts, row, bar), labels, net, ref, seed, bootstrap)
            if w == 1:
                unguided[key] = scores
        rows.append(Row(spec, name, w, **scores))
    bar.close()
    meta = {"model": str(model), "n": n, "seed": seed, "reference": reference, "bootstrap": bootstrap,
            "spread": ref["spread"], "samplings": {k: list(v) for k, v in resolved.items()}}
    write_sweep(out, rows, settings, models.weights_used(settings), meta, [str(int(c)) for c in labels[:PREVIEW]])
    shutil.rmtree(parts)
    return {**summarize(rows), "samplings": meta["samplings"], "n": n, "csv": str(out / "sweep.csv"),
            "plot": str(out / "sweep.png"), "compare": str(out / "compare.png")}


class SweepModels:
    """The main model at each EMA length and each guide at its own, each loaded once when first needed."""

    def __init__(self, model):
        self.model = model
        self.mains: dict[str, Denoiser] = {}
        self.guides: dict[tuple[str, str], Denoiser] = {}

    def main(self, ema: str) -> Denoiser:
        if ema not in self.mains:
            self.mains[ema] = Denoiser.from_pretrained(self.model, ema=ema)
        return self.mains[ema]

    def hook(self, main: Denoiser, s: Setting, w: float):
        """The guidance hook (``make_denoise``) of setting ``s`` at weight ``w``; None for w = 1."""
        if w == 1:
            return None
        if s.guide == "uncond":
            return guide_from_spec(main, "uncond", w, s.interval)
        key = (s.guide, s.guide_ema)
        if key not in self.guides:
            self.guides[key] = load_guide(main, s.guide, s.guide_ema)
        return make_guided(main, self.guides[key], w, s.interval)

    def weights_used(self, settings: dict[str, Setting]) -> dict[str, tuple[str, str]]:
        """{setting: (guide weights, main weights)} as loaded ('auto' resolved), e.g. ('0.050', '0.100')."""
        weights = lambda m: m.info["weights"].removeprefix("ema-")  # noqa: E731 ('ema-0.250' -> '0.250', 'raw')
        return {name: (weights(self.guides[(s.guide, s.guide_ema)]) if (s.guide, s.guide_ema) in self.guides
                       else s.guide_ema, weights(self.main(s.main_ema))) for name, s in settings.items()}


def sample_parts(producer: SampleProducer, parts: Path, row: int, bar) -> torch.Tensor:
    """All of ``producer``'s images, chunk by chunk, each kept as parts/rowRRRR-AAAAAAA.safetensors (A: its first
    sample): a resumed sweep reads the chunks it has and makes only the others. ``bar`` counts images."""
    images = []
    for i, (a, b) in enumerate(producer.bounds):
        file = parts / f"row{row:04d}-{a:07d}.safetensors"
        if file.exists():
            images.append(io.load_tensors(file)["images"])
            bar.update(b - a)
            continue
        images.append(producer.batch(i, on_batch=bar.update).images)
        io.save_tensors({"images": images[-1]}, file)
    return torch.cat(images)


def score_samples(images: torch.Tensor, labels: torch.Tensor, net, ref: dict, seed: int, bootstrap: int) -> dict:
    """The scores of one row's samples (the fields of :class:`Row` after its w): FD with its bootstrap, precision,
    recall, class accuracy, the floor, the features and the preview."""
    images = images.clamp(-1, 1)
    features, logits = extract(net, images)
    r = score_features(ref, features, seed, bootstrap)
    return {**{k: float(r[k]) for k in FIELDS[1:-1]}, "class_acc": float((logits.argmax(1) == labels).float().mean()),
            "floor_fd": float(r["floor"]["fd"]), "fd_boot": r["fd_boot"], "features": features,
            "preview": images[:PREVIEW]}


def write_sweep(out: Path, rows: list[Row], settings: dict[str, Setting], used: dict, meta: dict,
                col_labels: list[str]) -> None:
    """sweep.json, sweep.png, bootstrap.safetensors, features.safetensors, compare.png, then sweep.csv: last, so a
    folder with sweep.csv holds a finished sweep."""
    io.write_json(meta, out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", meta["n"], meta["reference"])
    for key, file in (("fd_boot", "bootstrap"), ("features", "features")):
        save_rows(rows, key, out / f"{file}.safetensors")
    plot_compare(rows, settings, col_labels, out / "compare.png")
    write_csv(out / "sweep.csv", settings, rows, used)


def open_sweep_folder(out: Path, manifest: dict, resume: bool) -> Path:
    """The folder of stored parts in ``out``: new (``out`` empty or absent), or the one of an interrupted sweep with
    this ``manifest`` if ``resume``; a finished sweep or another sweep's parts are never touched."""
    parts = out / PARTS
    if (out / "sweep.csv").exists():
        raise KakusanError(f"{out} already holds a finished sweep; choose another output folder (nothing was touched)")
    if parts.is_dir() and (parts / "manifest.json").exists():
        if not resume:
            raise KakusanError(f"{out} holds an interrupted sweep; --resume continues it, or choose another output "
                               "folder (nothing was touched)")
        started = io.read_json(parts / "manifest.json")
        if started != manifest:
            differ = ", ".join(k for k in manifest if started.get(k) != manifest[k])
            raise KakusanError(f"{out} holds a sweep started with other {differ}; resume it with the same arguments, "
                               "or choose another output folder (nothing was touched)")
        return parts
    io.require_empty_output(out)
    io.write_json(manifest, parts / "manifest.json")  # creates the folders
    return parts
