"""Training the one-step student of Diffusion2GAN (Kang et al. 2024) on the generic loop, as a two-player objective.

Student G(z, c) = D_teacher-architecture(sigma_max z; sigma_max, c), initialised from the teacher's weights, one
network evaluation per image (:class:`~kakusan.diffusion.process.OneStep`). Its loss on the ODE pairs (z, c, x0):
a reconstruction term — MSE, or the ensembled perceptual loss (sec. 3.2) — plus ``gan_weight`` times the
non-saturating loss of the conditional discriminator (sec. 3.3). ``gan_weight = 0`` trains without a discriminator.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from .. import KakusanError
from ..diffusion.denoiser import Denoiser, preconditioned
from ..diffusion.process import OneStep
from ..diffusion.samplers import nfe_of
from ..diffusion.training import DenoiserObjective
from ..models import model_folder
from ..train import TrainLoop
from ..train.loop import check_run_folder
from ..utils.precision import autocast_dtype, autocasting
from .config import DistillConfig
from .discriminator import (Discriminator, discriminator_loss, generator_gan_loss, noised, r1_penalty,
                            same_class_indices)
from .pairs import ema_arg, fingerprint, load_pairs
from .perceptual import EnsembledPerceptualLoss


HOLDOUT_EVERY = 4  # steps between two held-out losses


def gan_weight(recon: torch.Tensor, gan: torch.Tensor, last: torch.Tensor, weight: float, adaptive: bool):
    """(lambda, logs): the weight of the GAN loss in recon + lambda * gan, and the norms of both losses' gradients on
    the last layer. Fixed: lambda = ``weight``. Adaptive (VQGAN, Esser et al. 2021, eq. 7): lambda = ``weight`` *
    ||grad recon|| / ||grad gan||, so that the GAN's gradient there is ``weight`` times the reconstruction's."""
    g_recon = torch.autograd.grad(recon, last, retain_graph=True)[0].norm()
    g_gan = torch.autograd.grad(gan, last, retain_graph=True)[0].norm()
    lam = weight * (g_recon / (g_gan + 1e-8)).clamp(max=1e4).detach() if adaptive else weight
    return lam, {"grad_last_recon": g_recon.item(), "grad_last_gan": g_gan.item()}


class DistillObjective(DenoiserObjective):
    """Two players: ``model`` (the student) and ``disc`` (when ``gan_weight > 0``), one optimizer each."""

    def __init__(self, config: DistillConfig):
        self.config = config.validate()
        self.pairs = load_pairs(config.pairs)
        m = self.pairs.manifest
        teacher = Denoiser.from_pretrained(model_folder(m["teacher"]), ema=ema_arg(m["ema"]))
        if fingerprint(teacher) != m["teacher_fingerprint"]:
            raise KakusanError(f"the teacher {m['teacher']} is not the one that made the pairs in {config.pairs} "
                               "(its weights differ)")
        self.model = Denoiser(copy.deepcopy(teacher.net), OneStep(teacher.process),
                              {**teacher.info, "teacher": m["teacher"], "pairs": str(config.pairs),
                               "pair_manifest": m})
        if config.init:
            self.model.net.load_state_dict(self.initial_weights(config.init, m["teacher"]))
        if not math.isclose(self.model.process.sigma_max, m["sigma_max"], rel_tol=1e-5):  # float32 grids: 79.99998
            raise KakusanError(f"the pairs start at sigma {m['sigma_max']}, "
                               f"the student at {self.model.process.sigma_max}")
        if config.holdout >= len(self.pairs):
            raise KakusanError(f"--holdout {config.holdout} leaves no pair to train on: {config.pairs} holds "
                               f"{len(self.pairs)}")
        self.n_train = len(self.pairs) - config.holdout
        self.recon = EnsembledPerceptualLoss(l1=config.l1) if config.loss == "perceptual" else None
        betas = tuple(config.adam_betas)
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.Adam(self.model.net.parameters(), lr=config.lr, betas=betas)}
        self.disc, self.autocast = None, None  # the run's autocast dtype, set in prepare
        torch.manual_seed(config.seed)  # the discriminator's heads
        if config.gan_weight > 0:
            self.disc = Discriminator(teacher, sigma=config.disc_sigma, use_z=config.disc_z, frozen=config.disc_frozen,
                                      scales=config.disc_scales)
            self.modules["disc"] = self.disc
            self.optimizers["disc"] = torch.optim.Adam(self.disc_parameters(), lr=config.lr_disc, betas=betas)
        self.num_classes, self.teacher_process = teacher.num_classes, teacher.process
        self.real_pool = None
        if config.gan_weight > 0 and config.disc_reals == "data":
            from ..data import load_dataset

            data = load_dataset(config.disc_data, teacher.image_shape[-1], teacher.image_shape[0])
            self.real_pool = (data.images, data.labels if self.pairs.labels is not None else None)

    def disc_parameters(self) -> list:
        return [p for p in self.disc.parameters() if p.requires_grad]

    def reals(self, idx: torch.Tensor, labels, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """D's reals for the pairs ``idx``: their own x0, another training pair's x0 of the same class, or a real
        image of the class (``disc_reals``)."""
        mode = self.config.disc_reals
        if mode == "paired":
            return x0
        pool, pool_labels = (self.pairs.x0[:self.n_train], self.pairs.labels) if mode == "unpaired" else self.real_pool
        if labels is None or pool_labels is None:  # unconditional: one class
            labels, pool_labels = torch.zeros(len(idx), dtype=torch.long), torch.zeros(len(pool), dtype=torch.long)
        j = same_class_indices(labels, pool_labels[:len(pool)], generator,
                               exclude=idx.cpu() if mode == "unpaired" else None)
        return pool[j].to(x0.device)

    def initial_weights(self, init: str, teacher: str) -> dict:
        start = Denoiser.from_pretrained(model_folder(init))
        if not isinstance(start.process, OneStep) or start.info.get("teacher") != teacher:
            raise KakusanError(f"--init {init} is not a one-step student of {teacher}")
        if start.net.config.to_dict() != self.model.net.config.to_dict():
            raise KakusanError(f"--init {init} has another architecture than the teacher {teacher}")
        return start.net.state_dict()

    def prepare(self, accel):
        super().prepare(accel)
        self.autocast, self.device_type = autocast_dtype(self.config.precision, accel.device), accel.device.type
        if self.disc is not None:
            self.d_prepared, self.optimizers["disc"] = accel.prepare(self.disc, self.optimizers["disc"])

    def d_forward(self, *args, **kwargs) -> torch.Tensor:
        """D's logits, its network under the run's autocast (fp32 out)."""
        with autocasting(self.autocast, self.device_type):
            return self.d_prepared(*args, **kwargs).float()

    def student(self, z: torch.Tensor, cond) -> torch.Tensor:
        """G(z, c): the preconditioned net once at sigma_max."""
        sigma_max = self.model.process.sigma_max
        sigma = torch.full((z.shape[0],), sigma_max, device=z.device)
        return preconditioned(self.model.process, self.forward, sigma_max * z, sigma, cond,
                              autocast=self.autocast)

    def train_step(self, loop):
        cfg, device = self.config, loop.accel.device
        idx = loop.local_batch(self.n_train)
        z, x0 = self.pairs.noise[idx].to(device), self.pairs.x0[idx].to(device)
        labels = self.pairs.labels[idx].to(device) if self.pairs.labels is not None else None
        cond = self.model.cond_from_labels(labels)
        g = loop.cpu_generator
        fake = self.student(z, cond)
        logs = {}
        if self.disc is not None:
            sigma = noise = None
            if cfg.disc_noise:  # one (sigma, noise) per pair, from the teacher's training distribution
                sigma, noise = self.teacher_process.sample_t(len(idx), g), torch.randn(x0.shape, generator=g)
            D = noised(self.d_forward, sigma, noise, cfg.disc_augment, g)
            real = self.reals(idx, labels.cpu() if labels is not None else None, x0, g)
            r1_inline = cfg.r1_gamma if not cfg.r1_separate else 0.0
            d_loss, parts = discriminator_loss(D, real, fake, cond, z,
                                               mix_and_match=cfg.mix_fraction if cfg.mix_and_match else 0.0,
                                               num_classes=self.num_classes, generator=g, r1_gamma=r1_inline,
                                               r1_every=cfg.r1_every, step=loop.step)
            logs["loss_d"], logs["grad_norm_d"] = d_loss.item(), loop.optimize("disc", d_loss, self.disc_parameters())
            if cfg.r1_separate and cfg.r1_gamma > 0 and loop.step % cfg.r1_every == 0:
                r1 = r1_penalty(D, real, cond, z, cfg.r1_gamma) * cfg.r1_every
                loop.optimize("disc", r1, self.disc_parameters(), clip=False)
                parts["r1"] = r1.item()
            logs.update(parts)
        recon = self.reconstruction(fake, x0, g)
        g_loss = recon
        if self.disc is not None:
            trained = self.disc_parameters()  # D's own gradients are not wanted here (a frozen backbone stays so)
            for p in trained:
                p.requires_grad_(False)
            gan = generator_gan_loss(D, fake, cond, z)
            for p in trained:
                p.requires_grad_(True)
            weight, norms = gan_weight(recon, gan, self.last_layer, cfg.gan_weight, cfg.adaptive_gan_weight)
            g_loss = recon + weight * gan
            logs.update(g_gan=gan.item(), gan_weight=float(weight), **norms)
        logs["g_recon"], logs["loss_g"] = recon.item(), g_loss.item()
        if cfg.holdout and loop.step % HOLDOUT_EVERY == 0:
            logs["heldout_recon"] = self.heldout_loss(loop.step, len(idx))
        logs["grad_norm_g"] = loop.optimize("model", g_loss, self.model.net.parameters())
        return logs

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the student's last layer (where the two losses' gradients are compared)."""
        return [p for p in self.model.net.parameters() if p.dim() > 1][-1]

    def reconstruction(self, fake, x0, generator) -> torch.Tensor:
        if self.recon is None:
            return (fake - x0).pow(2).mean()
        with autocasting(self.autocast, fake.device.type):
            return self.recon(fake, x0, generator).float().mean()

    @torch.no_grad()
    def heldout_loss(self, step: int, batch: int) -> float:
        """The reconstruction loss on a batch of held-out pairs (rotating through them; its own random draws)."""
        start = (step // HOLDOUT_EVERY * batch) % self.config.holdout
        idx = self.n_train + (start + torch.arange(min(batch, self.config.holdout))) % self.config.holdout
        device = next(self.model.parameters()).device
        labels = self.pairs.labels[idx].to(device) if self.pairs.labels is not None else None
        fake = self.student(self.pairs.noise[idx].to(device), self.model.cond_from_labels(labels))
        return self.reconstruction(fake, self.pairs.x0[idx].to(device), torch.Generator().manual_seed(step)).item()

    @torch.no_grad()
    def preview(self, ema_weights):
        """Top row: the teacher's x0; bottom row: the student (longest EMA) from the same z and c."""
        n = min(self.config.sample_grid, len(self.pairs))
        student = copy.deepcopy(self.model).eval()
        if ema_weights:
            student.net.load_state_dict(ema_weights[max(ema_weights)])
        device = next(student.parameters()).device
        labels = self.pairs.labels[:n].to(device) if self.pairs.labels is not None else None
        z = self.pairs.noise[:n].to(device)
        sigma = student.process.sigma_max
        fake = student(sigma * z, sigma, student.cond_from_labels(labels)).clamp(-1, 1)
        m = self.pairs.manifest
        rows = [f"teacher: {m['sampler']}, {nfe_of(m['sampler'], m['steps'])} NFE, w {m['guidance']:g}",
                "student: 1 NFE (longest EMA)"]
        return torch.cat([self.pairs.x0[:n].to(device).clamp(-1, 1), fake]).cpu(), n, rows


def train_student(config: DistillConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                  trackers=None) -> dict:
    """Train (or resume) a one-step student into ``run_dir``; the run's checkpoint/model is a model folder that
    ``kakusan sample`` draws from with one network evaluation."""
    check_run_folder(run_dir, resume, config.validate())
    return TrainLoop(DistillObjective(config), config, run_dir, resume=resume, progress=progress,
                     trackers=trackers).train()


def resume_student(run_dir: str | Path, progress: bool = True, **given) -> dict:
    return train_student(DistillConfig.read_resumed(run_dir, given), run_dir, resume=True, progress=progress)
