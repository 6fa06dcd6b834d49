"""ODE pairs (Kang et al. 2024, sec. 3.1): for each seed, the noise z the teacher's sampler started from
(x_T = sigma_max z), the condition c and the teacher's output x0 = Phi(z, c), optionally under guidance (the paper
distils CFG teachers). The one-step student learns the map z, c -> x0.

A pair set is a folder of safetensors shards (``noise``, ``labels``, ``x0``, ``seeds``) and ``manifest.json`` naming
the teacher (with a fingerprint of its weights), the sampler, its NFE, the guidance and the seeds. Shard i holds seeds
``seed + i * shard_size ...``; it is written atomically, so a killed generation resumes from the first missing shard
and never keeps a half-written one. z is the first draw of the seed's own generator, so a pair regenerates
bit-identically from its seed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from .. import KakusanError
from ..diffusion.denoiser import Denoiser
from ..diffusion.generation import generate
from ..diffusion.samplers import PerSampleNoise, nfe_of, steps_for_nfe
from ..guidance import guide_from_spec
from ..models import model_folder
from ..utils import io

MANIFEST = "manifest.json"
FORMAT = "kakusan-pairs-1"
KEYS = ("noise", "labels", "x0", "seeds")


def shard_file(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def fingerprint(model: Denoiser) -> str:
    """A short hash of the model's weights (which teacher made the pairs)."""
    h = hashlib.sha256()
    for k, v in sorted(model.net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def shard_seeds(manifest: dict, i: int) -> list[int]:
    start = manifest["seed"] + i * manifest["shard_size"]
    return list(range(start, min(start + manifest["shard_size"], manifest["seed"] + manifest["n"])))


def read_shard(folder: Path, manifest: dict, i: int) -> dict[str, torch.Tensor]:
    """Shard i, checked against the manifest (a clear error for a missing, truncated or foreign shard)."""
    path = Path(folder) / shard_file(i)
    if not path.is_file():
        raise KakusanError(f"pair set {folder} lacks {path.name}; finish it with `kakusan distill pairs` "
                           "(same options)")
    try:
        shard = io.load_tensors(path)
    except (SafetensorError, OSError) as e:
        raise KakusanError(f"{path} is damaged ({type(e).__name__}: {e}); delete it and run the pair generation again "
                           "to regenerate it") from None
    seeds = shard_seeds(manifest, i)
    if set(shard) != set(KEYS) or shard["seeds"].tolist() != seeds:
        raise KakusanError(f"{path} does not hold seeds {seeds[0]}..{seeds[-1]} of this pair set")
    if tuple(shard["x0"].shape[1:]) != tuple(manifest["image_shape"]):
        raise KakusanError(f"{path} holds images of shape {tuple(shard['x0'].shape[1:])}, the manifest says "
                           f"{tuple(manifest['image_shape'])}")
    return shard


def settings(teacher: Denoiser, teacher_name: str, *, seed: int, sampler: str, steps: int, schedule: str, guide,
             guidance: float, interval, ema, guide_ema, shard_size: int, batch_size: int) -> dict:
    grid = teacher.sampling_grid(sampler, steps, schedule)  # 'optimized': the model's stored grid
    return {"format": FORMAT, "teacher": teacher_name, "teacher_fingerprint": fingerprint(teacher), "ema": str(ema),
            "teacher_weights": teacher.info.get("weights"), "image_shape": list(teacher.image_shape),
            "cond_type": teacher.cond_type, "num_classes": teacher.num_classes, "sampler": sampler,
            "steps": len(grid) - 1, "nfe": nfe_of(sampler, len(grid) - 1), "sigma_max": float(grid[0]),
            "schedule": schedule, "grid": [round(float(s), 8) for s in grid],
            "guide": None if guide is None else str(guide), "guidance": guidance,
            "interval": list(interval) if interval else None, "guide_ema": str(guide_ema), "seed": seed,
            "shard_size": shard_size, "batch_size": batch_size,
            "labels": "seed % num_classes (class-cycled)" if teacher.num_classes else None}


def generate_pairs(teacher: str | Path, out: str | Path, *, n: int, seed: int = 0, sampler: str | None = None,
                   nfe: int | None = None, steps: int | None = None, schedule: str = "auto", guide=None,
                   guidance: float = 1.0, interval=None, ema="auto", guide_ema="auto", autoguidance: bool = False,
                   shard_size: int = 256, batch_size: int = 64, precision: str = "auto",
                   progress: bool = True) -> dict:
    """Write (or finish, or extend to ``n``) the pair set in ``out``; returns its manifest. The teacher samples as
    ``kakusan sample`` would: its own default sampling (sampler, NFE and grid, e.g. ``--schedule optimized``) unless
    told otherwise, and with ``autoguidance`` the guidance tuned for it (``guidance.json``). It runs in ``precision``
    (a set keeps what it was started with: another grid, guidance or precision is refused)."""
    from ..guidance.guided import autoguidance_options
    from ..sampling import choose_sampling

    out = Path(out)
    if n < 1 or shard_size < 1:
        raise KakusanError("n and shard_size must be >= 1")
    model = Denoiser.from_pretrained(model_folder(teacher), ema=ema)
    if not model.process.score_based:
        raise KakusanError(f"the teacher must be a diffusion model; {teacher} is a {model.process.kind} model")
    sampler, nfe, schedule = choose_sampling(model, sampler, nfe, steps, schedule)
    if autoguidance:
        g = autoguidance_options(teacher, sampler=sampler, nfe=nfe, ema=str(ema), guide_ema=str(guide_ema),
                                 guide=guide, guidance=guidance, interval=interval)
        guide, guidance, interval, guide_ema = g["guide"], g["guidance"], g["interval"], g["guide_ema"]
        if str(ema) != g["ema"]:  # the tuned main EMA
            model = Denoiser.from_pretrained(model_folder(teacher), ema=ema_arg(g["ema"]))
            ema = g["ema"]
    precision = model.set_precision(precision)
    steps = steps or steps_for_nfe(sampler, nfe)
    want = settings(model, str(teacher), seed=seed, sampler=sampler, steps=steps, schedule=schedule, guide=guide,
                    guidance=guidance, interval=interval, ema=ema, guide_ema=guide_ema, shard_size=shard_size,
                    batch_size=batch_size)
    want["precision"] = precision
    if (out / MANIFEST).is_file():
        # sets made before precision and the grid were recorded
        have = {"precision": "fp32", "schedule": "auto", "grid": want["grid"], **io.read_json(out / MANIFEST)}
        changed = sorted(k for k in want if have.get(k) != want[k])
        if changed:
            raise KakusanError(f"{out} holds pairs made with other settings ({', '.join(changed)}); choose another "
                               "output folder (nothing was touched)")
    elif out.exists() and any(out.iterdir()):
        raise KakusanError(f"{out} exists and is not a pair set; choose another output folder (nothing was touched)")
    manifest = {**want, "n": n}
    make_denoise = guide_from_spec(model, guide, guidance, interval, guide_ema)
    io.write_json(manifest, out / MANIFEST)
    shards = math.ceil(n / shard_size)
    todo = [i for i in range(shards) if not _complete(out, manifest, i)]
    bar = tqdm(total=n, initial=n - sum(len(shard_seeds(manifest, i)) for i in todo), unit="pair", desc="pairs",
               disable=not progress, dynamic_ncols=True)
    for i in todo:
        io.save_tensors(make_shard(model, manifest, i, make_denoise), out / shard_file(i))
        bar.update(len(shard_seeds(manifest, i)))
    bar.close()
    return manifest


def make_shard(model: Denoiser, manifest: dict, i: int, make_denoise) -> dict[str, torch.Tensor]:
    """The pairs of shard i: z is generate's first draw for each seed; x0 the teacher's output, in the batches of
    the manifest (so that floating-point rounding, which depends on the batch, is reproduced too)."""
    seeds = shard_seeds(manifest, i)
    labels = torch.tensor(seeds) % model.num_classes if model.num_classes else None
    noise = PerSampleNoise(seeds)(torch.empty(len(seeds), *model.image_shape))
    x0 = generate(model, seeds, cond=model.cond_from_labels(labels), sampler=manifest["sampler"],
                  steps=manifest["steps"], schedule=manifest.get("schedule", "auto"),
                  batch_size=manifest["batch_size"], progress=False,
                  make_denoise=make_denoise)
    return {"noise": noise, "x0": x0, "seeds": torch.tensor(seeds),
            "labels": labels if labels is not None else torch.full((len(seeds),), -1)}


def regenerate(folder: str | Path, seed: int) -> dict[str, torch.Tensor]:
    """The pair of ``seed`` computed again from the manifest alone (teacher, sampler, guidance, batches)."""
    manifest = io.read_json(Path(folder) / MANIFEST)
    i, offset = divmod(seed - manifest["seed"], manifest["shard_size"])
    if not 0 <= seed - manifest["seed"] < manifest["n"]:
        raise KakusanError(f"seed {seed} is not in pair set {folder}")
    model = Denoiser.from_pretrained(model_folder(manifest["teacher"]), ema=ema_arg(manifest["ema"]))
    if fingerprint(model) != manifest["teacher_fingerprint"]:
        raise KakusanError(f"the teacher {manifest['teacher']} is not the one that made {folder} (its weights differ)")
    model.set_precision(manifest.get("precision", "fp32"))
    make_denoise = guide_from_spec(model, manifest["guide"], manifest["guidance"],
                                   tuple(manifest["interval"]) if manifest["interval"] else None,
                                   ema_arg(manifest["guide_ema"]))
    shard = make_shard(model, manifest, i, make_denoise)
    return {k: v[offset] for k, v in shard.items()}


def ema_arg(text: str):
    """An EMA option as stored in a manifest ("0.1", "auto", "raw") back to its value."""
    try:
        return float(text)
    except ValueError:
        return text


def _complete(folder: Path, manifest: dict, i: int) -> bool:
    try:
        read_shard(folder, manifest, i)
        return True
    except KakusanError:
        return False


@dataclass
class PairSet:
    manifest: dict
    noise: torch.Tensor  # (N, C, H, W) unit Gaussian z; the sampler started from sigma_max z
    labels: torch.Tensor | None  # (N,)
    x0: torch.Tensor  # (N, C, H, W) the teacher's outputs
    seeds: torch.Tensor

    def __len__(self) -> int:
        return len(self.seeds)


def load_pairs(folder: str | Path) -> PairSet:
    """Every shard of a finished pair set, checked."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise KakusanError(f"{folder} is not a pair set (no {MANIFEST}); make one with `kakusan distill pairs`")
    manifest = io.read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise KakusanError(f"{folder}: unknown pair-set format {manifest.get('format')!r}")
    shards = [read_shard(folder, manifest, i) for i in range(math.ceil(manifest["n"] / manifest["shard_size"]))]
    cat = {k: torch.cat([s[k] for s in shards]) for k in KEYS}
    labels = cat["labels"] if manifest["num_classes"] else None
    return PairSet(manifest, cat["noise"], labels, cat["x0"], cat["seeds"])
