"""The preconditioned denoiser D(x; sigma, c) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), c)
(Karras et al. 2022, eq. 7) — the single meeting point of training, sampling and guidance.

A model folder (``save_pretrained`` / ``from_pretrained``) is self-describing and pickle-free:

    config.json                                   kakusan: net recipe, forward process, data, EMA lengths, weights
    unet/config.json                              diffusers' own config of the UNet (any diffusers part of the net)
    unet/diffusion_pytorch_model.safetensors      the default weights (the longest EMA, else the raw weights)
    unet/diffusion_pytorch_model.<variant>.safetensors   the other weight sets: ``ema-0.050``, ``raw``
    net[.<variant>].safetensors                   parameters outside the diffusers parts (token table, toy MLP)
    solver.json                                   optional: optimised grids and default sampler / NFE (grids.py)

so ``UNet2DModel.from_pretrained(folder, subfolder="unet")`` opens the network without kakusan (and
``variant="ema-0.050"`` another weight set); the preconditioning that turns it into a denoiser is in config.json.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import KakusanError, __version__
from ..nets import NETS, build_net, net_config_from_dict
from ..utils import io
from ..utils.precision import autocasting, resolve_precision
from .process import ForwardProcess, per_sample, process_from_config
from .samplers import nfe_of

CONFIG_FILE = "config.json"
SOLVER_FILE = "solver.json"  # optional: optimised sampling grids and default sampling settings
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
NET_WEIGHTS = "net"
RAW = "raw"


def ema_variant(std: float) -> str:
    """The weight-set name of an EMA length: ``ema-0.100``."""
    return f"ema-{float(std):.3f}"


def weight_files(net: nn.Module, variant: str, default: str) -> dict[str, str]:
    """{key prefix: file relative to the folder} of one weight set: one file per diffusers part of the net, and
    ``net[.variant].safetensors`` (prefix '') for every other parameter."""
    suffix = "" if variant == default else f".{variant}"
    files = {f"{part}.": f"{part}/{DIFFUSERS_WEIGHTS}{suffix}.safetensors" for part in net.diffusers_parts()}
    return {**files, "": f"{NET_WEIGHTS}{suffix}.safetensors"}


def split_state(state: dict[str, torch.Tensor], prefixes) -> dict[str, dict[str, torch.Tensor]]:
    """{prefix: that part's tensors with the prefix removed}; keys under no prefix go to the part ''."""
    parts = {p: {} for p in prefixes}
    for key, value in state.items():
        prefix = next((p for p in parts if p and key.startswith(p)), "")
        parts[prefix][key[len(prefix):]] = value
    return parts


def preconditioned(process: ForwardProcess, net, x: torch.Tensor, sigma: torch.Tensor, cond=None,
                   autocast: torch.dtype | None = None) -> torch.Tensor:
    """D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c) for a per-sample sigma (B,); ``net`` may be wrapped
    (DDP, compiled) and run under autocast, while the skip connection stays in x's precision."""
    c_skip, c_out, c_in, c_noise = process.precondition(sigma)
    with autocasting(autocast, x.device.type):
        F = net(per_sample(c_in, x) * x, c_noise, cond)
    return per_sample(c_skip, x) * x + per_sample(c_out, x) * F.to(x.dtype)


def _version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; what is not a number counts 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("+")[0].split(".")[:3])


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, process: ForwardProcess, info: dict | None = None):
        super().__init__()
        self.net = net
        self.process = process
        self.info = dict(info or {})  # class_names, data set, images seen, EMA lengths, ...
        self.solver: dict = {}  # solver.json: optimised grids and the default sampling settings (grids.py)
        self.precision = "fp32"  # of the network's forward pass: fp32, or bf16 autocast (see set_precision)

    @classmethod
    def create(cls, net_config, process: ForwardProcess, info: dict | None = None) -> "Denoiser":
        return cls(build_net(net_config), process, info)

    # --- what the model says about itself (from its net) ---------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.net.image_shape

    @property
    def cond_type(self) -> str:
        return self.net.cond_type

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def null_cond(self, batch: int, device=None):
        return self.net.null_cond(batch, device)

    def null_like(self, cond):
        return self.net.null_like(cond)

    def cond_from_labels(self, labels):
        return self.net.cond_from_labels(labels)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        return preconditioned(self.process, self.net, x, sigma, cond,
                              autocast=torch.bfloat16 if self.precision == "bf16" else None)

    def set_precision(self, precision: str = "auto") -> str:
        """Run the network in ``precision`` (fp32 | bf16 | auto: the faster one on this machine, see
        :mod:`kakusan.utils.precision`); the sampler's state and the skip connection stay fp32. Returns the choice."""
        self.precision = resolve_precision(precision, next(self.net.parameters()).device)
        return self.precision

    # --- sampling settings of this model ------------------------------------------------------------------------
    def stored_grid(self, sampler: str, nfe: int) -> torch.Tensor | None:
        entry = self.solver.get("grids", {}).get(sampler, {}).get(str(nfe))
        return torch.tensor(entry["sigmas"], dtype=torch.float64) if entry else None

    def sampling_grid(self, sampler: str, steps: int, schedule: str = "auto") -> torch.Tensor:
        """The process's grid; with ``schedule='optimized'`` the grid stored with this model for the sampler and its
        NFE (:mod:`kakusan.diffusion.grids`)."""
        if schedule != "optimized":
            return self.process.sampling_grid(sampler, steps, schedule)
        nfe = nfe_of(sampler, steps)
        grid = self.stored_grid(sampler, nfe)
        if grid is None:
            have = {k: sorted(v, key=int) for k, v in self.solver.get("grids", {}).items()}
            raise KakusanError(f"this model has no optimized grid for {sampler} at {nfe} NFE (it has: "
                               f"{have or 'none'}); make one with `kakusan grid MODEL --sampler {sampler} --nfe {nfe}`")
        return grid

    def default_sampling(self) -> dict:
        """``{sampler, nfe, schedule}``: the model's own (solver.json), else its process's sampler at 35 NFE."""
        own = self.solver.get("default") or {}
        return {"sampler": own.get("sampler", self.process.default_sampler), "nfe": int(own.get("nfe", 35)),
                "schedule": own.get("schedule", "auto"), "note": own.get("note", "")}

    # --- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path,
                        ema_weights: dict[float, dict[str, torch.Tensor]] | None = None) -> None:
        """Write config + raw weights (+ EMA weights) into ``folder`` atomically (the folder is swapped in whole)."""
        folder = Path(folder)
        staging = io.staging_folder(folder)
        self.write_into(staging, ema_weights)
        io.swap_folder(staging, folder)

    def write_into(self, folder: Path, ema_weights: dict[float, dict[str, torch.Tensor]] | None = None,
                   raw: bool = True) -> None:
        """Write the raw weights (unless ``raw`` is False) and one weight set per EMA length into ``folder``."""
        sets = {ema_variant(std): w for std, w in sorted((ema_weights or {}).items())}
        if raw:
            sets[RAW] = self.net.state_dict()
        self.write_weight_sets(folder, sets)

    def write_weight_sets(self, folder: Path, sets: dict[str, dict[str, torch.Tensor]],
                          default: str | None = None) -> None:
        """Config + the named weight sets; the default is ``default``, else the longest EMA, else the raw weights."""
        if not sets:
            raise KakusanError("a model folder needs at least one weight set")
        emas = sorted(float(v.split("-", 1)[1]) for v in sets if v != RAW)
        default = default or (ema_variant(emas[-1]) if emas else RAW)
        folder = Path(folder)
        for part, module in self.net.diffusers_parts().items():
            io.write_text(module.to_json_string(), folder / part / CONFIG_FILE)
        for variant, state in sets.items():
            files = weight_files(self.net, variant, default)
            for prefix, chunk in split_state(state, files).items():
                if chunk:
                    io.save_tensors(chunk, folder / files[prefix])
        config = {"kakusan_version": __version__, "net": self.net.config.to_dict(), "process": self.process.to_config(),
                  **self.info, "ema_stds": emas, "weights": {"default": default, "sets": sorted(sets)}}
        io.write_json(config, folder / CONFIG_FILE)

    @staticmethod
    def read_config(folder: str | Path) -> tuple[Path, dict]:
        """(folder, config.json) of a model folder, run folder or shipped name, with a clear error otherwise."""
        from ..zoo import resolve_model

        folder = io.resolve_folder(resolve_model(folder))
        if not (folder / CONFIG_FILE).is_file():
            raise KakusanError(f"{folder} is not a kakusan model folder (no {CONFIG_FILE})")
        config = io.read_json(folder / CONFIG_FILE)
        if not isinstance(config, dict):
            raise KakusanError(f"{folder / CONFIG_FILE} is not a model config (a JSON object)")
        written = str(config.get("kakusan_version", "0"))
        if _version(written) > _version(__version__):
            raise KakusanError(f"{folder} was written by kakusan {written}, newer than this kakusan {__version__}; "
                               "upgrade kakusan to read it")
        if "weights" not in config:
            raise KakusanError(f"{folder} was written by kakusan 0.1 (model.safetensors layout); convert it once with "
                               f"`kakusan convert {folder} NEW_FOLDER`")
        return folder, config

    def read_weights(self, folder: Path, variant: str, default: str) -> dict[str, torch.Tensor]:
        """One weight set of a model folder as a state dict of this model's net."""
        state = {}
        for prefix, name in weight_files(self.net, variant, default).items():
            if (folder / name).is_file():
                state.update({prefix + k: v for k, v in io.load_tensors(folder / name).items()})
        missing = sorted(set(self.net.state_dict()) - set(state))
        if missing:
            raise KakusanError(f"{folder}: weight set {variant!r} is incomplete or the weights do not fit the "
                               f"architecture in its config ({len(missing)} tensors missing, e.g. {missing[0]})")
        return state

    @classmethod
    def from_pretrained(cls, folder: str | Path, ema: float | str | None = "auto", device="cpu") -> "Denoiser":
        """Load a model folder. ``ema``: an EMA length (e.g. 0.1), ``'raw'`` for the raw weights, or ``'auto'`` (the
        folder's default: the longest stored EMA, else raw)."""
        folder, config = cls.read_config(folder)
        try:
            info = {k: v for k, v in config.items() if k not in ("net", "process", "kakusan_version", "weights")}
            net_config = net_config_from_dict(config["net"])
            net = NETS[net_config.kind][1].from_folder(net_config, folder)
            model = cls(net, process_from_config(config["process"]), info)
            variant = model.choose_weights(config, ema, folder)
            default = config["weights"]["default"]
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a damaged or hand-edited config
            what = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise KakusanError(f"{folder / CONFIG_FILE} is not a valid model config ({what})") from e
        state = model.read_weights(folder, variant, default)
        try:
            model.net.load_state_dict(state)
        except RuntimeError as e:
            raise KakusanError(f"{folder}: the weights do not fit the architecture in its config "
                               f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from e
        model.info["weights"] = variant
        if (folder / SOLVER_FILE).is_file():
            solver = io.read_json(folder / SOLVER_FILE)
            if not isinstance(solver, dict):
                raise KakusanError(f"{folder / SOLVER_FILE} is not a JSON object")
            model.solver = solver
        return model.to(device).eval()

    @staticmethod
    def choose_weights(config: dict, ema, folder) -> str:
        stored, sets = config.get("ema_stds", []), config["weights"]["sets"]
        if ema == "auto":
            return config["weights"]["default"]
        if ema in (RAW, None):
            if RAW not in sets:
                raise KakusanError(f"{folder} holds no raw weights (stored EMA lengths: {stored or 'none'})")
            return RAW
        try:
            std = float(ema)
        except ValueError:
            raise KakusanError(f"ema must be a length such as 0.1, 'raw' or 'auto' (got {ema!r})") from None
        matches = [s for s in stored if abs(s - std) < 1e-9]
        if not matches:
            raise KakusanError(f"{folder} has no EMA of length {ema}; stored: {stored or 'none'}")
        return ema_variant(matches[0])
