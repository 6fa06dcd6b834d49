"""The training loop (Karras et al. 2022, Algorithm "training": sample sigma ~ p_train, x = x0 + sigma n,
minimise lambda(sigma) ||D(x; sigma, c) - x0||^2), on accelerate so the same code runs on one CPU process or under
``accelerate launch`` on many processes / GPUs.

Exact resume: the data order and all training noise are pure functions of (seed, step, process rank), so restoring
weights, EMAs, optimizer and the step counter continues bit-for-bit where training stopped.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import KakusanError
from ..cold import build_degradation, cold_preview
from ..data import ImageDataset, load_dataset, tokens_for_labels
from ..diffusion.denoiser import Denoiser, preconditioned
from ..diffusion.generate import generate
from ..diffusion.process import DDPMProcess, EDMProcess, per_sample
from ..nets import NetConfig
from ..report import plot_loss, save_grid
from ..utils import io
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .ema import PowerEMA


class TrainingDiverged(KakusanError):
    pass


def build_model(config: TrainConfig, data: ImageDataset) -> Denoiser:
    cond = config.cond
    if cond == "auto":  # cold restorers are unconditional, as in the paper
        cond = "class" if data.labels is not None and not config.cold else "none"
    if cond in ("class", "tokens") and data.labels is None:
        raise KakusanError(f"--cond {cond} needs labels, but data set {data.name!r} has none "
                           "(put the images in one sub-folder per class)")
    net = NetConfig(preset=config.preset, image_size=data.image_size, channels=data.channels, cond_type=cond,
                    num_classes=data.num_classes if cond == "class" else 0,
                    vocab_size=data.num_classes + 2 if cond == "tokens" else 0,
                    c_noise_scale={"edm": 250.0, "ddpm": 1.0}.get(config.process, 1000.0),
                    time_conditioning=config.time_conditioning)
    return Denoiser.create(net, build_process(config, data), {"data": data.name, "class_names": data.class_names})


def build_process(config: TrainConfig, data: ImageDataset):
    if config.cold:
        return build_degradation(config.process, steps=config.steps, to_mean=config.to_mean,
                                 source=config.mix_source, images=data.images)
    if config.process == "edm":
        return EDMProcess(p_mean=config.p_mean, p_std=config.p_std)
    return DDPMProcess(schedule=config.beta_schedule)


def batch_indices(seed: int, n: int, batch: int, step: int) -> torch.Tensor:
    """Indices of global batch ``step`` in an endless stream of per-epoch random permutations of range(n)."""
    start = step * batch
    out, pos = [], start
    while pos < start + batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(n - offset, start + batch - pos)
        out.append(perm[offset:offset + take])
        pos += take
    return torch.cat(out)


def condition_for(model: Denoiser, labels: torch.Tensor | None) -> torch.Tensor | None:
    cond_type = model.net_config.cond_type
    if cond_type == "class":
        return labels
    if cond_type == "tokens":
        return tokens_for_labels(labels)
    return None


def drop_condition(model: Denoiser, cond, p: float, generator: torch.Generator):
    """Replace the condition by the null condition with probability p (classifier-free guidance training)."""
    if cond is None or p <= 0:
        return cond
    drop = torch.rand(cond.shape[0], generator=generator, device=cond.device) < p
    null = model.null_cond(cond.shape[0], cond.device)
    return torch.where(drop.view(-1, *([1] * (cond.dim() - 1))), null, cond)


def lr_at(config: TrainConfig, images_seen: int) -> float:
    kimg = images_seen / 1000
    lr = config.lr * min(1.0, kimg / config.warmup_kimg) if config.warmup_kimg > 0 else config.lr
    if config.lr_decay_kimg:
        lr /= math.sqrt(max(kimg / config.lr_decay_kimg, 1.0))
    return lr


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.progress = progress
        if resume:
            if not has_checkpoint(self.run_dir / "checkpoint"):
                raise KakusanError(f"nothing to resume: {self.run_dir} has no checkpoint")
        elif (self.run_dir / "train_config.json").exists():
            raise KakusanError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                               "or choose another --out (nothing was overwritten)")
        self.config = config.validate()
        self.l1 = config.loss == "l1" or (config.loss == "auto" and config.cold)
        # Mixed precision is our own autocast (below), so one process can hold trainers of different precisions.
        self.accel = Accelerator()
        self.data = load_dataset(config.data, config.image_size, config.channels)
        torch.manual_seed(config.seed)  # the initial weights
        self.model = build_model(config, self.data).to(self.accel.device)
        if config.channels_last:
            self.model.net.to(memory_format=torch.channels_last)
        self.ema = PowerEMA(self.model.net, config.ema_stds)
        opt_kwargs = {"foreach": True} if self.accel.device.type == "cpu" else {"fused": True}
        self.optimizer = torch.optim.AdamW(self.model.net.parameters(), lr=config.lr, betas=(0.9, 0.99),
                                           weight_decay=config.weight_decay, **opt_kwargs)
        self.images_seen, self.step, self._viewer = 0, 0, None
        if resume:
            state = load_checkpoint(self.run_dir / "checkpoint", self.model, self.ema, self.optimizer)
            self.images_seen, self.step = state["images_seen"], state["step"]
        self.net, self.optimizer = self.accel.prepare(self.model.net, self.optimizer)
        self.forward = torch.compile(self.net) if config.compile else self.net
        if config.batch_size % self.accel.num_processes:
            raise KakusanError(f"batch size {config.batch_size} is not divisible by {self.accel.num_processes} processes")

    # --- one optimisation step -----------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, cond, generator: torch.Generator) -> torch.Tensor:
        process = self.model.process
        sigma = process.sample_t(x0.shape[0], generator, x0.device)
        x = process.degrade(x0, sigma, generator)
        D = preconditioned(process, self.forward, x, sigma, cond,
                           autocast=torch.bfloat16 if self.config.precision == "bf16" else None)
        error = (D - x0).abs() if self.l1 else (D - x0) ** 2
        return (per_sample(process.loss_weight(sigma), x) * error).mean()

    def train_step(self) -> tuple[float, float]:
        cfg, accel = self.config, self.accel
        idx = batch_indices(cfg.seed, len(self.data), cfg.batch_size, self.step)
        idx = idx[accel.process_index::accel.num_processes]
        x0 = self.data.images[idx].to(accel.device)
        if cfg.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        labels = self.data.labels[idx].to(accel.device) if self.data.labels is not None else None
        gen = torch.Generator(accel.device).manual_seed((cfg.seed * 7919 + self.step) * 1009 + accel.process_index)
        cond = drop_condition(self.model, condition_for(self.model, labels), cfg.label_dropout, gen)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(cfg, self.images_seen)
        loss = self.loss(x0, cond, gen)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.step} ({self.images_seen / 1000:.1f} kimg); training stopped."
                f" The last good checkpoint in {self.run_dir / 'checkpoint'} is untouched — try a lower --lr.")
        self.optimizer.zero_grad(set_to_none=True)
        accel.backward(loss)
        grad_norm = accel.clip_grad_norm_(self.net.parameters(), cfg.grad_clip) if cfg.grad_clip else torch.tensor(0.0)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(f"gradient norm became {float(grad_norm)} at step {self.step}; training stopped. "
                                   f"The last good checkpoint in {self.run_dir / 'checkpoint'} is untouched.")
        self.optimizer.step()
        self.step += 1
        self.images_seen += cfg.batch_size
        self.ema.update(self.accel.unwrap_model(self.net), self.images_seen, cfg.batch_size)
        return loss.item(), float(grad_norm.detach())

    # --- the loop ------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, accel = self.config, self.accel
        main = accel.is_main_process
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            io.write_json(cfg.to_dict(), self.run_dir / "train_config.json")
            with open(self.run_dir / "command.txt", "a") as f:
                f.write(shlex.join(["kakusan", *sys.argv[1:]]) + "\n")
        total = int(cfg.kimg * 1000)
        start_time, start_images = time.time(), self.images_seen
        every = {k: int(getattr(cfg, k) * 1000) for k in ("checkpoint_kimg", "sample_kimg", "log_kimg")}
        snapshots = sorted(int(k * 1000) for k in cfg.snapshot_kimg)
        bar = tqdm(total=total, initial=self.images_seen, unit="img", unit_scale=True, desc="training",
                   disable=not (main and self.progress), dynamic_ncols=True, smoothing=0.1)
        losses, last_log_time, stop_reason = [], time.time(), "done"
        while self.images_seen < total:
            before = self.images_seen
            loss, grad_norm = self.train_step()
            losses.append(loss)
            bar.update(self.images_seen - before)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            crossed = lambda n: n > 0 and before // n != self.images_seen // n  # noqa: E731
            if crossed(every["log_kimg"]):
                now = time.time()
                img_s = every["log_kimg"] / max(now - last_log_time, 1e-9)
                self._log({"kimg": self.images_seen / 1000, "step": self.step, "loss": sum(losses) / len(losses),
                           "grad_norm": grad_norm, "lr": lr_at(cfg, self.images_seen), "img_s": round(img_s, 2),
                           "wall_s": round(now - start_time, 1)})
                losses, last_log_time = [], now
            for snap in snapshots:
                if before < snap <= self.images_seen and main:
                    self.save_snapshot()
            out_of_time = cfg.minutes is not None and time.time() - start_time > cfg.minutes * 60
            if out_of_time:
                stop_reason = f"time budget of {cfg.minutes} min reached"
            if crossed(every["checkpoint_kimg"]) or self.images_seen >= total or out_of_time:
                self.save_checkpoint()
            if crossed(every["sample_kimg"]) or self.images_seen >= total or out_of_time:
                self.save_samples()
            if out_of_time:
                break
        bar.close()
        elapsed = time.time() - start_time
        summary = {"kimg": self.images_seen / 1000, "step": self.step, "stop": stop_reason, "wall_s": round(elapsed, 1),
                   "img_s": round((self.images_seen - start_images) / max(elapsed, 1e-9), 2)}
        if main:
            plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        return summary

    def _log(self, row: dict) -> None:
        if self.accel.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _info(self) -> dict:
        return {**self.model.info, "images_seen": self.images_seen, "train_config": self.config.to_dict()}

    def save_checkpoint(self) -> None:
        self.accel.wait_for_everyone()
        if self.accel.is_main_process:
            self.model.info = self._info()
            save_checkpoint(self.run_dir / "checkpoint", self.model, self.ema.state(), self.optimizer,
                            {"images_seen": self.images_seen, "step": self.step})

    def save_snapshot(self) -> None:
        self.model.info = self._info()
        self.model.save_pretrained(self.run_dir / "snapshots" / f"kimg-{self.images_seen / 1000:06.1f}",
                                   self.ema.state())

    @torch.no_grad()
    def save_samples(self) -> None:
        if not self.accel.is_main_process:
            return
        if self._viewer is None:  # one sampling copy of the network, refilled with the longest EMA for each grid
            with torch.random.fork_rng():
                self._viewer = build_model(self.config, self.data).to(self.accel.device).eval()
        viewer = self._viewer
        viewer.net.load_state_dict(self.ema.state()[max(self.ema.stds)])
        n = self.config.sample_grid
        labels = torch.arange(n) % max(self.data.num_classes, 1) if self.data.labels is not None else None
        cond = condition_for(viewer, labels) if labels is not None else None
        if self.config.cold:
            images = cold_preview(viewer, self.data.images[::max(1, len(self.data) // n)][:n])  # spread classes
        else:
            images = generate(viewer, range(n), cond=cond, sampler="heun", steps=18, progress=False)
        save_grid(images, self.run_dir / "samples" / f"kimg-{self.images_seen / 1000:06.1f}.png",
                  nrow=max(self.data.num_classes, 8) if labels is not None else None)
