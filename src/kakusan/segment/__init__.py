"""Training-free segmentation (EmerDiff, Namekata et al., ICLR 2024): pixel-level segments from the cross-attention
features of a diffusion UNet, by k-means on its low-resolution queries and modulated denoising.

``segment_image(model, image, cond, EmerDiffSettings(...))`` for one image; ``segment_files`` behind
``kakusan segment``; ``load_sd`` opens a Stable Diffusion 1.x folder offline; ``miou`` / ``pixel_kmeans`` score.
"""
from .attention import Probe, attention_layers, probed, resolve_layer
from .emerdiff import EmerDiffSettings, segment_image, sigma_at
from .metrics import matched_iou, miou, pixel_kmeans
from .run import segment_files

__all__ = ["EmerDiffSettings", "Probe", "attention_layers", "matched_iou", "miou", "pixel_kmeans", "probed",
           "resolve_layer", "segment_files", "segment_image", "sigma_at"]
