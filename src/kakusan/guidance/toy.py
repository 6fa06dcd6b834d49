"""The 2-D toy of Karras et al. 2024 (Fig. 1): why autoguidance keeps the branches that CFG drops.

Main model: a wider MLP (:class:`kakusan.nets.MLPNet`) trained longer on class A, on the generic training loop.
Autoguidance guide: a narrower MLP trained ~1/8 as long on class A.
CFG guide: the same narrow, short training on both classes (an unconditional model). All are EDM-preconditioned
denoisers trained against the *exact* denoiser of the mixture (lower-variance than regressing x0), sampled with the
EDM Heun sampler (32 steps, sigma_max = 5) from exact draws of the data smoothed to sigma_max.

Metrics use the exact class-A density:
* outlier rate — share of samples outside the highest-density region holding 99% of the class mass
  (log p(x) below the 1% quantile of log p over exact samples);
* branch coverage — total-variation distance between the samples' distribution over the tree's branches (each sample
  assigned to its most responsible component) and the true branch weights, and the number of branches never reached.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..diffusion.denoiser import Denoiser, preconditioned
from ..diffusion.process import EDMProcess
from ..diffusion.samplers import sample_heun
from ..diffusion.schedules import karras_sigmas
from ..diffusion.training import DenoiserObjective
from ..nets import MLPConfig, MLPNet
from ..train import LoopConfig, TrainLoop
from ..train.checkpoint import has_checkpoint
from ..utils import io
from .guided import make_guided
from .tree import Tree, toy_classes


def toy_process() -> EDMProcess:
    """sigma_data = 0.5; training sigmas concentrated lower than for images (ln sigma ~ N(-2.3, 1.5^2)); the MLP takes
    c_noise = ln(sigma) / 4 as a plain input (no time-embedding scale)."""
    return EDMProcess(sigma_data=0.5, p_mean=-2.3, p_std=1.5, sigma_min=0.002, sigma_max=5.0, c_noise_scale=1.0)


class ToyObjective(DenoiserObjective):
    """Exact score matching: minimise lambda(sigma) ||D(x; sigma) - D_exact(x; sigma)||^2 on fresh draws of the
    mixture (lower variance than regressing x0)."""

    def __init__(self, tree: Tree, width: int, lr: float):
        self.tree = tree
        self.model = Denoiser(MLPNet(MLPConfig(dim=2, width=width)), toy_process(), {"data": "fractal-tree toy"})
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.AdamW(self.model.net.parameters(), lr=lr, betas=(0.9, 0.99),
                                                      weight_decay=0.0)}

    def train_step(self, loop):
        g, batch, process = loop.cpu_generator, loop.config.batch_size, self.model.process
        sigma = process.sample_t(batch, g)
        noise = torch.randn(batch, 2, generator=g, dtype=torch.float64)
        x = (self.tree.mixture.sample(batch, g) + sigma[:, None].double() * noise).float()
        target = self.tree.mixture.denoise(x, sigma)
        device = loop.accel.device
        x, sigma, target = x.to(device), sigma.to(device), target.to(device)
        D = preconditioned(process, self.forward, x, sigma)
        loss = (process.loss_weight(sigma)[:, None] * (D - target) ** 2).mean()
        loop.optimize("model", loss, self.net.parameters())
        return {"loss": loss.item()}


def train_toy(tree: Tree, width: int, iters: int, run_dir: str | Path, *, batch: int = 2048, lr: float = 5e-3,
              seed: int = 0, ema_std: float = 0.05, progress: bool = True) -> Denoiser:
    """Train one toy denoiser on the generic loop into ``run_dir`` (continued if it holds a run); returns its EMA
    model. The learning rate decays as lr / sqrt(max(it / 512, 1)) (EDM2 eq. 16)."""
    kimg = iters * batch / 1000
    config = LoopConfig(batch_size=batch, kimg=kimg, lr=lr, warmup_kimg=0, lr_decay_kimg=512 * batch / 1000,
                        grad_clip=0, ema_stds=[ema_std], seed=seed, checkpoint_kimg=kimg / 4, sample_kimg=2 * kimg,
                        log_kimg=kimg / 64)
    torch.manual_seed(seed)  # the initial weights
    objective = ToyObjective(tree, width, lr)
    TrainLoop(objective, config, run_dir, resume=has_checkpoint(Path(run_dir) / "checkpoint"),
              progress=progress).train()
    return Denoiser.from_pretrained(run_dir, ema=ema_std)


@torch.no_grad()
def sample_toy(tree: Tree, denoise, n: int, seed: int, steps: int = 32, sigma_max: float = 5.0) -> torch.Tensor:
    """EDM Heun from exact draws of the class density smoothed to sigma_max."""
    g = torch.Generator().manual_seed(seed)
    x = tree.mixture.sample(n, g, sigma=sigma_max).float()
    sigmas = karras_sigmas(steps, 0.002, sigma_max)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)  # noqa: E731
    return sample_heun(denoise, x, sigmas, noise=noise)


def outlier_threshold(tree: Tree, mass: float = 0.99, n: int = 200_000, seed: int = 12345) -> float:
    """log p level whose super-level set holds ``mass`` of the class: the (1 - mass) quantile of log p(x), x ~ p."""
    x = tree.mixture.sample(n, torch.Generator().manual_seed(seed))
    logp = torch.cat([tree.mixture.log_prob(c) for c in x.split(20_000)])
    return float(torch.quantile(logp, 1 - mass))


@torch.no_grad()
def toy_metrics(tree: Tree, x: torch.Tensor, threshold: float) -> dict:
    x = x.double()
    logp = torch.cat([tree.mixture.log_prob(c) for c in x.split(8192)])
    comp = torch.cat([tree.mixture.responsibilities(c).argmax(1) for c in x.split(8192)])
    hist = torch.bincount(tree.branch[comp], minlength=tree.num_branches).double()
    return {"outlier_rate": float((logp < threshold).double().mean()),
            "coverage_tv": float(0.5 * (hist / len(x) - tree.branch_weights).abs().sum()),
            "branches_missed": int((hist == 0).sum())}


def run_toy(out: str | Path, *, ws=(1.5, 2.0, 2.5, 3.0), n: int = 16384, seed: int = 0, main_width: int = 64,
            guide_width: int = 32, main_iters: int = 4096, guide_iters: int = 512, fig_w: float = 3.0,
            tree: str = "paper", batch: int = 4096, lr: float = 1e-2, ema_std: float = 0.01,
            progress: bool = True) -> dict:
    """Train the three toy models on the ``tree`` layout (paper | kakusan, see :mod:`.tree`) with ``batch``, ``lr``
    and EMA length ``ema_std`` (all three models), sample every method at every w, write samples (samples_*.npz),
    figure (toy.png) and metrics (metrics.json, the dict returned). A run folder per model and recipe is kept under
    ``out/runs`` and reused by a rerun."""
    from .toy_plot import plot_toy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trees = toy_classes(layout=tree)
    layout, tree = tree, trees["A"]
    recipe = dict(batch=batch, lr=lr, ema_std=ema_std, progress=progress)
    default = (batch, lr, ema_std) == (2048, 5e-3, 0.05)  # the first recipe keeps its folder name
    runs = out / "runs" / (layout if default else f"{layout}-b{batch}-lr{lr:g}-ema{ema_std:g}")
    main = train_toy(tree, main_width, main_iters, runs / "main-A-wide-long", seed=seed, **recipe)
    ag_guide = train_toy(tree, guide_width, guide_iters, runs / "autoguide-A-narrow-short", seed=seed + 1, **recipe)
    cfg_guide = train_toy(trees["AB"], guide_width, guide_iters, runs / "cfg-guide-AB-narrow-short", seed=seed + 2,
                          **recipe)
    threshold = outlier_threshold(tree)
    as_fn = lambda m: (lambda x, s, c: m(x, s))  # noqa: E731
    samples = {"exact": sample_toy(tree, tree.mixture.denoise, n, seed),
               "none": sample_toy(tree, main, n, seed)}
    result = {"exact": toy_metrics(tree, samples["exact"], threshold),
              "none": toy_metrics(tree, samples["none"], threshold), "cfg": [], "autoguidance": []}
    for method, guide in (("cfg", cfg_guide), ("autoguidance", ag_guide)):
        for w in tqdm(ws, desc=method, leave=False, disable=not progress):
            x = sample_toy(tree, make_guided(as_fn(main), as_fn(guide), w)(None), n, seed)
            samples[f"{method}_w{w:g}"] = x
            result[method].append({"w": w, **toy_metrics(tree, x, threshold)})
    for name, x in samples.items():
        io.write_npz(out / f"samples_{name}.npz", {"samples": x.numpy()})
    figure = plot_toy(tree, threshold, {"ground truth (exact score)": samples["exact"],
                                        "no guidance": samples["none"],
                                        f"CFG, w={fig_w:g}": samples.get(f"cfg_w{fig_w:g}", samples["none"]),
                                        f"autoguidance, w={fig_w:g}": samples.get(f"autoguidance_w{fig_w:g}",
                                                                                  samples["none"])},
                      out / "toy.png")
    result.update({"tree": layout, "recipe": {"batch": batch, "lr": lr, "ema_std": ema_std},
                   "threshold_logp": threshold, "n": n, "figure": str(figure), "wall_s": round(time.time() - t0, 1)})
    io.write_json(result, out / "metrics.json")
    return result
