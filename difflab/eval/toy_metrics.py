"""Distances between two sets of low-dimensional points (2-D toy data): sliced Wasserstein, energy distance,
per-axis Kolmogorov-Smirnov statistics and a k-NN estimate of the KL divergence."""

from __future__ import annotations

import math

import torch

from difflab.eval.neighbours import distance_blocks, kth_neighbour_distance


def quantiles(values: torch.Tensor, m: int) -> torch.Tensor:
    """The empirical quantile function of `values` [..., n] at the m levels u_i = (i + 1/2) / m."""
    n = values.shape[-1]
    index = ((torch.arange(m, dtype=torch.float64) + 0.5) * n / m).long()  # F^-1(u) = x_(ceil(u n))
    return values.sort(-1).values[..., index]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """SW_1 over `projections` random directions (exact 1-D W_1 between the projections when len(x) == len(y)).

    W_1 rather than W_2: moving a little mass far (a mode drawn a few times more often) costs it linearly, not
    as a square root, so the two-draw floor stays well below the distance of a visibly shifted set.
    """
    x, y = x.double(), y.double()
    theta = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta = theta / theta.norm(dim=0)
    m = max(len(x), len(y))
    # W_1(P_theta, Q_theta) = int_0^1 |F^-1(u) - G^-1(u)| du for the 1-D projections
    w1 = (quantiles((x @ theta).T, m) - quantiles((y @ theta).T, m)).abs().mean(1)
    return float(w1.mean())  # SW_1 = E_theta W_1(P_theta, Q_theta)  (Bonneel et al. 2015)


def mean_distance(x: torch.Tensor, y: torch.Tensor, same: bool = False) -> torch.Tensor:
    """E|X - Y| over all pairs; with same (y is x) over pairs i != j, the U-statistic."""
    total = sum(block.sum() for block in distance_blocks(x, y))
    return total / (len(x) * (len(x) - 1) if same else len(x) * len(y))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance between the distributions of x and y, 0 iff they are equal (Szekely & Rizzo 2013, eq. 2)."""
    x, y = x.double(), y.double()
    # E(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|
    return float(2 * mean_distance(x, y) - mean_distance(x, x, same=True) - mean_distance(y, y, same=True))


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D = sup_t |F_a(t) - F_b(t)| of two 1-D samples."""
    a, b = a.double().sort().values, b.double().sort().values
    t = torch.cat([a, b])
    f_a = torch.searchsorted(a, t, right=True) / len(a)
    f_b = torch.searchsorted(b, t, right=True) / len(b)
    return float((f_a - f_b).abs().max())


def ks_per_axis(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    return [ks_statistic(x[:, i], y[:, i]) for i in range(x.shape[1])]


def knn_kl_divergence(x: torch.Tensor, y: torch.Tensor, k: int = 3) -> float:
    """k-NN estimate of KL(P || Q) from x ~ P [n, d] and y ~ Q [m, d] (Wang, Kulkarni & Verdu 2009, eq. 5)."""
    x, y = x.double(), y.double()
    n, d = x.shape
    tiny = 1e-12  # duplicated points would give a zero distance and an infinite log
    rho = kth_neighbour_distance(x, x, k, exclude_self=True).clamp(min=tiny)  # k-th NN of x_i in x without x_i
    nu = kth_neighbour_distance(x, y, k).clamp(min=tiny)  # k-th NN of x_i in y
    # D(P || Q) ~ d/n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))
    return float(d * (nu / rho).log().mean()) + math.log(len(y) / (n - 1))
