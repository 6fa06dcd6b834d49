"""Restore held-out images with a trained cold model by every method, as arrays and as a strip image
(rows: clean / degraded / direct / Algorithm 1 / Algorithm 2)."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from ..utils import io
from .degradations import Degradation
from .sampling import RESTORERS, _t, restorer


@torch.no_grad()
def restore_all(model, clean: torch.Tensor, *, t: int | None = None, seed: int = 0, batch_size: int = 64,
                methods=tuple(RESTORERS), progress: bool = True) -> dict[str, torch.Tensor]:
    """Degrade ``clean`` to severity t (default T; the nuisance drawn from ``seed``) and restore it by each method.
    Returns {"clean", "degraded", method: images}, all clamped to [-1, 1]."""
    d = model.process
    if not isinstance(d, Degradation):
        raise KakusanError(f"restoration needs a cold model (a degradation such as blur or mask), not {d.kind!r}")
    t = d.steps if t is None else t
    if not 1 <= t <= d.steps:
        raise KakusanError(f"t must be in 1..{d.steps}")
    z = d.nuisance(clean, torch.Generator().manual_seed(seed))
    degraded = d.apply(clean, _t(t, clean), z)
    R = restorer(model)
    out = {"clean": clean, "degraded": degraded.clamp(-1, 1)}
    for name in methods:
        parts = []
        for start in tqdm(range(0, len(clean), batch_size), desc=name, leave=False, disable=not progress):
            sl = slice(start, start + batch_size)
            parts.append(RESTORERS[name](R, degraded[sl], d, t, None if z is None else z[sl]))
        out[name] = torch.cat(parts).clamp(-1, 1)
    return out


def restore_to_folder(model, out: str | Path, *, data: str = "mnist-heldout", n: int = 8, t: int | None = None,
                      seed: int = 0, ema="auto", progress: bool = True) -> dict:
    """Restore the first ``n`` images of ``data`` with ``model`` (a cold model: folder, run or shipped name) by every
    method; writes strip.png (one column per image) and restored.npz with every row."""
    from ..data import load_dataset
    from ..diffusion.denoiser import Denoiser
    from ..utils.images import save_grid

    out = io.require_empty_output(out)
    if n < 1:
        raise KakusanError("n must be >= 1")
    den = Denoiser.from_pretrained(model, ema=ema)
    C, H, W = den.image_shape
    clean = load_dataset(data, H, C).images[:n]
    rows = restore_all(den, clean, t=t, seed=seed, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(list(rows.values())), out / "strip.png", nrow=len(clean))
    io.write_npz(out / "restored.npz", {k: v.numpy() for k, v in rows.items()})
    return {"out": str(out), "strip": str(out / "strip.png"), "rows": list(rows), "n": len(clean),
            "t": den.process.steps if t is None else t}
