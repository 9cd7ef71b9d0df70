"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel, averaged
over random subsets, with its standard deviation across them."""

from __future__ import annotations

import torch

SUBSETS_PER_PRODUCT = 5  # subsets whose kernel matrices are formed in one batched product (3 x 40 MB at m = 1000)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / d + 1)^3 for all pairs: [..., m, D], [..., n, D] -> [..., m, n]."""
    return (x @ y.transpose(-1, -2) / x.shape[-1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 between samples x [..., m, D] and y [..., n, D] (Gretton et al. 2012, eq. 3) -> [...]."""
    x, y = x.double(), y.double()
    m, n = x.shape[-2], y.shape[-2]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    # MMD_u^2 = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(n(n-1)) - 2 sum_{i,j} k(x_i,y_j)/(mn)
    within_x = (k_xx.sum((-2, -1)) - k_xx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))
    within_y = (k_yy.sum((-2, -1)) - k_yy.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean((-2, -1))


def kernel_inception_distance(
    features1: torch.Tensor, features2: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """Mean and standard deviation of MMD_u^2 over `subsets` random subsets (without replacement) of each set."""
    size = min(subset_size, len(features1), len(features2))
    generator = torch.Generator().manual_seed(seed)
    index1 = torch.stack([torch.randperm(len(features1), generator=generator)[:size] for _ in range(subsets)])
    index2 = torch.stack([torch.randperm(len(features2), generator=generator)[:size] for _ in range(subsets)])
    values = torch.cat([mmd2_unbiased(features1[index1[i: i + SUBSETS_PER_PRODUCT]],
                                      features2[index2[i: i + SUBSETS_PER_PRODUCT]])
                        for i in range(0, subsets, SUBSETS_PER_PRODUCT)])
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0
