"""Scoring unsupervised segmentations, and the pixel-space floor.

* :func:`matched_iou` — the unsupervised protocol per image: predicted segments carry no class, so each ground-truth
  segment is matched one-to-one to a predicted segment by the Hungarian algorithm on their IoU matrix (maximum total
  IoU; scipy's ``linear_sum_assignment``); the image's score is the mean IoU over its ground-truth segments (an
  unmatched one counts 0). mIoU of a data set = the mean of the per-image scores.
* :func:`class_level` — the paper's class-level protocol (EmerDiff sec. 4.1): each predicted segment is described by
  the mean of a feature map over it (the UNet's query vectors for a diffusion method), all segments of the data set
  are k-means-clustered into as many clusters as there are classes, and the clusters are matched to the classes once,
  for the whole data set (Hungarian on the data set's IoU matrix); mIoU = mean over classes of the matched IoU.
* :func:`pixel_kmeans`, :func:`texture_kmeans`, :func:`threshold_components` — what no network knows: k-means on
  raw pixels (colour plus position), k-means on a texture filter bank, and Otsu's threshold + connected components.
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


def segment_means(labels: torch.Tensor, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (S, F) mean feature of each segment) of a label map (H, W) over a feature map (F, h, w), resized to
    (H, W) by nearest neighbour if it is coarser."""
    f = features.float()
    if f.shape[-2:] != labels.shape:
        f = torch.nn.functional.interpolate(f[None], size=tuple(labels.shape), mode="nearest")[0]
    ids = torch.unique(labels)
    flat, lab = f.flatten(1), labels.flatten()
    return ids.numpy(), torch.stack([flat[:, lab == i].mean(1) for i in ids]).double().numpy()


def class_level(preds: list[torch.Tensor], features: list[torch.Tensor], classes: list[torch.Tensor],
                n_classes: int, seed: int = 0) -> dict:
    """The class-level protocol (module docstring) over a data set: ``preds`` label maps, ``features`` a feature map
    (F, h, w) per image, ``classes`` ground-truth class maps (ids 0..n_classes-1). Returns ``miou``, the per-class
    IoU, the matching, and ``confusion`` (images, classes, clusters) for a bootstrap (:func:`class_miou`)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    per_image = [segment_means(p, f) for p, f in zip(preds, features)]
    x = np.concatenate([m for _, m in per_image])
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    cluster = KMeans(n_clusters=n_classes, n_init=4, random_state=seed).fit_predict(x)
    confusion = np.zeros((len(preds), n_classes, n_classes))
    start = 0
    for i, ((ids, _), p, c) in enumerate(zip(per_image, preds, classes)):
        lookup = np.zeros(int(ids.max()) + 1, dtype=np.int64)
        lookup[ids] = cluster[start:start + len(ids)]
        start += len(ids)
        np.add.at(confusion[i], (c.flatten().numpy(), lookup[p.flatten().numpy()]), 1)
    total = confusion.sum(0)
    iou = total / (total.sum(1, keepdims=True) + total.sum(0, keepdims=True) - total + 1e-12)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    match = cols[np.argsort(rows)]
    return {"miou": class_miou(confusion, match), "per_class": iou[np.arange(n_classes), match].tolist(),
            "match": match.tolist(), "confusion": confusion}


def class_miou(confusion: np.ndarray, match: np.ndarray) -> float:
    """Data-set mIoU of per-image confusion matrices (images, classes, clusters) under a fixed class -> cluster
    matching (classes absent from the images are skipped)."""
    total = confusion.sum(0)
    n = len(match)
    inter = total[np.arange(n), match]
    union = total.sum(1) + total[:, match].sum(0) - inter
    present = total.sum(1) > 0
    return float((inter[present] / union[present]).mean())


def threshold_components(image: torch.Tensor) -> torch.Tensor:
    """(H, W) labels: Otsu's threshold on the grey image, background 0, each connected foreground component its own
    id (scikit-image)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    grey = image.float().mean(0).numpy()
    fg = grey > threshold_otsu(grey) if grey.max() > grey.min() else np.zeros_like(grey, dtype=bool)
    return torch.from_numpy(label(fg, connectivity=2)).long()


def position_grid(h: int, w: int) -> torch.Tensor:
    """(2, h, w) pixel positions (y, x), each in [-1, 1]."""
    return torch.stack(torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"))


def _kmeans_labels(feats: torch.Tensor, k: int, seed: int, h: int, w: int) -> torch.Tensor:
    """(h, w) labels of scikit-learn's k-means on per-pixel feature rows (h*w, F)."""
    from sklearn.cluster import KMeans

    ids = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats.double().numpy())
    return torch.from_numpy(ids).long().view(h, w)


def pixel_kmeans(image: torch.Tensor, k: int, seed: int = 0, position_weight: float = 1.0) -> torch.Tensor:
    """(H, W) labels of k-means on each pixel's values (C, in [-1, 1]) and its position (y, x in [-1, 1], times
    ``position_weight``)."""
    c, h, w = image.shape
    feats = torch.cat([image.reshape(c, -1), position_weight * position_grid(h, w).reshape(2, -1)]).T
    return _kmeans_labels(feats, k, seed, h, w)


def texture_features(image: torch.Tensor) -> torch.Tensor:
    """(F, H, W) filter-bank responses of a (C, H, W) image: each channel smoothed at two scales, its gradient
    magnitude and Laplacian of Gaussian, and the local energy of Gabor filters at 4 orientations x 2 frequencies
    (scikit-image's ``gabor``), each energy smoothed by a Gaussian of 2 px — the classic texture segmentation bank."""
    from scipy import ndimage
    from skimage.filters import gabor

    feats = []
    for ch in image.double().numpy():
        for s in (1.0, 2.0):
            feats += [ndimage.gaussian_filter(ch, s), ndimage.gaussian_gradient_magnitude(ch, s),
                      ndimage.gaussian_laplace(ch, s)]
        for freq in (0.15, 0.3):
            for theta in np.arange(4) * np.pi / 4:
                real, imag = gabor(ch, frequency=freq, theta=theta, mode="reflect")
                feats.append(ndimage.gaussian_filter(np.hypot(real, imag), 2.0))
    return torch.from_numpy(np.stack(feats))


def texture_kmeans(image: torch.Tensor, k: int, seed: int = 0, position_weight: float = 1.0,
                   features: torch.Tensor | None = None) -> torch.Tensor:
    """(H, W) labels of k-means on :func:`texture_features` (each standardised over the image; ``features``: the
    bank's responses if already computed) plus position."""
    f = texture_features(image) if features is None else features
    c, h, w = f.shape
    f = f.double().reshape(c, -1)
    f = (f - f.mean(1, keepdim=True)) / (f.std(1, keepdim=True) + 1e-8) / np.sqrt(c)
    feats = torch.cat([f, position_weight * position_grid(h, w).reshape(2, -1).double()]).T
    return _kmeans_labels(feats, k, seed, h, w)
