"""The configuration of a distillation run (Diffusion2GAN): the loop's fields with a GAN's defaults, and the losses'."""
from __future__ import annotations

from dataclasses import dataclass

from .. import KakusanError
from ..train.config import OPTIMISE, LoopConfig
from ..utils.options import option, redefault

LOSSES = ("perceptual", "mse")
REALS = ("paired", "unpaired", "data")
# --disc-scales: (the backbone's feature places that get a real/fake head, whether the input also enters every
# encoder block)
SCALES = {"one": ("last", False), "stages": ("stages", False), "paper": ("blocks", True)}
GAN = "Distillation (Diffusion2GAN)"


@dataclass
class DistillConfig(LoopConfig):
    pairs: str = option("", "Pair set from `kakusan distill pairs` (it names its teacher).", panel=GAN,
                        shown="required")
    init: str = option("", "Start the student from this student's weights (same teacher), e.g. a perceptual-only run "
                       "before adding the GAN.", panel=GAN, shown="the teacher's")
    loss: str = option("perceptual", "Reconstruction loss: perceptual (ensembled) | mse.", panel=GAN)
    l1: float = option(0.0, "Weight of an L1 term beside the perceptual loss.", panel=GAN)
    gan_weight: float = option(0.05, "Weight of the conditional GAN loss; 0 = no discriminator.", panel=GAN)
    lr_disc: float = option(2e-4, "Discriminator learning rate.", panel=GAN)
    r1_gamma: float = option(0.1, "R1 weight on real pairs, 0 = off.", panel=GAN)
    r1_every: int = option(16, "Apply R1 every N discriminator steps (lazy regularisation).", panel=GAN)
    mix_and_match: bool = option(True, "Wrong-z and wrong-c negatives for the discriminator.", panel=GAN)
    disc_z: bool = option(True, "The discriminator sees z (through a zero-initialised branch).", panel=GAN)
    disc_sigma: float = option(0.5, "The noise level at which the discriminator's UNet runs.", panel=GAN)
    disc_scales: str = option("stages", "Where D's real/fake heads read: one (the decoder's last block) | stages "
                              "(every encoder, middle and decoder stage) | paper (the multi-scale D of Diffusion2GAN: "
                              "the input resized into every encoder block, a head after every decoder residual "
                              "block).", panel=GAN)
    mix_fraction: float = option(1.0, "Fraction of the batch whose mix-and-match negatives are scored.", panel=GAN)
    disc_noise: bool = option(False, "Noise D's inputs at a sigma drawn from the teacher's training distribution, "
                              "one (sigma, noise) for the real and the fake of a pair.", panel=GAN)
    disc_frozen: bool = option(False, "Freeze D's backbone (the teacher's UNet); only the z branch and the heads "
                               "learn.", panel=GAN)
    disc_augment: bool = option(False, "Differentiable augmentation of D's inputs (translation, scale, rotation, "
                                "cutout), a fresh draw for reals and fakes.", panel=GAN)
    disc_reals: str = option("paired", "D's reals: paired (the pair's own x0) | unpaired (another pair's x0 of the "
                             "same class) | data (a real image of the class from --disc-data).", panel=GAN)
    disc_data: str = option("mnist-train", "The data set of --disc-reals data.", panel=GAN)
    r1_separate: bool = option(False, "R1 as a discriminator step of its own, not clipped with the GAN loss.",
                               panel=GAN)
    adaptive_gan_weight: bool = option(False, "Scale the GAN loss so that its gradient on the student's last layer "
                                       "is --gan-weight times the reconstruction's (VQGAN, Esser et al. 2021, eq. 7)",
                                       panel=GAN)
    holdout: int = option(0, "Pairs held out of training (the last N of the set); their reconstruction loss is "
                          "logged as heldout_recon beside g_recon.", panel=GAN)
    # the loop's defaults, changed for a distillation: a short warm-up, smaller batches and steps
    batch_size: int = redefault(LoopConfig, "batch_size", 32)
    lr: float = redefault(LoopConfig, "lr", 2e-5)
    warmup_kimg: float = redefault(LoopConfig, "warmup_kimg", 0.5)
    adam_betas: tuple[float, float] = option((0.9, 0.99), "Adam beta_1,beta_2 of both players. StyleGAN's 0,0.99 "
                                             "made the student worse on held-out pairs (docs/distill.md).",
                                             panel=OPTIMISE)
    kimg: float = redefault(LoopConfig, "kimg", 20.0)
    sample_kimg: float = redefault(LoopConfig, "sample_kimg", 2.0)
    checkpoint_kimg: float = redefault(LoopConfig, "checkpoint_kimg", 2.0)
    sample_grid: int = redefault(LoopConfig, "sample_grid", 20)

    def validate(self):
        super().validate()
        checks = [(bool(self.pairs), "pairs: the folder of a pair set is needed"),
                  (self.loss in LOSSES, f"loss must be {' or '.join(LOSSES)}"),
                  (self.gan_weight >= 0 and self.r1_gamma >= 0 and self.l1 >= 0, "weights must be >= 0"),
                  (self.r1_every >= 1, "r1_every must be >= 1"),
                  (self.holdout >= 0, "holdout must be >= 0"),
                  (0 <= self.mix_fraction <= 1, "mix_fraction must be in [0, 1]"),
                  (self.disc_reals in REALS, f"disc_reals must be {' | '.join(REALS)}"),
                  (self.disc_scales in SCALES, f"disc_scales must be {' | '.join(SCALES)}"),
                  (self.gan_weight > 0 or not self.disc_options(), f"{', '.join(self.disc_options())}: options of "
                   "the discriminator, which --gan-weight 0 does not build")]
        for ok, message in checks:
            if not ok:
                raise KakusanError(message)
        return self

    def disc_options(self) -> list[str]:
        """The discriminator's switches set away from their defaults."""
        on = [f"--{k.replace('_', '-')}" for k in ("disc_noise", "disc_frozen", "disc_augment", "r1_separate",
                                                     "adaptive_gan_weight") if getattr(self, k)]
        return (on + (["--disc-reals"] if self.disc_reals != "paired" else [])
                + (["--disc-scales"] if self.disc_scales != "stages" else []))
