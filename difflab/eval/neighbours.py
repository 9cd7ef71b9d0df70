"""Euclidean distances between two point sets, a block of rows at a time, so 10k x 10k never sits in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from difflab.errors import DifflabError

CHUNK = 1024


def distance_blocks(query: torch.Tensor, support: torch.Tensor, chunk: int = CHUNK) -> Iterator[torch.Tensor]:
    """Blocks of the distance matrix |query_i - support_j|, `chunk` query rows each, in order."""
    for start in range(0, len(query), chunk):
        yield torch.cdist(query[start: start + chunk], support)


def kth_neighbour_distance(query: torch.Tensor, support: torch.Tensor, k: int,
                           exclude_self: bool = False) -> torch.Tensor:
    """Distance from each query point to its k-th nearest support point [len(query)].

    With exclude_self, query is support and each point's zero distance to itself is skipped.
    """
    rank = k + 1 if exclude_self else k
    if rank > len(support):
        raise DifflabError(f"--k {k}: the {k}-th nearest neighbour needs more than {len(support)} points; "
                           "lower --k or evaluate more samples")
    # topk of a few smallest is several times faster than kthvalue on rows of 10k distances
    blocks = distance_blocks(query, support)
    return torch.cat([block.topk(rank, dim=1, largest=False).values[:, -1] for block in blocks])
