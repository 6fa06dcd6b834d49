"""Training a denoiser on the generic loop (Karras et al. 2022, "training": sigma ~ p_train, x = D(x0, sigma),
minimise lambda(sigma) ||D_theta(x; sigma, c) - x0||^2) — for the Gaussian processes and, with the L1 loss of the
paper, for the restorers of cold diffusion (Bansal et al. 2022, eq. 3).

:class:`DenoiserObjective` is the part every objective whose model is a :class:`Denoiser` shares (saving, loading,
EMA target); :class:`DiffusionObjective` adds the data, the loss and the preview; :class:`Trainer` runs it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from ..utils.dist import process_state

from .. import KakusanError
from ..data import ImageDataset, load_dataset, token_vocab_size
from ..nets import NetConfig
from ..train.loop import Objective, TrainLoop, check_run_folder
from ..utils.precision import autocast_dtype
from .denoiser import RAW, Denoiser, ema_variant, preconditioned
from .generation import generate
from .process import per_sample
from .train_config import TrainConfig


def build_model(config: TrainConfig, data: ImageDataset) -> Denoiser:
    process = config.build_process(data.images)
    cond = config.cond
    if cond == "auto":
        cond = ("none" if not process.conditional_by_default else "tokens" if data.tokens is not None
                else "class" if data.labels is not None else "none")
    if (cond == "class" and data.labels is None) or (cond == "tokens" and data.labels is None and data.tokens is None):
        raise KakusanError(f"cond {cond!r} needs labels, but data set {data.name!r} has none "
                           "(put the images in one sub-folder per class)")
    net = NetConfig(preset=config.preset, image_size=data.image_size, channels=data.channels, cond_type=cond,
                    num_classes=data.num_classes if cond == "class" else 0,
                    vocab_size=token_vocab_size(data.num_classes) if cond == "tokens" else 0,
                    time_conditioning=config.time_conditioning)
    info = {"data": data.name, "class_names": data.class_names}
    if cond == "tokens" and data.tokens is not None:
        info["sentence_length"] = int(data.tokens.shape[1])  # what `sentence` pads a user's sentence to
    return Denoiser.create(net, process, info)


def condition_of(model: Denoiser, data: ImageDataset, idx, device=None):
    """The condition of images ``idx``: their token sentences where the data set has them, else their labels'."""
    if data.tokens is not None and model.net.cond_type == "tokens":
        return data.tokens[idx].to(device)
    return model.cond_from_labels(data.labels[idx].to(device) if data.labels is not None else None)


def drop_condition(model: Denoiser, cond, p: float, generator: torch.Generator):
    """Replace the condition by the null condition with probability p (classifier-free guidance training)."""
    if cond is None or p <= 0:
        return cond
    drop = torch.rand(cond.shape[0], generator=generator, device=cond.device) < p
    return torch.where(drop.view(-1, *([1] * (cond.dim() - 1))), model.null_like(cond), cond)


class DenoiserObjective(Objective):
    """What objectives whose model is a :class:`Denoiser` share: the EMAs average its net; it is saved as a model
    folder."""

    model: Denoiser

    def model_target(self):
        return self.model.net

    def prepare(self, accel):
        self.net, self.optimizers["model"] = accel.prepare(self.model.net, self.optimizers["model"])
        self.forward = self.net

    def write_model(self, folder, ema_weights, raw=True, info=None):
        self.model.info.update(info or {})
        self.model.write_into(Path(folder), ema_weights, raw=raw)

    def read_model_weights(self, folder, which):
        folder, config = Denoiser.read_config(folder)
        variant = RAW if which == RAW else ema_variant(which)
        return self.model.read_weights(folder, variant, config["weights"]["default"])


class DiffusionObjective(DenoiserObjective):
    def __init__(self, config: TrainConfig, data: ImageDataset | None = None):
        self.config = config.validate()
        self.data = data or load_dataset(config.data, config.image_size, config.channels)
        device = process_state().device
        torch.manual_seed(config.seed)  # the initial weights
        self.model = build_model(config, self.data).to(device)
        self.l1 = (self.model.process.default_loss if config.loss == "auto" else config.loss) == "l1"
        if config.channels_last:
            self.model.net.to(memory_format=torch.channels_last)
        options = {"foreach": True} if device.type == "cpu" else {"fused": True}
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.AdamW(self.model.net.parameters(), lr=config.lr,
                                                      betas=tuple(config.adam_betas),
                                                      weight_decay=config.weight_decay, **options)}
        self.forward, self._viewer = self.model.net, None

    def prepare(self, accel):
        super().prepare(accel)
        if self.config.compile:
            self.forward = torch.compile(self.net)

    def loss(self, x0: torch.Tensor, cond, generator: torch.Generator) -> torch.Tensor:
        """The training loss (Karras et al. 2022, eq. 8) on a batch, its noise levels and noise drawn here."""
        sigma = self.model.process.sample_t(x0.shape[0], generator, x0.device)
        return self.denoising_loss(x0, self.model.process.degrade(x0, sigma, generator), sigma, cond)

    def denoising_loss(self, x0, x, sigma, cond) -> torch.Tensor:
        """The weighted error of the denoiser on degraded images x at levels sigma."""
        process = self.model.process
        D = preconditioned(process, self.forward, x, sigma, cond,
                           autocast=autocast_dtype(self.config.precision, x.device))
        error = (D - x0).abs() if self.l1 else (D - x0) ** 2
        return (per_sample(process.loss_weight(sigma), x) * error).mean()

    def train_step(self, loop):
        idx, device, generator = loop.global_batch(len(self.data)), loop.accel.device, loop.generator
        x0 = self.data.images[idx].to(device)
        if self.config.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        # the random numbers of the whole global batch, in the one-process order; then this process's share
        cond = drop_condition(self.model, condition_of(self.model, self.data, idx, device), self.config.label_dropout,
                              generator)
        sigma = self.model.process.sample_t(len(idx), generator, device)
        x = self.model.process.degrade(x0, sigma, generator)
        x0, x, sigma, cond = loop.share(x0, x, sigma, cond)
        loss = self.denoising_loss(x0, x, sigma, cond)
        grad_norm = loop.optimize("model", loss, self.net.parameters())
        return {"loss": loss.item(), "grad_norm": grad_norm}

    @torch.no_grad()
    def preview(self, ema_weights):
        if self._viewer is None:  # one sampling copy of the network, refilled with the longest EMA for each grid
            with torch.random.fork_rng():
                self._viewer = build_model(self.config, self.data).to(next(self.model.parameters()).device).eval()
        viewer = self._viewer
        viewer.net.load_state_dict(ema_weights[max(ema_weights)] if ema_weights else self.model.net.state_dict())
        n, labelled = self.config.sample_grid, self.data.labels is not None
        labels = torch.arange(n) % max(self.data.num_classes, 1) if labelled else None
        if viewer.process.generative:
            cond = (condition_of(viewer, self.data, torch.arange(min(n, len(self.data))))
                    if self.data.tokens is not None else viewer.cond_from_labels(labels))
            images = generate(viewer, range(len(cond) if cond is not None else n), cond=cond,
                              steps=self.config.preview_steps, progress=False)
        else:  # a restorer: restore held images of every class
            images = viewer.process.restoration_preview(viewer, self.data.images[::max(1, len(self.data) // n)][:n])
        return images, (max(self.data.num_classes, 8) if labelled else None)


class Trainer(TrainLoop):
    """Train a denoiser: ``Trainer(TrainConfig(...), run_dir).train()``; ``Trainer.resume(run_dir, kimg=...)``."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 trackers=None):
        check_run_folder(run_dir, resume, config.validate())  # before the data is loaded and the net built
        super().__init__(DiffusionObjective(config), config, run_dir, resume=resume, progress=progress,
                         trackers=trackers)

    @property
    def model(self) -> Denoiser:
        return self.objective.model

    @classmethod
    def resume(cls, run_dir: str | Path, progress: bool = True, **given) -> "Trainer":
        """Continue the run in ``run_dir`` exactly where it stopped. Options ``given`` again must equal the run's,
        except ``kimg`` and ``minutes``."""
        return cls(TrainConfig.read_resumed(run_dir, given), run_dir, resume=True, progress=progress)
