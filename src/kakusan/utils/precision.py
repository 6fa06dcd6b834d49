"""The arithmetic precision of the network's forward pass: ``fp32``, ``bf16`` (autocast) or ``auto``, which picks the
faster one for this machine — bf16 where the hardware multiplies bf16 natively (a CPU with AMX-BF16, a GPU with bf16)
and fp32 otherwise (on AVX2-only CPUs bf16 is emulated and about 2x slower than fp32).

The chosen precision (never ``auto``) is what a run's config and a model's card record.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=None)
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tile units (Linux: the ``amx_bf16`` flag of /proc/cpuinfo)."""
    try:
        return " amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16`` for ``precision`` on ``device`` (``auto`` decided by the hardware)."""
    from .. import KakusanError

    if precision not in PRECISIONS:
        raise KakusanError(f"precision must be {', '.join(PRECISIONS)} (got {precision!r})")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_amx_bf16() else "fp32"


def autocast_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None: run in fp32)."""
    return torch.bfloat16 if resolve_precision(precision, device) == "bf16" else None


def autocasting(dtype: torch.dtype | None, device_type: str = "cpu"):
    """The context that runs its block under autocast to ``dtype`` (None: plain fp32)."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def cpu_name() -> str:
    """The CPU's model name, to stand beside any speed figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"
