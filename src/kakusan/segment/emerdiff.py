"""EmerDiff (Namekata et al., ICLR 2024): pixel-level segments from a diffusion UNet's own knowledge, no training.

For one image x0 (a latent model works on its encoding):
1. **Low-resolution features** (sec. 3.2): noise x0 to t_f (x = x0 + sigma(t_f) eps), run the UNet once and keep the
   queries Q of one cross-attention layer of a low-resolution up block — h x w vectors.
2. **k-means** on them: K low-resolution masks M_1..M_K (h x w, disjoint, covering the image).
3. **Modulated denoising** (sec. 3.3): from x_tm = x0 + sigma(t_m) eps, denoise to sigma = 0 (DDIM, eta = 0) once
   unmodulated — recording every attention map — and 2K times with c M_i (c = +lambda, -lambda) added, at every step
   from t_m on, to the output of the chosen layer (by default the third cross-attention layer of the feature layer's
   block, as in the paper) after its output projection, the recorded attention maps replayed in every layer; the 2K
   runs in batches of ``chunk``.
   Open settings (chosen on validation scenes, :mod:`.settings`): lambda absolute or relative to the RMS of the
   modulated layer's output at t_m (``lam_rel``); modulation at every step or only the first (``mod_at``); x_tm from
   fresh noise or by DDIM inversion of x0 (``start``); the image's condition or the null one (``null_prompt``); the
   2K runs in chunks (``chunk``) to bound memory.
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
from ..diffusion.samplers import invert_ddim, sample_ddim
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
                  codec=None, null=None) -> dict:
    """Segment one image (C, H, W) in [-1, 1]. ``model``: a kakusan :class:`~kakusan.diffusion.Denoiser` whose net
    holds a diffusers UNet with cross-attention; ``cond``: its condition for this image (None: the null condition);
    ``codec``: ``encode`` / ``decode`` of a latent model (None: pixel space); ``null``: the null condition (None: the
    net's own; CLIP("") for Stable Diffusion). Returns ``labels`` (H, W), the
    low-resolution ``kmeans`` labels (h, w) and their ``queries`` (h*w, channels), ``naive`` (their bilinear
    upsampling, H x W), ``naive_smoothed`` (the same after the difference maps' Gaussian), ``diffs`` (K, H, W) and
    ``lam`` (the absolute lambda used)."""
    s = (settings or EmerDiffSettings()).validate()
    unet = model.net.unet
    feature_layer = resolve_layer(unet, default_layer(unet) if s.feature_layer == "auto" else s.feature_layer)
    mod_layer = default_mod_layer(unet, feature_layer) if s.mod_layer == "auto" else resolve_layer(unet, s.mod_layer)
    sigma_data = s.sigma_data or (1.0 if codec is not None else 0.5)
    want = codec.channels if codec is not None else model.image_shape[0]
    if image.dim() != 3 or image.shape[0] != want:
        raise KakusanError(f"the image has shape {tuple(image.shape)}; the model needs ({want}, H, W)")
    device = next(model.parameters()).device
    x0 = codec.encode(image[None].to(device)) if codec is not None else image[None].to(device)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(s.seed)).to(x0)
    if cond is None or s.null_prompt:
        cond1 = null[None].to(device) if null is not None else model.net.null_cond(1, device)
    else:
        cond1 = cond[None].to(device)

    probe = Probe(query_layer=feature_layer)
    with probed(unet, probe):
        sigma_f = sigma_at(model, s.t_f, sigma_data)
        model(x0 + sigma_f * eps, torch.full((1,), sigma_f, device=device), cond1)
    queries = probe.queries[0].float().cpu()
    side = math.isqrt(queries.shape[0])
    ids = kmeans_masks(queries, s.k, s.seed)

    sigma_m = sigma_at(model, s.t_m, sigma_data)
    sigma_lo = min(model.process.sigma_min, sigma_m)
    grid = schedules.karras_sigmas(s.steps, sigma_lo, sigma_m).float()
    if s.start == "inversion":  # the image's own DDIM latent at t_m instead of fresh noise
        up = schedules.karras_sigmas(s.inversion_steps + 1, sigma_lo, sigma_m).float()[:-1].flip(0)
        x_m = invert_ddim(lambda x, sigma: model(x, sigma, cond1), x0, up.to(device))
    else:
        x_m = x0 + sigma_m * eps
    probe = Probe(record=True, mod_layer=mod_layer, mod_calls={0} if s.mod_at == "first" else None)
    with probed(unet, probe):
        denoise_run(model, x_m, cond1, grid, probe)
        lam = s.lam if s.lam_rel is None else s.lam_rel * probe.scales[0]
        masks = resize_labels(ids, side, s.k, math.isqrt(probe.sizes[mod_layer])).flatten(1).to(x0)
        mods = torch.cat([lam * masks, -lam * masks])  # (2K, tokens of the modulated layer)
        probe.record, probe.replay = False, s.replay
        chunk = s.chunk or len(mods)
        outs = []
        for i in range(0, len(mods), chunk):
            probe.mod = mods[i:i + chunk]
            b = len(probe.mod)
            outs.append(denoise_run(model, x_m.expand(b, -1, -1, -1), cond1.expand(b, *cond1.shape[1:]), grid,
                                    probe))
        probe.maps.clear()
    out = torch.cat(outs)
    if codec is not None:  # one image at a time: a VAE decoder's activations at full size dominate memory otherwise
        out = torch.cat([codec.decode(o[None]) for o in out])
    diffs = (out[:s.k] - out[s.k:]).float().pow(2).sum(1).sqrt().cpu()  # (K, H, W), on the CPU for the blur
    diffs = gaussian_blur(diffs, s.smooth)
    size = image.shape[-1]
    upsampled = resize_labels(ids, side, s.k, size, mode="bilinear")
    return {"labels": diffs.argmax(0), "kmeans": ids.view(side, side), "queries": queries,
            "naive": upsampled.argmax(0), "naive_smoothed": gaussian_blur(upsampled, s.smooth).argmax(0),
            "diffs": diffs, "lam": lam, "feature_layer": feature_layer, "mod_layer": mod_layer}


def denoise_run(model, x: torch.Tensor, cond, grid: torch.Tensor, probe: Probe) -> torch.Tensor:
    """DDIM (eta = 0) along ``grid``; the probe learns the index of each network call (to record or replay maps)."""
    calls = iter(range(len(grid)))

    def denoise(x, sigma):
        probe.call = next(calls)
        return model(x, sigma, cond)
    return sample_ddim(denoise, x, grid.to(x.device))
