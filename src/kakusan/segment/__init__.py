"""Training-free segmentation (EmerDiff, Namekata et al., ICLR 2024): pixel-level segments from the cross-attention
features of a diffusion UNet, by k-means on its low-resolution queries and modulated denoising.

``segment_image(model, image, cond, EmerDiffSettings(...))`` for one image; ``segment_files`` behind
``kakusan segment``; ``load_sd`` opens a Stable Diffusion 1.x folder offline; ``miou`` / ``pixel_kmeans`` score
(names imported on first use).
"""
from ..utils.lazy import lazy_names

_WHERE = {"Probe": "attention", "attention_layers": "attention", "probed": "attention", "resolve_layer": "attention",
          "EmerDiffSettings": "settings", "segment_image": "emerdiff", "sigma_at": "emerdiff",
          "matched_iou": "metrics", "miou": "metrics", "pixel_kmeans": "metrics", "segment_files": "run"}
__all__ = list(_WHERE)
__getattr__ = lazy_names(__name__, _WHERE)
