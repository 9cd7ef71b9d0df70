"""Improved precision and recall (Kynkaanniemi et al. 2019): how much of each set lies on the other's manifold,
the manifold being the union of balls reaching each point's k-th nearest neighbour."""

from __future__ import annotations

import torch

from difflab.eval.neighbours import distance_blocks, kth_neighbour_distance


def manifold_share(query: torch.Tensor, support: torch.Tensor, k: int) -> float:
    """Share of query points inside the k-NN manifold of support (Kynkaanniemi et al. 2019, eq. 1-2)."""
    query, support = query.float(), support.float()
    radii = kth_neighbour_distance(support, support, k, exclude_self=True)
    # f(phi, Phi) = 1 if |phi - phi'| <= |phi' - NN_k(phi')| for some phi' in Phi
    inside = torch.cat([(block <= radii).any(1) for block in distance_blocks(query, support)])
    return float(inside.float().mean())


def precision_recall(real: torch.Tensor, generated: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """precision = mean_g f(g, real) (eq. 3), recall = mean_r f(r, generated) (eq. 4)."""
    return manifold_share(generated, real, k), manifold_share(real, generated, k)
