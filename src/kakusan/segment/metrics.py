"""Scoring unsupervised segmentations, and the pixel-space floor.

* :func:`matched_iou` — the unsupervised protocol per image: predicted segments carry no class, so each ground-truth
  segment is matched one-to-one to a predicted segment by the Hungarian algorithm on their IoU matrix (maximum total
  IoU; scipy's ``linear_sum_assignment``); the image's score is the mean IoU over its ground-truth segments (an
  unmatched one counts 0). mIoU of a data set = the mean of the per-image scores.
* :func:`pixel_kmeans` — k-means on raw pixels (intensity or colour plus position): what no network knows.
"""
from __future__ import annotations

import numpy as np
import torch


def iou_matrix(pred: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """(G, P) IoU between every ground-truth segment and every predicted segment of one image (label maps H x W)."""
    g_ids, p_ids = torch.unique(gt), torch.unique(pred)
    g = (gt.flatten()[None] == g_ids[:, None]).double()
    p = (pred.flatten()[None] == p_ids[:, None]).double()
    inter = g @ p.T
    union = g.sum(1, keepdim=True) + p.sum(1)[None] - inter
    return (inter / union).numpy()


def matched_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean IoU of one image's ground-truth segments under the best one-to-one matching to predicted segments."""
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].sum() / iou.shape[0])


def miou(preds, gts) -> float:
    """Mean over images of :func:`matched_iou`."""
    scores = [matched_iou(p, g) for p, g in zip(preds, gts)]
    return float(np.mean(scores)) if scores else float("nan")


def pixel_kmeans(image: torch.Tensor, k: int, seed: int = 0, position_weight: float = 1.0) -> torch.Tensor:
    """(H, W) labels of k-means on each pixel's values (C, in [-1, 1]) and its position (y, x in [-1, 1], times
    ``position_weight``)."""
    from sklearn.cluster import KMeans

    c, h, w = image.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    feats = torch.cat([image.reshape(c, -1), position_weight * torch.stack([ys, xs]).reshape(2, -1)]).T
    ids = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats.double().numpy())
    return torch.from_numpy(ids).long().view(h, w)
