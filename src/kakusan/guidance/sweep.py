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
unguided and at each setting's best w). Samples are kept in parts of :data:`CHUNK` images under ``partial/`` while
the sweep runs, so a killed sweep resumes (``resume=True``) where it stopped and ends exactly as an uninterrupted one.
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
from ..diffusion.generate import generate
from ..diffusion.samplers import steps_for_nfe
from ..metrics import load_featurenet
from ..metrics.scores import extract, reference_sets, score_features
from ..utils import io
from ..utils.images import save_grid
from .guided import guide_from_spec, load_guide, make_guided

PREVIEW = 20  # samples per row of compare.png
CHUNK = 512  # images per stored part: a multiple of generate's batch (64), so parts never change how a batch is cut
PARTS = "partial"  # the folder of stored parts while a sweep runs
FIELDS = ("w", "fd", "fd_std", "precision", "recall", "class_acc")
CSV_FIELDS = ("setting", "guide", "guide_ema", "main_ema", "interval", "sampling", *FIELDS, "floor_fd")


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
    """Sample and score every setting x sampler setting x w; returns rows, the best w of each (setting, sampling),
    and the unguided rows. ``reference``: what the samples are scored against, ``spread``: what the bootstrap
    resamples (:func:`kakusan.metrics.scores.reference_sets`). ``resume``: continue the interrupted sweep in ``out``
    (started with the same arguments)."""
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
    mains: dict[str, Denoiser] = {}
    guides: dict[tuple[str, str], Denoiser] = {}

    def main_model(ema: str) -> Denoiser:
        if ema not in mains:
            mains[ema] = Denoiser.from_pretrained(model, ema=ema)
        return mains[ema]

    first = main_model(next(iter(settings.values())).main_ema if settings else "auto")
    labels = torch.arange(n) % len(first.info.get("class_names", range(10)))
    resolved = {spec: resolve_sampling(first, spec) for spec in samplings}

    def hook(main: Denoiser, s: Setting, w: float):
        if w == 1:
            return None
        if s.guide == "uncond":
            return guide_from_spec(main, "uncond", w, s.interval)
        key = (s.guide, s.guide_ema)
        if key not in guides:
            guides[key] = load_guide(main, s.guide, s.guide_ema)
        return make_guided(main, guides[key], w, s.interval)

    jobs = [(name, spec, w) for spec in samplings for name in settings for w in ws]
    bar = tqdm(total=len(jobs) * n, desc="guidance sweep", unit="img", disable=not progress, dynamic_ncols=True)

    def sample(row: int, main: Denoiser, spec: str, make_denoise) -> torch.Tensor:  # part by part, kept on disk
        sampler, nfe, schedule = resolved[spec]
        images = []
        for a in range(0, n, CHUNK):
            b, file = min(a + CHUNK, n), parts / f"row{row:04d}-{a:07d}.safetensors"
            if file.exists():
                images.append(io.load_tensors(file)["images"])
                bar.update(b - a)
                continue
            images.append(generate(main, range(seed + a, seed + b), cond=labels[a:b], sampler=sampler,
                                   steps=steps_for_nfe(sampler, nfe), schedule=schedule, make_denoise=make_denoise,
                                   progress=False, on_batch=bar.update))
            io.save_tensors({"images": images[-1]}, file)
        return torch.cat(images)

    def score(row: int, main: Denoiser, spec: str, make_denoise) -> dict:
        images = sample(row, main, spec, make_denoise).clamp(-1, 1)
        features, logits = extract(net, images)
        r = score_features(ref, features, seed, bootstrap)
        r["class_acc"] = float((logits.argmax(1) == labels).float().mean())
        return {k: float(r[k]) for k in FIELDS[1:]} | {"floor_fd": float(r["floor"]["fd"]), "fd_boot": r["fd_boot"],
                                                       "features": features, "preview": images[:PREVIEW]}

    unguided: dict[tuple[str, str], dict] = {}
    rows: dict[str, dict[str, list]] = {}
    for row, (name, spec, w) in enumerate(jobs):  # the bar counts images, so its ETA holds within a long row too
        bar.set_postfix_str(f"{name} w={w:g} {spec}")
        s = settings[name]
        main = main_model(s.main_ema)
        if w == 1:
            key = (s.main_ema, spec)
            if key not in unguided:
                unguided[key] = score(row, main, spec, None)
            else:
                bar.update(n)  # shared: sampled once
            r = unguided[key]
        else:
            r = score(row, main, spec, hook(main, s, w))
        rows.setdefault(spec, {}).setdefault(name, []).append({"w": w, **r})
    bar.close()

    def weights(m: Denoiser) -> str:  # the weight set loaded ('auto' resolved), e.g. '0.250' or 'raw'
        return m.info["weights"].removeprefix("ema-")

    used = {name: (weights(guides[(s.guide, s.guide_ema)]) if (s.guide, s.guide_ema) in guides else s.guide_ema,
                   weights(main_model(s.main_ema))) for name, s in settings.items()}
    io.write_json({"model": str(model), "n": n, "seed": seed, "reference": reference, "bootstrap": bootstrap,
                   "spread": ref["spread"], "samplings": {k: list(v) for k, v in resolved.items()}}, out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", n, reference)
    for key, file in (("fd_boot", "bootstrap"), ("features", "features")):
        save_rows(rows, key, out / f"{file}.safetensors")
    best = best_rows(rows)
    plot_compare(rows, best, settings, [str(int(c)) for c in labels[:PREVIEW]], out / "compare.png")
    write_csv(out / "sweep.csv", settings, rows, used)  # last: a folder with sweep.csv holds a finished sweep
    shutil.rmtree(parts)
    return {"rows": rows, "best": best, "paired": paired_summary(rows, best),
            "samplings": {k: list(v) for k, v in resolved.items()}, "n": n, "csv": str(out / "sweep.csv"),
            "plot": str(out / "sweep.png"), "compare": str(out / "compare.png")}


def save_rows(rows: dict, key: str, path: Path) -> None:
    """Every row's tensor ``key`` (its bootstrap FDs or its features), named 'sampling|setting|w=W', atomically."""
    io.save_tensors({f"{spec}|{name}|w={r['w']:g}": r[key].to(torch.float32, copy=True)
                     for spec, by in rows.items() for name, rs in by.items() for r in rs}, path)


def write_table(path: Path, lines) -> None:
    """A CSV of CSV_FIELDS (``lines``: value lists in that order), written atomically."""
    io.write_csv(CSV_FIELDS, lines, path)


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
    parts.mkdir(parents=True, exist_ok=True)
    io.write_json(manifest, parts / "manifest.json")
    return parts


def plot_compare(rows: dict, best: dict, settings: dict[str, Setting], col_labels: list[str], path: Path) -> Path:
    """The first PREVIEW samples (same seeds and labels in every row) unguided (once per main EMA) and at each
    setting's best w, per sampler setting, each row labelled with its setting, w and FD."""
    images, names = [], []
    mains = {s.main_ema for s in settings.values()}
    for spec, by in rows.items():
        unguided = {settings[name].main_ema: r for name, rs in by.items() for r in rs if r["w"] == 1}
        picks = [("unguided" + (f" m{ema}" if len(mains) > 1 else ""), r) for ema, r in unguided.items()]
        picks += [(name, b) for name, b in best[spec].items() if b["w"] != 1]
        for name, r in picks:
            images.append(r["preview"])
            names.append(f"{spec} | {name}" + (f" w {r['w']:g}" if r["w"] != 1 else "") + f" | FD {r['fd']:.3f}")
    return save_grid(torch.cat(images), path, nrow=len(col_labels), row_labels=names, col_labels=col_labels)


def best_rows(rows: dict) -> dict:
    """{sampler setting: {guide setting: its row of lowest FD}}."""
    return {spec: {name: min(rs, key=lambda r: r["fd"]) for name, rs in by.items()} for spec, by in rows.items()}


def paired_summary(rows: dict, best: dict | None = None) -> dict:
    """Per sampler setting and guide setting, its best row set against (a) its own unguided row (w = 1) as a ratio
    and (b) the leader (the lowest best FD of all settings) as a gap, each with its *paired* bootstrap spread: every
    row is sampled on the same seeds and resampled on the same indices (:func:`kakusan.metrics.scores.fd_bootstrap`),
    so the spread of a ratio or gap is far below either FD's own."""
    best, out = best or best_rows(rows), {}
    for spec, by in rows.items():
        top = best[spec]
        leader = min(top, key=lambda k: top[k]["fd"])
        out[spec] = {}
        for name, b in top.items():
            entry = {"w": b["w"], "fd": b["fd"], "fd_std": b["fd_std"], "gap_to_leader": b["fd"] - top[leader]["fd"],
                     "gap_std": float((b["fd_boot"] - top[leader]["fd_boot"]).std()), "leader": leader}
            ref = next((r for r in by[name] if r["w"] == 1), None)
            if ref is not None:
                entry["ratio_to_unguided"] = b["fd"] / ref["fd"]
                entry["ratio_std"] = float((b["fd_boot"] / ref["fd_boot"]).std())
            out[spec][name] = entry
    return out


def write_csv(path: Path, settings: dict[str, Setting], rows: dict, used: dict[str, tuple[str, str]]) -> None:
    """One line per row; ``used``: {setting: (guide weights, main weights)} as loaded ('auto' resolved)."""
    lines = []
    for spec, by in rows.items():
        for name, rs in by.items():
            s, (g_ema, m_ema) = settings[name], used[name]
            iv = f"{s.interval[0]:g}-{s.interval[1]:g}" if s.interval else ""
            lines += [[name, s.guide, g_ema if s.guide != "uncond" else "", m_ema, iv, spec,
                       *(f"{r[k]:.6g}" for k in FIELDS), f"{r['floor_fd']:.6g}"] for r in rs]
    write_table(path, lines)


def plot_sweep(rows: dict, path: Path, n: int, reference: str = "split") -> Path:
    """One FD panel (log scale, bootstrap error bars, best w starred) and one class-accuracy panel per sampler
    setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(rows)
    fig, axes = plt.subplots(len(specs), 2, figsize=(12, 4 * len(specs)), dpi=100, squeeze=False)
    for (ax_fd, ax_acc), spec in zip(axes, specs):
        for name, rs in rows[spec].items():
            ws = [r["w"] for r in rs]
            line = ax_fd.errorbar(ws, [r["fd"] for r in rs], yerr=[r["fd_std"] for r in rs], marker="o", ms=3,
                                  capsize=2, label=name)
            b = min(rs, key=lambda r: r["fd"])
            ax_fd.plot([b["w"]], [b["fd"]], marker="*", ms=14, color=line[0].get_color())
            ax_acc.plot(ws, [r["class_acc"] for r in rs], marker="o", ms=3, label=name)
        floor = next(iter(rows[spec].values()))[0]["floor_fd"]
        ax_fd.axhline(floor, color="gray", ls="--", lw=1, label="real vs real")
        ax_fd.set_yscale("log")
        against = "all real images" if reference == "all" else f"{n} real images"
        ax_fd.set_title(f"FD vs w, {spec}, n={n} against {against} (bootstrap std; star: best w)", fontsize=9)
        ax_acc.set_title(f"class accuracy vs w, {spec}")
        for ax in (ax_fd, ax_acc):
            ax.set_xlabel("guidance weight w")
            ax.grid(alpha=0.3)
        ax_fd.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
