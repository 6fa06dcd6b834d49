"""Exact denoisers of Gaussian-mixture data, D(x; sigma) = E[x0 | x0 + sigma n = x], for testing samplers and for
the 2-D guidance toy.

For p(x0) = sum_k w_k N(mu_k, S_k), the noisy marginal is p_sigma(x) = sum_k w_k N(x; mu_k, S_k + sigma^2 I) and
    E[x0 | x] = sum_k r_k(x) [mu_k + S_k (S_k + sigma^2 I)^-1 (x - mu_k)],   r_k(x) ∝ w_k N(x; mu_k, S_k + sigma^2 I);
the score is grad log p_sigma(x) = (D(x; sigma) - x) / sigma^2 (Tweedie).
"""
from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, d, d)
        self.dim = self.means.shape[1]

    def _parts(self, x: torch.Tensor, sigma: torch.Tensor):
        x = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)  # scalar or per-sample
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = self.covs[None] + sigma**2 * eye  # (B or 1, K, d, d)
        diff = x[:, None, :] - self.means[None]  # (B, K, d)
        sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)  # (S + s^2 I)^-1 (x - mu)
        logdet = torch.linalg.slogdet(cov)[1]
        log_r = self.weights.log()[None] - 0.5 * ((diff * sol).sum(-1) + logdet + self.dim * math.log(2 * math.pi))
        return diff, sol, log_r

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_sigma(x)."""
        return torch.logsumexp(self._parts(x, sigma)[2], dim=1)

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        return torch.softmax(self._parts(x, sigma)[2], dim=1)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x; sigma) = E[x0 | x], same dtype as x."""
        diff, sol, log_r = self._parts(x, sigma)
        r = torch.softmax(log_r, dim=1)  # (B, K)
        post_mean = self.means[None] + (self.covs[None] @ sol.unsqueeze(-1)).squeeze(-1)  # (B, K, d)
        return (r.unsqueeze(-1) * post_mean).sum(1).to(x.dtype)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        return (self.denoise(x, sigma).double() - x.double()) / sigma**2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[k] + (chol[k] @ z.unsqueeze(-1)).squeeze(-1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def cov(self) -> torch.Tensor:
        m = self.mean
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)
