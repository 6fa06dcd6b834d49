"""The one training loop, for any :class:`Objective`: accelerate (one CPU process, or ``accelerate launch`` on many
processes / GPUs), a run folder, a progress bar, the learning-rate schedule, a NaN guard, power-function EMAs, a
metrics log (``metrics.jsonl`` and optionally an accelerate tracker), preview grids, snapshots and atomic checkpoints.

Exact resume: an objective draws its data and noise as pure functions of (seed, step) — see :func:`batch_indices`
and :func:`step_generator` — so restoring weights, EMAs, optimizers and the step counter continues bit for bit where
training stopped. Every process draws the random numbers of the whole global batch and keeps its share
(:meth:`TrainLoop.share`), so a run on P processes is the one-process run up to the rounding of the gradient
all-reduce, and a run may be resumed on another number of processes.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import KakusanError
from ..utils.images import save_grid
from ..utils.plots import plot_loss
from ..utils import io
from ..utils.dist import use_cpu
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import FREE_ON_RESUME, RESUMABLE_CHANGES, LoopConfig
from .ema import PowerEMA


class TrainingDiverged(KakusanError):
    pass


# Seeds of the data order and of each step's noise. Large primes keep (seed, epoch) and (seed, step) apart: two
# different pairs give the same seed only for runs of more than ~1e6 epochs or seeds ~1e6 steps apart, far beyond
# any run here. (STEP_PRIME once kept process ranks apart; it stays so that the noise of earlier runs is unchanged.)
EPOCH_PRIME, SEED_PRIME, STEP_PRIME = 1_000_003, 7919, 1009


def batch_indices(seed: int, n: int, batch: int, step: int) -> torch.Tensor:
    """Indices of global batch ``step`` in an endless stream of per-epoch random permutations of range(n)."""
    start = step * batch
    out, pos = [], start
    while pos < start + batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * EPOCH_PRIME + epoch))
        take = min(n - offset, start + batch - pos)
        out.append(perm[offset:offset + take])
        pos += take
    return torch.cat(out)


def step_generator(seed: int, step: int, device="cpu") -> torch.Generator:
    """The generator of all random draws of one training step: the same on every process."""
    return torch.Generator(device).manual_seed((seed * SEED_PRIME + step) * STEP_PRIME)


def lr_at(base: float, config: LoopConfig, images_seen: int) -> float:
    """Linear warm-up, then optional inverse-square-root decay (Karras et al. 2024, eq. 16)."""
    kimg = images_seen / 1000
    lr = base * min(1.0, kimg / config.warmup_kimg) if config.warmup_kimg > 0 else base
    if config.lr_decay_kimg:
        lr /= math.sqrt(max(kimg / config.lr_decay_kimg, 1.0))
    return lr


class Objective:
    """A training problem on the loop. It owns its named ``modules`` (``modules['model']`` is the model it delivers:
    sampled in previews, saved in snapshots) and named ``optimizers``, and takes one step at a time. ``modules`` holds
    the modules themselves; what ``prepare`` wraps for accelerate (DDP) is kept beside them, so that checkpoints
    store plain state dicts."""

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def model_target(self) -> torch.nn.Module:
        """The module whose weights are the model's weights (and are averaged by the EMAs)."""
        return self.modules["model"]

    def prepare(self, accel: Accelerator) -> None:
        """Wrap the trained modules and optimizers for accelerate (called once, after any resume)."""

    def set_learning_rates(self, config: LoopConfig, images_seen: int, step: int) -> None:
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr_at(group["initial_lr"], config, images_seen)

    def train_step(self, loop: "TrainLoop") -> dict[str, float]:
        """One optimisation step on global batch ``loop.step``; returns numbers to log (e.g. the loss)."""
        raise NotImplementedError

    def preview(self, ema_weights: dict | None) -> tuple | None:
        """(images, images per row[, one label per row]) for the periodic grid, or None."""
        return None

    def write_model(self, folder: Path, ema_weights: dict | None, raw: bool = True, info: dict | None = None) -> None:
        raise NotImplementedError

    def read_model_weights(self, folder: Path, which) -> dict[str, torch.Tensor]:
        """The raw weights (``which='raw'``) or one EMA (its length) from a model folder written by write_model."""
        raise NotImplementedError


def check_run_folder(run_dir: str | Path, resume: bool, config: LoopConfig) -> None:
    """Before anything is built: a new run needs a folder that holds no run (a run killed before its first checkpoint
    holds nothing to lose and may be started again); a resumed run needs the settings it was started with (only the
    training length may change) and starts from scratch if it was killed before its first checkpoint."""
    run_dir = Path(run_dir)
    stored = run_dir / "train_config.json"
    if not resume:
        if stored.exists() and (has_checkpoint(run_dir / "checkpoint") or any((run_dir / "snapshots").glob("kimg-*"))):
            raise KakusanError(f"{run_dir} already holds a run; resume it or choose another output folder "
                               "(nothing was overwritten)")
        return
    if not stored.is_file() and not has_checkpoint(run_dir / "checkpoint"):
        raise KakusanError(f"nothing to resume: {run_dir} holds no run")
    if stored.is_file():
        # the stored settings read as this version reads them (a field added since takes its default)
        old = json.loads(json.dumps(type(config).from_stored(io.read_json(stored)).to_dict()))
        new = json.loads(json.dumps(config.to_dict()))
        changed = sorted(k for k in set(old) | set(new) if k not in FREE_ON_RESUME and old.get(k) != new.get(k))
        if changed:
            raise KakusanError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); only "
                               f"{' and '.join(RESUMABLE_CHANGES)} may change when it is resumed")


def trim_log(path: Path, images_seen: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``images_seen`` (what a resumed run will log again is dropped, and so is
    a row cut by a kill)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("kimg", math.inf) * 1000 <= images_seen + 0.5:
            keep.append(line)
    io.write_text("".join(k + "\n" for k in keep), path)


class TrainLoop:
    """``TrainLoop(objective, config, run_dir).train()``; ``resume=True`` continues the run in ``run_dir`` exactly.
    ``trackers``: accelerate trackers (or names) to log to besides ``metrics.jsonl`` (also ``config.log_with``)."""

    def __init__(self, objective: Objective, config: LoopConfig, run_dir: str | Path, *, resume: bool = False,
                 progress: bool = True, trackers=None):
        self.run_dir = Path(run_dir)
        self.objective, self.config, self.progress = objective, config.validate(), progress
        check_run_folder(self.run_dir, resume, config)
        self.run_config = config.to_dict()
        trackers = trackers or ([config.log_with] if config.log_with else None)
        with warnings.catch_warnings():  # a tracker that is not installed is our error below, not a warning
            warnings.filterwarnings("ignore", message=".*no supported trackers are currently installed")
            try:
                self.accel = Accelerator(log_with=trackers, project_dir=str(self.run_dir), cpu=use_cpu())
            except ValueError as e:  # an unknown tracker name
                raise KakusanError(f"log_with {config.log_with!r}: {e}") from None
        self.tracking = bool(trackers)
        if config.log_with and not self.accel.log_with:
            raise KakusanError(f"log_with {config.log_with!r}: no such tracker is installed "
                               f"(e.g. pip install {config.log_with})")
        if config.batch_size % self.accel.num_processes:
            raise KakusanError(f"batch size {config.batch_size} is not divisible by "
                               f"{self.accel.num_processes} processes")
        target = objective.model_target()
        self.ema = PowerEMA(target, config.ema_stds) if config.ema_stds else None
        for optimizer in objective.optimizers.values():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.images_seen, self.step = 0, 0
        if resume and has_checkpoint(self.run_dir / "checkpoint"):  # else: killed before its first checkpoint
            state = load_checkpoint(self.run_dir / "checkpoint", objective, self.ema)
            self.images_seen, self.step = state["images_seen"], state["step"]
        if self.accel.is_main_process:
            io.remove_staging(self.run_dir, self.run_dir / "snapshots")  # what an interrupted write left behind
            trim_log(self.run_dir / "metrics.jsonl", self.images_seen)
        objective.prepare(self.accel)
        self.preview_seconds = self.checkpoint_seconds = 0.0

    # --- helpers for objectives ------------------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator:
        """This step's generator, on the training device; the same on every process (draw for the global batch,
        then keep this process's :meth:`share`)."""
        return step_generator(self.config.seed, self.step, self.accel.device)

    @property
    def cpu_generator(self) -> torch.Generator:
        """This step's generator on the CPU (for data drawn on the CPU); the same on every process."""
        return step_generator(self.config.seed, self.step)

    def global_batch(self, n: int) -> torch.Tensor:
        """The indices (into a data set of n items) of this step's global batch."""
        return batch_indices(self.config.seed, n, self.config.batch_size, self.step)

    def share(self, *tensors):
        """This process's share (items r, r + P, ...) of tensors that hold the whole global batch; None stays None."""
        r, p = self.accel.process_index, self.accel.num_processes
        out = tuple(None if t is None else t[r::p] for t in tensors)
        return out if len(out) > 1 else out[0]

    def local_batch(self, n: int) -> torch.Tensor:
        """This process's share of the indices of this step's global batch."""
        return self.share(self.global_batch(n))

    def guard(self, what: str, value: torch.Tensor) -> None:
        """Stop with a clear message (the last good checkpoint untouched) when ``value`` is not finite."""
        if not torch.isfinite(value).all():
            raise TrainingDiverged(
                f"{what} became {value.detach().flatten()[0].item()} at step {self.step} "
                f"({self.images_seen / 1000:.1f} kimg); training stopped. The last good checkpoint in {self.run_dir / 'checkpoint'} is untouched — "
                "try a lower learning rate.")

    def optimize(self, name: str, loss: torch.Tensor, parameters, clip: bool = True) -> float:
        """Backward ``loss`` and step optimizer ``name`` (gradient clipping from the config unless ``clip`` is off,
        e.g. for a regulariser that must act at its set strength); returns the grad norm (0 when not clipped)."""
        self.guard(f"{name} loss", loss)
        optimizer = self.objective.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.accel.backward(loss)
        parameters = list(parameters)
        clip = self.config.grad_clip if clip else 0
        grad_norm = self.accel.clip_grad_norm_(parameters, clip) if clip else torch.zeros(())
        self.guard(f"{name} gradient norm", grad_norm)
        optimizer.step()
        return float(grad_norm)

    # --- the loop ------------------------------------------------------------------------------------------------
    def one_step(self) -> dict[str, float]:
        """Learning rates, one step of the objective, the counters, the EMAs."""
        cfg = self.config
        self.objective.set_learning_rates(cfg, self.images_seen, self.step)
        logs = self.objective.train_step(self)
        self.step += 1
        self.images_seen += cfg.batch_size
        if self.ema is not None:
            self.ema.update(self.accel.unwrap_model(self.objective.model_target()), self.images_seen, cfg.batch_size)
        return logs

    def train(self) -> dict:
        cfg, accel = self.config, self.accel
        main = accel.is_main_process
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            io.write_json(self.run_config, self.run_dir / "train_config.json")
            with open(self.run_dir / "command.txt", "a") as f:
                f.write(shlex.join(["kakusan", *sys.argv[1:]]) + "\n")
        if self.tracking:
            accel.init_trackers(self.run_dir.name, config={k: str(v) for k, v in self.run_config.items()})
        total = int(cfg.kimg * 1000)
        start_time = time.time()
        start_images = self._start_images = self.images_seen
        budget = cfg.minutes * 60 if cfg.minutes is not None else math.inf
        every = {k: int(getattr(cfg, k) * 1000)
                 for k in ("checkpoint_kimg", "sample_kimg", "log_kimg", "snapshot_every_kimg")}
        snapshots = sorted(int(k * 1000) for k in cfg.snapshot_kimg)
        bar = tqdm(total=total, initial=self.images_seen, unit="img", unit_scale=True,
                   desc=f"training {self.run_dir.name}", disable=not (main and self.progress), dynamic_ncols=True, smoothing=0.1)
        logs: dict[str, list] = {}
        last_log_time, stop_reason = time.time(), "done"
        if budget < math.inf and self.images_seen < total:
            self.save_preview()  # the grid at the start, which also tells what the final grid will cost
        while self.images_seen < total:
            before, step_start = self.images_seen, time.time()
            for key, value in self.one_step().items():
                logs.setdefault(key, []).append(value)
            step_seconds = time.time() - step_start
            elapsed = time.time() - start_time
            self._update_bar(bar, before, total, elapsed, budget, logs)
            crossed = lambda n: n > 0 and before // n != self.images_seen // n  # noqa: E731
            if crossed(every["log_kimg"]):
                now = time.time()
                self._log({"kimg": self.images_seen / 1000, "step": self.step,
                           **{k: sum(v) / len(v) for k, v in logs.items()}, "lr": self._lr(),
                           "img_s": round(every["log_kimg"] / max(now - last_log_time, 1e-9), 2),
                           "wall_s": round(now - start_time, 1)})
                logs, last_log_time = {}, now
            # stop while the next step, the final checkpoint and the final grid still fit in the budget
            reserve = self.preview_seconds + self.checkpoint_seconds
            out_of_time = self._agree(elapsed + step_seconds + reserve > budget)
            last = self.images_seen >= total or out_of_time
            periodic = crossed(every["snapshot_every_kimg"]) or (last and cfg.snapshot_every_kimg > 0)
            if main and (periodic or any(before < snap <= self.images_seen for snap in snapshots)):
                self.save_snapshot()
            if out_of_time:
                stop_reason = f"time budget of {cfg.minutes} min reached"
            if crossed(every["checkpoint_kimg"]) or last:
                self.save_checkpoint()
            room = elapsed + reserve + self.preview_seconds <= budget  # a periodic grid must leave room for the last
            if (crossed(every["sample_kimg"]) and room) or last:
                self.save_preview()
            if out_of_time:
                break
        bar.close()
        elapsed = time.time() - start_time
        summary = {"kimg": self.images_seen / 1000, "step": self.step, "stop": stop_reason, "wall_s": round(elapsed, 1),
                   "img_s": round((self.images_seen - start_images) / max(elapsed, 1e-9), 2),
                   "processes": accel.num_processes, "replicas_identical": self.replicas_identical()}
        if main:
            plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        if self.tracking:
            accel.end_training()
        return summary

    def replicas_identical(self) -> bool:
        """Whether every process holds bit-identical weights (a SHA-256 of the raw weights, compared across ranks)."""
        if self.accel.num_processes == 1:
            return True
        import hashlib

        from accelerate.utils import gather

        h = hashlib.sha256()
        for p in self.accel.unwrap_model(self.objective.model_target()).parameters():
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        mine = torch.tensor([int.from_bytes(h.digest()[:7], "little")], dtype=torch.int64, device=self.accel.device)
        return bool((gather(mine) == mine).all().item())

    def _agree(self, flag: bool) -> bool:
        """The main process's decision, on every process (so that all stop at the same step)."""
        if self.accel.num_processes == 1:
            return flag
        from accelerate.utils import broadcast

        return bool(broadcast(torch.tensor([float(flag)], device=self.accel.device), from_process=0).item())

    def _update_bar(self, bar, before: int, total: int, elapsed: float, budget: float, logs: dict) -> None:
        """Progress in images; under a time budget the total is what the budget will reach, so the ETA is right."""
        if budget < math.inf:
            rate = (self.images_seen - self._start_images) / max(elapsed, 1e-9)
            reachable = self.images_seen + rate * max(budget - elapsed - self.preview_seconds, 0)
            bar.total = int(min(total, max(reachable, self.images_seen)))
        bar.update(self.images_seen - before)
        bar.set_postfix({k: f"{v[-1]:.4f}" for k, v in logs.items() if k.startswith("loss")}, refresh=False)

    def _lr(self) -> float:
        return next(iter(self.objective.optimizers.values())).param_groups[0]["lr"]

    def _log(self, row: dict) -> None:
        if self.tracking:
            self.accel.log({k: v for k, v in row.items() if k != "kimg"}, step=self.step)
        if self.accel.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _info(self) -> dict:
        return {"images_seen": self.images_seen, "train_config": self.run_config}

    def _ema_state(self):
        return self.ema.state() if self.ema is not None else None

    def save_checkpoint(self) -> None:
        t0 = time.time()
        self.accel.wait_for_everyone()
        if self.accel.is_main_process:
            save_checkpoint(self.run_dir / "checkpoint", self.objective, self._ema_state(),
                            {"images_seen": self.images_seen, "step": self.step}, self._info())
        self.checkpoint_seconds = time.time() - t0

    def save_snapshot(self) -> None:
        kimg = self.images_seen / 1000  # one decimal unless that would merge two snapshots of a small-batch run
        name = f"kimg-{kimg:06.1f}" if self.images_seen % 100 == 0 else f"kimg-{kimg:08.3f}"
        folder = self.run_dir / "snapshots" / name
        staging = io.staging_folder(folder)
        self.objective.write_model(staging, self._ema_state(), raw=True, info=self._info())
        io.swap_folder(staging, folder)

    @torch.no_grad()
    def save_preview(self) -> None:
        if not self.accel.is_main_process:
            return
        t0 = time.time()
        with torch.random.fork_rng():
            shown = self.objective.preview(self._ema_state())
        if shown is not None:
            images, nrow, *labels = shown
            save_grid(images, self.run_dir / "samples" / f"kimg-{self.images_seen / 1000:06.1f}.png", nrow=nrow,
                      row_labels=labels[0] if labels else None)
        self.preview_seconds = time.time() - t0
