"""The training configuration: one dataclass, stored as ``train_config.json`` in the run folder."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import KakusanError
from ..cold import DEGRADATIONS
from ..nets import PRESETS, TIME_CONDITIONINGS

PROCESS_NAMES = ("edm", "ddpm", *DEGRADATIONS)


@dataclass
class TrainConfig:
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
    # optimisation
    batch_size: int = 64  # global batch, split across processes
    kimg: float = 50.0  # training length in thousands of images
    minutes: float | None = None  # optional wall-clock budget; stops (and saves) when reached
    lr: float = 5e-4
    warmup_kimg: float = 2.0
    lr_decay_kimg: float | None = None  # inverse-sqrt decay after this many kimg (EDM2 eq. 16); None: constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    label_dropout: float = 0.1  # probability of the null condition (classifier-free guidance)
    ema_stds: list[float] = field(default_factory=lambda: [0.05, 0.10])
    # speed
    precision: str = "fp32"  # fp32 | bf16
    channels_last: bool = False
    compile: bool = False
    # bookkeeping
    seed: int = 0
    checkpoint_kimg: float = 5.0
    sample_kimg: float = 10.0
    log_kimg: float = 0.5
    snapshot_kimg: list[float] = field(default_factory=list)
    sample_grid: int = 64  # images in each periodic grid

    def validate(self) -> "TrainConfig":
        checks = [
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.kimg > 0, "kimg must be > 0"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.label_dropout < 1, "label dropout must be in [0, 1)"),
            (self.process in PROCESS_NAMES,
             f"unknown process {self.process!r}: choose one of {', '.join(PROCESS_NAMES)}"),
            (self.loss in ("auto", "l1", "l2"), "loss must be auto, l1 or l2"),
            (self.p_std > 0, "p_std must be > 0"),
            (self.time_conditioning in TIME_CONDITIONINGS,
             f"time conditioning must be {' or '.join(TIME_CONDITIONINGS)}"),
            (self.steps is None or self.steps >= 1, "steps must be >= 1"),
            (not self.to_mean or self.process == "blur", "--to-mean applies to --process blur only"),
            (self.preset in PRESETS, f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}"),
            (self.precision in ("fp32", "bf16"), "precision must be fp32 or bf16"),
            (self.cond in ("auto", "none", "class", "tokens"), "cond must be auto, none, class or tokens"),
            (all(0 < s < 0.28 for s in self.ema_stds), "EMA lengths (sigma_rel) must be in (0, 0.28)"),
        ]
        for ok, message in checks:
            if not ok:
                raise KakusanError(message)
        return self

    @property
    def cold(self) -> bool:
        return self.process in DEGRADATIONS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
