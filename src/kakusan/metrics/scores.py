"""Sample-quality scores on evaluation-network features, always reported beside the real-vs-real floor.

* Fréchet distance (Heusel et al. 2017) and KID (Bińkowski et al. 2018): torchmetrics, fed precomputed features.
* Improved precision / recall (Kynkäänniemi et al. 2019, Sec. 3): a sample is inside a set's manifold if it lies
  within the distance to the k-th nearest neighbour (k = 3) of some member of the set; precision = share of generated
  samples inside the real manifold, recall = share of real samples inside the generated manifold.
* Class accuracy: the evaluation network's prediction against the label the sample was drawn for.

Small-sample FD is biased upwards, so :func:`evaluate` also scores two *disjoint* real sets of the same size against
the same reference (the floor): a model is only as good as its distance to that floor.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .. import KakusanError

# torchmetrics warns on creating a KID (in some versions also an FID) metric that it keeps all features in a buffer;
# here the features are a few thousand precomputed vectors, so the warning is noise on every evaluation.
_BUFFER_WARNING = r"Metric `[\w ]*Inception Distance` will save all extracted features in buffer"


class _Precomputed(nn.Module):
    """Lets torchmetrics take feature vectors directly (features are extracted once and reused)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def _metric(cls, **kwargs):
    """``cls(**kwargs)`` without torchmetrics' feature-buffer warning (only that one, only here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BUFFER_WARNING, category=UserWarning)
        return cls(**kwargs)


@torch.no_grad()
def extract(net: nn.Module, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, logits) of ``images`` (N, C, H, W) in [-1, 1]; logits None if the net has no classifier head."""
    net.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch):
        f = net.features(images[i:i + batch].float())
        feats.append(f)
        if hasattr(net, "head"):
            logits.append(net.head(f))
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    fid = _metric(FrechetInceptionDistance, feature=_Precomputed(real.shape[1]))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return float(fid.compute())


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (the estimates torchmetrics' FID uses), float64."""
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def _root(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a covariance (negative round-off eigenvalues clipped)."""
    lam, vec = torch.linalg.eigh(cov)
    return vec @ torch.diag(lam.clamp(min=0).sqrt()) @ vec.T


REAL_STREAM = 7919  # offset of the real features' resampling seed from the samples' (resample_real=True)


def reference_draws(real: torch.Tensor, reps: int, seed: int = 0, resample: bool = False) -> list[tuple]:
    """(mean, covariance, covariance^1/2) of the real features for each of ``reps`` bootstrap draws: the fixed set
    every time, or resamplings with replacement whose indices depend only on (len(real), reps, seed + REAL_STREAM).
    Computed once, they serve every sample set scored against the same reference."""
    real = real.double()
    if not resample:
        mu, cov = _moments(real)
        return [(mu, cov, _root(cov))] * reps
    g = torch.Generator().manual_seed(seed + REAL_STREAM)
    draws = []
    for _ in range(reps):
        mu, cov = _moments(real[torch.randint(len(real), (len(real),), generator=g)])
        draws.append((mu, cov, _root(cov)))
    return draws


def fd_bootstrap(real: torch.Tensor, fake: torch.Tensor, reps: int = 100, seed: int = 0,
                 resample_real: bool = False, draws: list[tuple] | None = None) -> torch.Tensor:
    """FD of ``reps`` resamplings (with replacement) of the sample features against the real features (Efron's
    bootstrap); ``resample_real`` resamples the real features too, so the spread includes the reference set's own
    finite size (``draws``: those of :func:`reference_draws`, when already computed).

    FD = |mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr (S_r^1/2 S_f S_r^1/2)^1/2 (Heusel et al. 2017, eq. 6 with the
    symmetric form of the cross term): each resampling costs one symmetric eigensolve. The resampled indices depend
    only on (n, reps, seed) (the real ones on (len(real), reps, seed + REAL_STREAM)), so two sample sets of the same
    size drawn on the same seeds are resampled *in pairs*: ``(fd_bootstrap(r, a) - fd_bootstrap(r, b)).std()`` is
    the spread of the gap itself."""
    draws = draws or reference_draws(real, reps, seed, resample_real)
    if len(draws) < reps:
        raise ValueError(f"{reps} resamplings need as many reference draws (got {len(draws)})")
    fake = fake.double()
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(reps, dtype=torch.float64)
    for i, (mu_r, cov_r, root_r) in enumerate(draws[:reps]):
        mu_f, cov_f = _moments(fake[torch.randint(len(fake), (len(fake),), generator=g)])
        cross = torch.linalg.eigvalsh(root_r @ cov_f @ root_r).clamp(min=0).sqrt().sum()
        out[i] = (mu_r - mu_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * cross
    return out


def fd_bootstrap_std(real: torch.Tensor, fake: torch.Tensor, reps: int = 100, seed: int = 0) -> float:
    """Standard deviation of :func:`fd_bootstrap`: the spread another draw of as many samples would show."""
    return float(fd_bootstrap(real, fake, reps, seed).std())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over random subsets of half the smaller set (polynomial kernel of degree 3)."""
    size = max(2, min(len(real), len(fake)) // 2)
    kid = _metric(KernelInceptionDistance, feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def _inside(queries: torch.Tensor, support: torch.Tensor, k: int, chunk: int = 1000) -> torch.Tensor:
    """Boolean (Q,): is each query within some support point's k-NN radius (Kynkäänniemi et al. eq. 1-2)?"""
    d_ss = torch.cdist(support, support)
    radii = d_ss.kthvalue(k + 1, dim=1).values  # k+1: the point itself is its own nearest neighbour
    out = []
    for i in range(0, len(queries), chunk):
        out.append((torch.cdist(queries[i:i + chunk], support) <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    return float(_inside(fake, real, k).double().mean()), float(_inside(real, fake, k).double().mean())


def scores(ref: torch.Tensor, other: torch.Tensor) -> dict:
    kid, kid_std = kernel_distance(ref, other)
    precision, recall = precision_recall(ref, other)
    return {"fd": frechet_distance(ref, other), "kid": kid, "kid_std": kid_std, "precision": precision,
            "recall": recall}


def disjoint_halves(n_real: int, n: int, seed: int = 0,
                    labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random index sets of size n from range(n_real): the floor's two real sets. With the reference's
    class ``labels`` both sets are stratified — each class in the proportion it has in the whole set (largest
    remainders, at most half a class per set) — so neither carries the random class imbalance of a plain draw, which
    class-cycled samples do not have."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(n_real, generator=g)
        return perm[:n], perm[n:2 * n]
    classes, counts = labels.unique(return_counts=True)
    share = counts.double() * n / n_real
    take = torch.minimum(share.floor().long(), counts // 2)
    order = torch.argsort(share - take, descending=True, stable=True).tolist()  # largest remainders first
    while take.sum() < n:
        room = [c for c in order if take[c] < counts[c] // 2]
        if not room:
            raise KakusanError(f"two disjoint class-stratified sets of {n} do not fit in {n_real} images")
        for c in room[:n - int(take.sum())]:
            take[c] += 1
    a, b = [], []
    for c, k in zip(classes, take.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        a.append(members[:k])
        b.append(members[k:2 * k])
    return torch.cat(a), torch.cat(b)


def reference_sets(net: nn.Module, real: torch.Tensor, n: int, seed: int = 0, reference: str = "split",
                   real_labels: torch.Tensor | None = None, spread: str = "auto") -> dict:
    """The evaluation features n samples are scored against, and the real-vs-real floor.

    ``reference='split'``: the real images are split at random into two disjoint sets A and B of n images each; the
    samples are compared with B, the floor compares A with B — both at the same sample count, so the floor is exactly
    what a perfect model would score. ``reference='all'``: the samples are compared with every real image (the usual
    practice for FID: the statistics of the whole data set), which lowers the FD's finite-sample bias and lets n
    exceed half the reference; the floor is then A vs B at min(n, len(real) // 2) (its size in ``floor['n']``).
    ``real_labels``: A and B stratified by class (:func:`disjoint_halves`). ``spread``: what the FD's bootstrap
    resamples — 'samples' (the seed-to-seed spread against a fixed reference, as FID's error bars against fixed
    data-set statistics), 'both' (the reference too: the spread then also holds the reference's own finite size), or
    'auto' (both against 'all', samples against the split)."""
    if reference not in ("split", "all"):
        raise KakusanError(f"the reference is 'split' or 'all' (got {reference!r})")
    if spread not in ("auto", "samples", "both"):
        raise KakusanError(f"the spread resamples 'samples', 'both' or 'auto' (got {spread!r})")
    if reference == "split" and len(real) < 2 * n:
        raise KakusanError(f"the floor needs 2 x {n} real images but the reference has {len(real)}; "
                           f"evaluate at most {len(real) // 2} samples, or against the whole reference set")
    m = n if reference == "split" else min(n, len(real) // 2)
    a, b = disjoint_halves(len(real), m, seed, real_labels)
    if reference == "split":
        f_a, _ = extract(net, real[a])
        f_ref = f_b = extract(net, real[b])[0]
    else:
        f_ref, _ = extract(net, real)
        f_a, f_b = f_ref[a], f_ref[b]
    if spread == "auto":
        spread = "both" if reference == "all" else "samples"
    return {"reference": reference, "features": f_ref, "floor": {**scores(f_b, f_a), "n": m}, "spread": spread}


def score_features(ref: dict, fake: torch.Tensor, seed: int = 0, bootstrap: int = 0) -> dict:
    """Scores of sample features against :func:`reference_sets`; ``bootstrap`` > 0 adds ``fd_std``, the FD's
    bootstrap spread over that many resamplings, and ``fd_boot``, the resampled FDs (paired across sample sets of the
    same size and seed, see :func:`fd_bootstrap`; the real images are resampled too if the reference says so)."""
    result = {"n": len(fake), "reference": ref["reference"], **scores(ref["features"], fake), "floor": ref["floor"]}
    result["fd_over_floor"] = result["fd"] / max(result["floor"]["fd"], 1e-12)
    if bootstrap:
        draws = ref.setdefault("draws", {})  # the reference's own bootstrap draws, computed once per (reps, seed)
        if (bootstrap, seed) not in draws:
            draws[bootstrap, seed] = reference_draws(ref["features"], bootstrap, seed, ref["spread"] == "both")
        boot = fd_bootstrap(ref["features"], fake, bootstrap, seed, draws=draws[bootstrap, seed])
        result["fd_std"], result["fd_boot"] = float(boot.std()), boot
    return result


def evaluate(net: nn.Module, samples: torch.Tensor, real: torch.Tensor, labels: torch.Tensor | None = None,
             n: int | None = None, seed: int = 0, bootstrap: int = 0, features: bool = False,
             reference: str = "split", real_labels: torch.Tensor | None = None) -> dict:
    """Score ``samples`` (the first ``n``) against ``real`` images with the real-vs-real floor
    (:func:`reference_sets`, whose sets ``real_labels`` stratify by class; :func:`score_features`), and the class
    accuracy where ``labels`` and the network's logits exist. ``features=True`` adds the samples' evaluation-network features, for scoring them again against
    other reference sets."""
    n = min(n or len(samples), len(samples))
    if n < 10:
        raise KakusanError(f"at least 10 samples are needed (got {n})")
    if samples.shape[1:] != real.shape[1:]:
        raise KakusanError(f"samples are {tuple(samples.shape[1:])} but reference images are {tuple(real.shape[1:])}")
    ref = reference_sets(net, real, n, seed, reference, real_labels)
    f_fake, logits = extract(net, samples[:n])
    result = score_features(ref, f_fake, seed, bootstrap) | ({"features": f_fake} if features else {})
    if labels is not None and logits is not None:
        result["class_acc"] = float((logits.argmax(1) == labels[:n].to(logits.device)).float().mean())
    return result
