"""Frechet distance between Gaussians fitted to two feature sets (FID's formula, in the feature net's space)."""

from __future__ import annotations

import torch


def gaussian_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)  # Sigma = 1/(N-1) sum_i (x_i - mu)(x_i - mu)^T


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (negative round-off -> 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T  # A^1/2 = V diag(sqrt(l)) V^T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Squared 2-Wasserstein distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982)."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    root1 = sqrtm_psd(sigma1)
    # tr (S1 S2)^1/2 = tr (S1^1/2 S2 S1^1/2)^1/2, whose argument is symmetric PSD, so eigvalsh is stable
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    # FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)  (Heusel et al. 2017, eq. 6)
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross)


def frechet_distance_of(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """FD between the Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*gaussian_moments(features1), *gaussian_moments(features2))


def paired_gap_std(features: torch.Tensor, baseline: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor],
                   rounds: int, seed: int = 0) -> float:
    """Paired-bootstrap std of FD(features) - FD(baseline) against fixed `reference` moments: row i of both sets
    shares its noise (same seed), so the same indices are resampled in both."""
    generator = torch.Generator().manual_seed(seed)
    gaps = []
    for _ in range(rounds):
        i = torch.randint(len(features), (len(features),), generator=generator)
        # gap_b = FD(features[i_b]) - FD(baseline[i_b])
        gaps.append(frechet_distance(*gaussian_moments(features[i]), *reference)
                    - frechet_distance(*gaussian_moments(baseline[i]), *reference))
    return float(torch.tensor(gaps).std())
