"""Training configurations: what every run of the generic loop has (:class:`LoopConfig`), and the denoiser training
of the core and of cold diffusion (:class:`TrainConfig`). Stored as ``train_config.json`` in the run folder."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .. import KakusanError
from ..cold import DEGRADATIONS, check_options
from ..diffusion.schedules import BETA_SCHEDULES
from ..nets import COND_TYPES, check_preset, check_time_conditioning
from .ema import MAX_SIGMA_REL

PROCESS_NAMES = ("edm", "ddpm", *DEGRADATIONS)
# Pixel-space training beyond this is out of any budget this project targets (and a typo like 10000 would otherwise
# ask the allocator for terabytes).
MAX_IMAGE_SIZE = 1024
# Only the training length may change when a run is resumed: anything else would make it a different run.
RESUMABLE_CHANGES = ("kimg", "minutes")


def _positive(v: float) -> bool:
    """v > 0 and finite (nan and inf are refused too)."""
    return math.isfinite(v) and v > 0


@dataclass
class LoopConfig:
    """Bookkeeping and optimisation shared by every objective."""

    batch_size: int = 64  # global batch, split across processes
    kimg: float = 50.0  # training length in thousands of images
    minutes: float | None = None  # optional wall-clock budget; stops (and saves) when reached
    lr: float = 5e-4
    warmup_kimg: float = 2.0
    lr_decay_kimg: float | None = None  # inverse-sqrt decay after this many kimg (EDM2 eq. 16); None: constant
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)  # EDM2 (Karras et al. 2024, Table 1) uses beta_2 = 0.99
    grad_clip: float = 1.0
    ema_stds: list[float] = field(default_factory=lambda: [0.05, 0.10])
    seed: int = 0
    checkpoint_kimg: float = 5.0
    sample_kimg: float = 10.0
    log_kimg: float = 0.5
    snapshot_kimg: list[float] = field(default_factory=list)
    snapshot_every_kimg: float = 0.0  # periodic snapshots (post-hoc EMA reads them; 0: none), and one at the end
    sample_grid: int = 64  # images in each periodic grid
    log_with: str | None = None  # an accelerate tracker ("tensorboard", ...) besides metrics.jsonl

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
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    @classmethod
    def resumed(cls, stored: dict, changes: dict):
        """The stored config of a run with ``changes``, which may touch only the training length."""
        changed = sorted(k for k in changes if k not in RESUMABLE_CHANGES)
        if changed:
            raise KakusanError(f"a resumed run may change only {' and '.join(RESUMABLE_CHANGES)} (got {changed})")
        return cls.from_dict({**stored, "minutes": None, **changes})


@dataclass
class TrainConfig(LoopConfig):
    """A denoiser: data, network, forward process (Gaussian or a cold degradation), loss, speed options."""

    # data
    data: str = "mnist"
    image_size: int = 32
    channels: int | None = None  # None: the data set's own
    # model
    preset: str = "s"
    time_conditioning: str = "add"  # add | scale-shift (ADM's AdaGN): how time and class enter the residual blocks
    process: str = "edm"  # edm | ddpm | a cold degradation (blur, pixelate, mask, desaturate, snow, mix, noise)
    beta_schedule: str = "linear"  # ddpm only
    steps: int | None = None  # cold: number of degradation steps T (None: the degradation's default)
    to_mean: bool = False  # cold blur: the last step is the flat per-channel mean (generation from a flat prior)
    mix_source: str = "digits"  # cold mix: the data set mixed in
    p_mean: float = -1.2  # edm: ln(sigma) ~ N(p_mean, p_std^2) during training (Karras et al. 2022, Table 1)
    p_std: float = 1.2
    loss: str = "auto"  # l2 | l1 | auto (l1 for cold degradations, as in the paper; l2 otherwise)
    cond: str = "auto"  # auto (class if the data has labels) | none | class | tokens
    label_dropout: float = 0.1  # probability of the null condition (classifier-free guidance)
    # speed
    precision: str = "fp32"  # fp32 | bf16
    channels_last: bool = False
    compile: bool = False

    def validate(self) -> "TrainConfig":
        super().validate()
        check_preset(self.preset)
        check_time_conditioning(self.time_conditioning)
        if self.process not in PROCESS_NAMES:
            raise KakusanError(f"unknown process {self.process!r}: choose one of {', '.join(PROCESS_NAMES)}")
        if self.process in DEGRADATIONS or self.to_mean:
            check_options(self.process, self.steps, self.to_mean)
        checks = [
            (8 <= self.image_size <= MAX_IMAGE_SIZE, f"image_size must be between 8 and {MAX_IMAGE_SIZE}"),
            (self.channels in (None, 1, 3), "channels must be 1 or 3"),
            (0 <= self.label_dropout < 1, "label_dropout must be in [0, 1)"),
            (math.isfinite(self.p_mean), "p_mean must be a finite number"),
            (self.loss in ("auto", "l1", "l2"), "loss must be auto, l1 or l2"),
            (_positive(self.p_std), "p_std must be > 0"),
            (self.precision in ("fp32", "bf16"), "precision must be fp32 or bf16"),
            (self.cond in ("auto", *COND_TYPES), f"cond must be auto, {', '.join(COND_TYPES)}"),
            (self.beta_schedule in BETA_SCHEDULES, f"beta_schedule must be {' or '.join(BETA_SCHEDULES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KakusanError(message)
        return self

    @property
    def cold(self) -> bool:
        return self.process in DEGRADATIONS
