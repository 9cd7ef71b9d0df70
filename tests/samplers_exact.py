"""Exact denoisers for sampler tests: data whose noisy marginals p(x; sigma) are known in closed form."""

from __future__ import annotations

import math

import torch


def _levels(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class GaussianDenoiser:
    """x0 ~ N(mu, cov) on the last dimension (cov [d, d]); D(x, sigma) = mu + cov (cov + sigma^2 I)^-1 (x - mu).

    A scalar cov means iid coordinates N(mu, cov) of any shape. `calls` counts evaluations.
    """

    def __init__(self, mu, cov):
        self.mu, self.cov = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
        if self.cov.ndim == 2:
            self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.cov)  # cov = Q diag(lambda) Q^T
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        mu, cov = self.mu.to(x.dtype), self.cov.to(x.dtype)
        if cov.ndim == 0:
            return mu + cov / (cov + _levels(sigma, x) ** 2) * (x - mu)
        q, lam = self.eigenvectors.to(x.dtype), self.eigenvalues.to(x.dtype)
        gain = lam / (lam + _levels(sigma, x) ** 2)  # [B, d] in the eigenbasis
        return mu + (((x - mu) @ q) * gain) @ q.T

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, len(self.cov), generator=generator, dtype=torch.float64)
        return self.mu + z @ torch.linalg.cholesky(self.cov).T

    def pf_ode_endpoint(self, x_T: torch.Tensor, sigma_max: float, sigma: float = 0.0) -> torch.Tensor:
        """The probability-flow ODE from sigma_max to sigma (scalar cov s^2):
        mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2)."""
        s2 = float(self.cov)
        return self.mu + (x_T - self.mu) * math.sqrt(s2 + sigma**2) / math.sqrt(s2 + sigma_max**2)


class MixtureDenoiser:
    """x0 ~ sum_k w_k N(mu_k, s_k^2 I) in 2-D; D = sum_k r_k(x) [mu_k + s_k^2/(s_k^2+sigma^2) (x - mu_k)]."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)  # [K, d]
        self.stds = torch.as_tensor(stds, dtype=torch.float64)  # [K]
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        var = self.stds.to(x.dtype) ** 2 + sigma.to(x.dtype).view(-1, 1) ** 2  # [B, K]
        diff = x[:, None, :] - self.means.to(x.dtype)  # [B, K, d]
        d = x.shape[1]
        log_p = self.weights.log().to(x.dtype) - 0.5 * (diff**2).sum(-1) / var - 0.5 * d * var.log()
        r = torch.softmax(log_p, dim=1)  # posterior responsibility of each component
        gain = (self.stds.to(x.dtype) ** 2 / var)[..., None]
        return (r[..., None] * (self.means.to(x.dtype) + gain * diff)).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.weights @ self.means
        d = self.means.shape[1]
        second = sum(w * (torch.outer(m, m) + s**2 * torch.eye(d, dtype=torch.float64))
                     for w, m, s in zip(self.weights, self.means, self.stds))
        return mean, second - torch.outer(mean, mean)
