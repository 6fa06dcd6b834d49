"""What every run of the generic loop has (:class:`LoopConfig`), stored as ``train_config.json`` in the run folder.
Each objective extends it with its own fields (the denoiser's :class:`~kakusan.diffusion.train_config.TrainConfig`,
the distillation's ``DistillConfig``); every field is an :func:`~kakusan.utils.options.option`, so the command line,
``--config FILE`` and the JSON all read the same fields."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import KakusanError
from ..utils.configs import from_dict
from ..utils.options import option
from ..utils.precision import PRECISIONS, resolve_precision
from .ema import MAX_SIGMA_REL

# Only the training length (and where logs go) may change when a run is resumed: anything else would make it a
# different run.
RESUMABLE_CHANGES = ("kimg", "minutes")
FREE_ON_RESUME = (*RESUMABLE_CHANGES, "log_with")
OPTIMISE, BOOKS, SPEED = "Length and optimisation", "Checkpoints, grids and logs", "Speed"


def _positive(v: float) -> bool:
    """v > 0 and finite (nan and inf are refused too)."""
    return math.isfinite(v) and v > 0


@dataclass
class LoopConfig:
    """Bookkeeping and optimisation shared by every objective."""

    batch_size: int = option(64, "Global batch size (split across processes).", panel=OPTIMISE)
    kimg: float = option(50.0, "Training length in thousands of images.", panel=OPTIMISE)
    minutes: float | None = option(None, "Wall-clock budget; stops (with its final checkpoint and grid) within it.",
                                   panel=OPTIMISE)
    lr: float = option(5e-4, "AdamW learning rate.", panel=OPTIMISE)
    warmup_kimg: float = option(2.0, "Linear warm-up length.", panel=OPTIMISE)
    lr_decay_kimg: float | None = option(None, "Inverse-sqrt decay after this many kimg (EDM2 eq. 16).",
                                         panel=OPTIMISE)
    weight_decay: float = option(0.0, "AdamW weight decay.", panel=OPTIMISE)
    adam_betas: tuple[float, float] = option((0.9, 0.99), "Adam beta_1,beta_2 (EDM2, Karras et al. 2024, Table 1).",
                                             panel=OPTIMISE)
    grad_clip: float = option(1.0, "Gradient-norm clip, 0 = off.", panel=OPTIMISE)
    ema_stds: list[float] = option(factory=lambda: [0.05, 0.10], help="EMA lengths sigma_rel, comma-separated.",
                                   flag="ema", panel=OPTIMISE)
    seed: int = option(0, "Seed for init, data order and noise.", panel=OPTIMISE)
    checkpoint_kimg: float = option(5.0, "Save the resumable checkpoint every N kimg.", panel=BOOKS)
    sample_kimg: float = option(10.0, "Write a sample grid every N kimg.", panel=BOOKS)
    log_kimg: float = option(0.5, "Log a metrics.jsonl row every N kimg.", panel=BOOKS)
    snapshot_kimg: list[float] = option(factory=list, help="Keep model snapshots at these kimg, e.g. 3.1,50.",
                                        panel=BOOKS)
    snapshot_every_kimg: float = option(0.0, "Also keep a snapshot every N kimg and at the end, for post-hoc EMA "
                                        "(`kakusan ema`); 0 = off.", panel=BOOKS)
    sample_grid: int = option(64, "Images in each periodic grid.", panel=BOOKS)
    log_with: str | None = option(None, "Also log to an accelerate tracker, e.g. tensorboard (needs that package).",
                                  panel=BOOKS)
    precision: str = option("auto", "auto (bf16 autocast where the CPU has AMX-BF16 or the GPU has bf16; fp32 "
                            "otherwise) | fp32 | bf16.", panel=SPEED)

    def __post_init__(self):
        import torch

        if self.precision == "auto":  # the run records the precision chosen for this machine
            self.precision = resolve_precision("auto", "cuda" if torch.cuda.is_available() else "cpu")

    def validate(self):
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (_positive(self.kimg), "kimg must be > 0"),
            (self.minutes is None or _positive(self.minutes), "minutes must be > 0"),
            (_positive(self.lr), "lr must be > 0"),
            (self.warmup_kimg == 0 or _positive(self.warmup_kimg), "warmup_kimg must be >= 0"),
            (self.lr_decay_kimg is None or _positive(self.lr_decay_kimg), "lr_decay_kimg must be > 0"),
            (self.weight_decay == 0 or _positive(self.weight_decay), "weight_decay must be >= 0"),
            (self.grad_clip == 0 or _positive(self.grad_clip), "grad_clip must be >= 0 (0: no clipping)"),
            (self.seed >= 0, "seed must be >= 0"),
            (all(_positive(v) for v in (self.checkpoint_kimg, self.sample_kimg, self.log_kimg)),
             "checkpoint_kimg, sample_kimg and log_kimg must be > 0"),
            (all(_positive(v) for v in self.snapshot_kimg), "snapshot_kimg must hold numbers > 0"),
            (self.snapshot_every_kimg == 0 or _positive(self.snapshot_every_kimg), "snapshot_every_kimg must be >= 0"),
            (self.sample_grid >= 1, "sample_grid must be >= 1"),
            (self.precision in PRECISIONS, f"precision must be {', '.join(PRECISIONS)}"),
            (all(0 <= b < 1 for b in self.adam_betas) and len(self.adam_betas) == 2, "adam_betas must be 2 in [0, 1)"),
            (all(0 < s < MAX_SIGMA_REL for s in self.ema_stds),
             f"EMA lengths (sigma_rel) must be in (0, {MAX_SIGMA_REL:.4f})"),
        ]
        for ok, message in checks:
            if not ok:
                raise KakusanError(message)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """The config a ``train_config.json`` (or ``--config FILE``) holds; unknown keys are an error."""
        try:
            config = from_dict(cls, dict(d))
        except ValueError as e:
            raise KakusanError(f"not a valid {cls.__name__}: {e}") from None
        config.adam_betas = tuple(config.adam_betas)
        return config

    @classmethod
    def read_resumed(cls, run_dir, given: dict):
        """The config of the run in ``run_dir`` (its ``train_config.json``) continued with the options ``given``."""
        from ..utils import io

        stored = Path(run_dir) / "train_config.json"
        if not stored.is_file():
            raise KakusanError(f"nothing to resume: {run_dir} has no train_config.json")
        return cls.resumed(io.read_json(stored), given)

    @classmethod
    def from_stored(cls, stored: dict):
        """The config of a run's ``train_config.json`` as this version reads it: a field added since takes its
        default, except ``precision`` — runs written before it was recorded ran in fp32."""
        return cls.from_dict({"precision": "fp32", **stored})

    @classmethod
    def resumed(cls, stored: dict, given: dict):
        """The stored config of a run, continued with the options ``given`` again: those equal to the run's are
        accepted (a job script reruns its line with ``--resume``); only the training length may differ."""
        old = cls.from_stored(stored).to_dict()
        new = cls.from_dict({**old, **given}).to_dict()
        differ = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                  if k not in FREE_ON_RESUME and _json(old.get(k)) != _json(new.get(k))]
        if differ:
            raise KakusanError(f"a resumed run may change only {' and '.join(RESUMABLE_CHANGES)}; these differ from "
                               f"the run's: {'; '.join(differ)}")
        return cls.from_dict({**old, "minutes": None, **given})


def _json(value):
    """A value as the run's JSON holds it (tuples as lists), for comparing a stored setting with a given one."""
    return json.loads(json.dumps(value))
