"""EmerDiff (Namekata et al., ICLR 2024): pixel-level segments from a diffusion UNet's own knowledge, no training.

For one image x0 (a latent model works on its encoding):
1. **Low-resolution features** (sec. 3.2): noise x0 to t_f (x = x0 + sigma(t_f) eps), run the UNet once and keep the
   queries Q of one cross-attention layer of a low-resolution up block — h x w vectors.
2. **k-means** on them: K low-resolution masks M_1..M_K (h x w, disjoint, covering the image).
3. **Modulated denoising** (sec. 3.3): from x_tm = x0 + sigma(t_m) eps, denoise to sigma = 0 (DDIM, eta = 0) once
   unmodulated — recording every attention map — and 2K times with c M_i (c = +lambda, -lambda) added, at every step
   from t_m on, to the output of the chosen layer (by default the third cross-attention layer of the feature layer's
   block, as in the paper) after its output projection, the recorded attention maps replayed in every layer; all 2K runs in one
   batch.
4. **Difference maps** d_i = || I_i^- - I_i^+ ||_2 over channels (decoded to pixels for a latent model), Gaussian
   smoothing, label = argmax_i d_i per pixel: the full-resolution segmentation.

Timesteps follow the paper's convention — t in [0, 1000) of Stable Diffusion's schedule — and are mapped to a noise
level with the same signal-to-noise ratio for any process: sigma = sigma_data * sqrt((1 - a_t) / a_t), a_t of SD's
scaled-linear schedule and sigma_data the data's scale (0.5 for kakusan's images in [-1, 1], 1 for SD's latents); a
DDPM-process model uses its own schedule at t.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from .. import KakusanError
from ..diffusion import schedules
from ..diffusion.process import DDPMProcess
from ..diffusion.samplers import sample_ddim
from .attention import Probe, attention_layers, probed, resolve_layer
from .settings import EmerDiffSettings

SD_ALPHAS = schedules.alphas_cumprod(schedules.ddpm_betas("scaled_linear", 1000, 0.00085, 0.012))


def sigma_at(model, t: float, sigma_data: float) -> float:
    """The noise level of timestep t (see the module docstring)."""
    if isinstance(model.process, DDPMProcess):
        idx = torch.tensor(float(t))
        lo, hi = int(idx.floor()), min(int(idx.floor()) + 1, model.process.num_steps - 1)
        w = float(idx - lo)
        return float(model.process.sigmas[lo] ** (1 - w) * model.process.sigmas[hi] ** w)
    a = float(SD_ALPHAS[int(t)])
    return sigma_data * math.sqrt((1 - a) / a)


def default_layer(unet) -> str:
    """The first cross-attention layer of the lowest-resolution up block that has one."""
    for i, block in enumerate(unet.up_blocks):
        if getattr(block, "attentions", None):
            return f"up.{i}.0"
    return "up.0.0"  # resolve_layer names what exists


def default_mod_layer(unet, feature_layer: str) -> str:
    """The paper's modulated layer: the third cross-attention layer of the block the features come from (the last
    one if the block has fewer; per seed 001, the first layer carries content and the third appearance)."""
    block = feature_layer.split(".attentions.")[0]
    same = [n for n in attention_layers(unet, cross_only=True)
            if n.startswith(block + ".attentions.") and ".transformer_blocks.0." in n]
    return same[min(2, len(same) - 1)]


def kmeans_masks(queries: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(tokens,) cluster ids of the query vectors (scikit-learn's k-means, k-means++ init)."""
    from sklearn.cluster import KMeans

    x = queries.double().cpu().numpy()
    if len(x) < k:
        raise KakusanError(f"k = {k} exceeds the {len(x)} positions of the feature layer")
    ids = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    return torch.from_numpy(ids).long()


def gaussian_blur(x: torch.Tensor, std: float) -> torch.Tensor:
    """(N, H, W) blurred by a separable Gaussian of ``std`` pixels (reflect padding)."""
    if std <= 0:
        return x
    r = max(1, math.ceil(3 * std))
    kernel = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * std**2))
    kernel = (kernel / kernel.sum()).to(x.device)
    y = F.pad(x[:, None], (r, r, r, r), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return F.conv2d(y, kernel.view(1, 1, -1, 1))[:, 0]


def resize_labels(ids: torch.Tensor, side: int, k: int, size: int, mode: str = "nearest") -> torch.Tensor:
    """(k, size, size) masks of a (side*side,) label vector, resized (nearest for modulation; bilinear for the
    paper's naive-upsampling baseline, whose argmax is then the label)."""
    masks = F.one_hot(ids.view(side, side), k).permute(2, 0, 1).float()[None]
    if mode == "nearest":
        return F.interpolate(masks, size=(size, size), mode="nearest")[0]
    return F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def segment_image(model, image: torch.Tensor, cond=None, settings: EmerDiffSettings | None = None,
                  codec=None) -> dict:
    """Segment one image (C, H, W) in [-1, 1]. ``model``: a kakusan :class:`~kakusan.diffusion.Denoiser` whose net
    holds a diffusers UNet with cross-attention; ``cond``: its condition for this image (None: the null condition);
    ``codec``: ``encode`` / ``decode`` of a latent model (None: pixel space). Returns ``labels`` (H, W), the
    low-resolution ``kmeans`` labels (h, w), ``naive`` (their bilinear upsampling, H x W) and ``diffs`` (K, H, W)."""
    s = (settings or EmerDiffSettings()).validate()
    unet = model.net.unet
    feature_layer = resolve_layer(unet, default_layer(unet) if s.feature_layer == "auto" else s.feature_layer)
    mod_layer = default_mod_layer(unet, feature_layer) if s.mod_layer == "auto" else resolve_layer(unet, s.mod_layer)
    sigma_data = s.sigma_data or (1.0 if codec is not None else 0.5)
    want = codec.channels if codec is not None else model.image_shape[0]
    if image.dim() != 3 or image.shape[0] != want:
        raise KakusanError(f"the image has shape {tuple(image.shape)}; the model needs ({want}, H, W)")
    x0 = codec.encode(image[None]) if codec is not None else image[None]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(s.seed)).to(x0)
    cond1 = cond[None] if cond is not None else model.net.null_cond(1, x0.device)

    probe = Probe(query_layer=feature_layer)
    with probed(unet, probe):
        sigma_f = sigma_at(model, s.t_f, sigma_data)
        model(x0 + sigma_f * eps, torch.full((1,), sigma_f), cond1)
    tokens = probe.queries.shape[1]
    side = math.isqrt(tokens)
    ids = kmeans_masks(probe.queries[0], s.k, s.seed)
    mod_side = math.isqrt(probe.sizes[mod_layer])
    masks = resize_labels(ids, side, s.k, mod_side).flatten(1)  # (K, tokens of the modulated layer)

    sigma_m = sigma_at(model, s.t_m, sigma_data)
    grid = schedules.karras_sigmas(s.steps, min(model.process.sigma_min, sigma_m), sigma_m).float()
    x_m = x0 + sigma_m * eps
    probe = Probe(record=True)
    with probed(unet, probe):
        denoise_run(model, x_m, cond1, grid, probe)
        probe.record, probe.replay = False, s.replay
        probe.mod_layer, probe.mod = mod_layer, torch.cat([s.lam * masks, -s.lam * masks]).to(x0)
        batch = 2 * s.k
        out = denoise_run(model, x_m.expand(batch, -1, -1, -1),
                          cond1.expand(batch, *cond1.shape[1:]), grid, probe)
    pixels = codec.decode(out) if codec is not None else out
    diffs = (pixels[:s.k] - pixels[s.k:]).float().pow(2).sum(1).sqrt()  # (K, H, W)
    diffs = gaussian_blur(diffs, s.smooth)
    size = image.shape[-1]
    naive = resize_labels(ids, side, s.k, size, mode="bilinear").argmax(0)
    return {"labels": diffs.argmax(0), "kmeans": ids.view(side, side), "naive": naive, "diffs": diffs,
            "feature_layer": feature_layer, "mod_layer": mod_layer}


def denoise_run(model, x: torch.Tensor, cond, grid: torch.Tensor, probe: Probe) -> torch.Tensor:
    """DDIM (eta = 0) along ``grid``; the probe learns the index of each network call (to record or replay maps)."""
    calls = iter(range(len(grid)))

    def denoise(x, sigma):
        probe.call = next(calls)
        return model(x, sigma, cond)
    return sample_ddim(denoise, x, grid.to(x.device))
