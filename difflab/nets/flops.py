"""What a network costs: its parameters and the floating-point operations of one forward, counted by running it."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def forward_flops(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Floating-point operations (a multiply-add is 2) of net(x, c_noise) on one example of `shape` (batch 1).

    Counted by torch's FlopCounterMode over the matrix products and convolutions the forward runs; attention runs
    its math kernel here, whose two batched products the counter sees (the fused CPU kernel it would not)."""
    parameter = next(net.parameters())
    x = torch.zeros(1, *shape, dtype=parameter.dtype, device=parameter.device)
    c_noise = torch.full((1,), 500.0, device=parameter.device)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, c_noise)
    return counter.get_total_flops()
