"""Exact denoisers of Gaussian-mixture data, D(x; sigma) = E[x0 | x0 + sigma n = x], for testing samplers and for
the 2-D guidance toy.

For p(x0) = sum_k w_k N(mu_k, S_k), the noisy marginal is p_sigma(x) = sum_k w_k N(x; mu_k, S_k + sigma^2 I) and
    E[x0 | x] = sum_k r_k(x) [mu_k + S_k (S_k + sigma^2 I)^-1 (x - mu_k)],   r_k(x) ∝ w_k N(x; mu_k, S_k + sigma^2 I);
the score is grad log p_sigma(x) = (D(x; sigma) - x) / sigma^2 (Tweedie). With S_k = U_k diag(l_k) U_k^T the inverse
is diagonal in each component's eigenbasis, so thousands of components stay cheap.
"""
from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, weights, means, covs):
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, d, d)
        self.dim = self.means.shape[1]
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)  # S_k = U diag(l) U^T
        self.eigvals = self.eigvals.clamp(min=0)

    def _parts(self, x: torch.Tensor, sigma):
        """Per dimension i, (B, K) tensors: y_i = [U_k^T (x - mu_k)]_i, v_i = l_ki + sigma^2, and
        log_r = log(w_k N(x; mu_k, S_k + sigma^2 I)). Loops over the few dimensions keep every op a flat (B, K) one."""
        dt = x.dtype if x.is_floating_point() else torch.float64
        s2 = torch.as_tensor(sigma, dtype=dt).reshape(-1, 1) ** 2  # scalar or per-sample
        U, l, mu = self.eigvecs.to(dt), self.eigvals.to(dt), self.means.to(dt)
        d = range(self.dim)
        diff = [x[:, None, j].to(dt) - mu[None, :, j] for j in d]
        y = [sum(U[None, :, j, i] * diff[j] for j in d) for i in d]
        v = [l[None, :, i] + s2 for i in d]
        quad = sum(y[i] ** 2 / v[i] for i in d)
        logdet = sum(v[i].log() for i in d)
        log_r = self.weights.to(dt).log()[None] - 0.5 * (quad + logdet + self.dim * math.log(2 * math.pi))
        return y, v, log_r

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_sigma(x), shape (B,)."""
        return torch.logsumexp(self._parts(x, sigma)[2], dim=1)

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """r_k(x) = posterior probability of component k, shape (B, K)."""
        return torch.softmax(self._parts(x, sigma)[2], dim=1)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x; sigma) = E[x0 | x] = sum_k r_k [mu_k + U_k diag(l_k / (l_k + sigma^2)) U_k^T (x - mu_k)]."""
        y, v, log_r = self._parts(x, sigma)
        r = torch.softmax(log_r, dim=1)
        dt = r.dtype
        U, l, mu = self.eigvecs.to(dt), self.eigvals.to(dt), self.means.to(dt)
        d = range(self.dim)
        shrunk = [l[None, :, i] / v[i] * y[i] * r for i in d]  # r_k diag(l / v) y, per eigen-direction
        out = [r @ mu[:, j] + sum((U[None, :, j, i] * shrunk[i]).sum(1) for i in d) for j in d]
        return torch.stack(out, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad_x log p_sigma(x) = (D - x) / sigma^2."""
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        return (self.denoise(x, sigma) - x) / s**2

    def sample(self, n: int, generator: torch.Generator | None = None, sigma: float = 0.0,
               components: bool = False):
        """n draws of x0 (or of x0 + sigma n); with ``components`` also the component index of each draw."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.eigvecs[k], self.eigvals[k].sqrt() * z)
        if sigma:
            x = x + sigma * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (x, k) if components else x

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def cov(self) -> torch.Tensor:
        d = self.means - self.mean
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)
