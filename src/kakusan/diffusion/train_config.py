"""The configuration of a denoiser's training run (the core's and cold diffusion's restorers): the loop's fields, the
data, the network, which forward process and that process's own options, the loss and the speed options.

The process's options are not fields here: each process declares them (``training_options``) and checks them
(``for_training``). ``train_config.json`` stores them under ``process_options``; on the command line they are flags
like any other (``--p-mean``, ``--steps``), and one that belongs to another process is an error naming it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import KakusanError
from ..train.config import BOOKS, SPEED, LoopConfig
from ..utils.options import cli_fields, option
from .process import PROCESSES, process_class

# Pixel-space training beyond this is out of any budget this project targets (and a typo like 10000 would otherwise
# ask the allocator for terabytes).
MAX_IMAGE_SIZE = 1024
MODEL = "Data and network"
# the flat keys of train_config.json written before each process owned its options
LEGACY_KEYS = {"p_mean": "p_mean", "p_std": "p_std", "beta_schedule": "schedule", "steps": "steps",
               "to_mean": "to_mean", "mix_source": "mix_source"}


@functools.lru_cache(maxsize=None)  # the catalogue is fixed: import and ask each class once
def trainable_processes() -> dict[str, type]:
    """{kind: class} of every process a denoiser can be trained for."""
    classes = {kind: process_class(kind) for kind in PROCESSES}
    return {kind: cls for kind, cls in classes.items() if cls.trainable}


def process_option_fields() -> dict[str, tuple[str, ...]]:
    """{option name: the processes it belongs to} over every trainable process."""
    owners: dict[str, tuple[str, ...]] = {}
    for kind, cls in trainable_processes().items():
        for name in cli_fields(cls.training_options()):
            owners[name] = (*owners.get(name, ()), kind)
    return owners


def _flag(name: str) -> str:
    """The command-line flag of a process option."""
    for cls in process_option_classes():
        fields = cli_fields(cls)
        if name in fields:
            return "--" + (fields[name][0].metadata.get("flag") or name).replace("_", "-")
    return "--" + name.replace("_", "-")


def process_option_classes() -> list[type]:
    """The option dataclasses of the trainable processes, each once (for the command line)."""
    return list(dict.fromkeys(cls.training_options() for cls in trainable_processes().values()))


@dataclass
class TrainConfig(LoopConfig):
    """A denoiser: data, network, forward process (Gaussian or a cold degradation), loss, speed options."""

    data: str = option("mnist", "mnist | digits | digit-scenes | shape-scenes | path to an image folder.", panel=MODEL)
    image_size: int = option(32, "Resize images to this square size.", panel=MODEL)
    channels: int | None = option(None, "1 (grayscale) or 3 (RGB) for image folders.", shown="the data set's",
                                  panel=MODEL)
    preset: str = option("s", "Network size: xs | s | m | l.", panel=MODEL)
    time_conditioning: str = option("add", "add | scale-shift (ADM's AdaGN): how time and class enter the residual "
                                    "blocks.", panel=MODEL)
    cond: str = option("auto", "auto (class if the data has labels) | none | class | tokens (cross-attention).",
                       panel=MODEL)
    label_dropout: float = option(0.1, "Probability of the null condition (classifier-free guidance).", panel=MODEL)
    process: str = option("edm", "edm (Karras et al. 2022) | ddpm (Ho et al. 2020) | a cold degradation: "
                          "blur | pixelate | mask | desaturate | snow | mix | noise.", panel=MODEL)
    process_options: dict = option(factory=dict, help="The process's own options (see its flags).", cli=False)
    loss: str = option("auto", "l2 | l1 | auto (l1 for cold degradations, as in the paper; l2 otherwise).",
                       panel=MODEL)
    channels_last: bool = option(False, "Channels-last memory format.", panel=SPEED)
    compile: bool = option(False, "torch.compile the network.", panel=SPEED)
    preview_steps: int = option(18, "Heun steps of the periodic sample grids (2 x steps - 1 network evaluations).",
                                panel=BOOKS)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        legacy = {LEGACY_KEYS[k]: d.pop(k) for k in list(d) if k in LEGACY_KEYS}
        if legacy:  # a run written before processes owned their options: keep the ones its process has
            own = cli_fields(process_class(d.get("process", "edm")).training_options())
            d["process_options"] = {k: v for k, v in legacy.items() if k in own} | d.get("process_options", {})
        return super().from_dict(d)

    @classmethod
    def from_options(cls, given: dict, base: dict | None = None) -> "TrainConfig":
        """A config from options by name, as the command line gives them (the process's among the rest), over
        ``base`` (a ``--config FILE``'s content); a process option of another process is an error."""
        base = cls.from_dict(base).to_dict() if base else {}
        return cls.from_dict({**base, **split_options(given, base.get("process"), base)})

    @classmethod
    def resumed(cls, stored: dict, given: dict):
        return super().resumed(stored, split_options(given, stored.get("process", "edm"), stored))

    def validate(self) -> "TrainConfig":
        from ..nets import COND_TYPES, check_preset, check_time_conditioning

        super().validate()
        check_preset(self.preset)
        check_time_conditioning(self.time_conditioning)
        kinds = trainable_processes()
        if self.process not in kinds:
            raise KakusanError(f"unknown process {self.process!r}: choose one of {', '.join(kinds)}")
        self.build_process()  # the process checks its own options
        checks = [
            (8 <= self.image_size <= MAX_IMAGE_SIZE, f"image_size must be between 8 and {MAX_IMAGE_SIZE}"),
            (self.channels in (None, 1, 3), "channels must be 1 or 3"),
            (0 <= self.label_dropout < 1, "label_dropout must be in [0, 1)"),
            (self.preview_steps >= 1, "preview_steps must be >= 1"),
            (self.loss in ("auto", "l1", "l2"), "loss must be auto, l1 or l2"),
            (self.cond in ("auto", *COND_TYPES), f"cond must be auto, {', '.join(COND_TYPES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KakusanError(message)
        return self

    def build_process(self, images=None):
        """The forward process of this run (``images``: the training data, for processes that fit a prior to it)."""
        return process_class(self.process).for_training(self.process_options, images)


def split_options(given: dict, process: str | None = None, stored: dict | None = None) -> dict:
    """Options by name -> TrainConfig fields, the process's own moved under ``process_options`` (over those of
    ``stored``); a process option that the chosen process does not have is an error naming both."""
    given = dict(given)
    process = given.get("process", process or "edm")
    kinds = trainable_processes()
    if process not in kinds:
        raise KakusanError(f"unknown process {process!r}: choose one of {', '.join(kinds)}")
    owners = process_option_fields()
    own = {k: given.pop(k) for k in list(given) if k in owners}
    wrong = [k for k in own if process not in owners[k]]
    if wrong:
        flags = ", ".join(f"{_flag(k)} (an option of {'/'.join(owners[k])})" for k in wrong)
        raise KakusanError(f"{flags}: not an option of the {process!r} process")
    if own:
        given["process_options"] = {**(stored or {}).get("process_options", {}), **own}
    return given

